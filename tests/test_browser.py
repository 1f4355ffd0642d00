"""A person's session in a real browser, through a real Hub with InProcessProxy,
and once more through the standalone inprocess-proxy command the Hub starts.

Headless Chromium (Debian's, driven by Playwright) logs in, watches the spawn
progress stream, runs a notebook cell (kernel websocket), types in a terminal
(terminal websocket), uploads 100 MB through JupyterLab's file browser,
stops the server from the Hub's home page and opens a bookmarked notebook URL,
which goes through the spawn flow again and lands on that notebook.

Every step saves a screenshot into a folder the test prints (shown by
``pytest -s``, in the junit output, and on failure).

Chromium comes from Debian's ``chromium`` package: the ``chromium`` fixture
installs it with apt-get when it is missing and the test runs as root, and
fails with the command to run otherwise. Playwright's own browser download
(``playwright install``) is not used.
"""

import contextlib
import itertools
import json
import os

import pytest
from playwright.sync_api import expect, sync_playwright

from realhub import RealHub
from standalone_process import hub_started_command
from support.debian import PackageMissing, debian_executable
from support.ports import free_port
from support.processes import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: seconds for the test function itself: its steps take 1-2 minutes here
TEST_TIMEOUT = 8 * 60

USER = "alice"
#: JupyterLab's name for the first new notebook (renaming is switched off, see LAB_SETTINGS)
NOTEBOOK_NAME = "Untitled.ipynb"
UPLOAD_NAME = "upload-100MB.bin"
UPLOAD_SIZE = 100 * 1024 * 1024

#: JupyterLab user settings, written into the user's home before the first spawn:
#: no rename dialog on first save (while it renames, jupyter_server answers the
#: file browser's directory listing 404, "No such file or directory:
#: Untitled.ipynb", and JupyterLab puts up a modal "Directory not found"), and
#: no toast asking whether to fetch Jupyter news (it would cover the page),
#: and the terminal's screen-reader mode, which mirrors its rows as DOM text
#: (xterm.js otherwise draws them on a canvas, which a test cannot read).
LAB_SETTINGS = {
    "@jupyterlab/terminal-extension/plugin": {"screenReaderMode": True},
    "@jupyterlab/docmanager-extension/plugin": {"renameUntitledFileOnSave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}

#: Playwright waits, in milliseconds
UI_TIMEOUT = 30_000
#: a spawn: the Hub starts jupyterhub-singleuser, which imports JupyterLab (5-15 s)
SPAWN_TIMEOUT = 120_000
#: 100 chunks of 1 MiB, each base64 in a JSON PUT through the proxy (15-40 s here)
UPLOAD_TIMEOUT = 240_000

#: Records each spawn progress event into sessionStorage, which survives the
#: redirects from the Hub's spawn-pending page into JupyterLab (same origin),
#: so the test can check the whole stream after it has landed. Added before
#: the page's own handler, so it sees the last event before the page reloads.
RECORD_PROGRESS_EVENTS = """
(() => {
  const Native = window.EventSource;
  if (!Native) return;
  function Recording(url, options) {
    const source = new Native(url, options);
    if (String(url).includes("/progress")) {
      source.addEventListener("message", (event) => {
        const events = JSON.parse(sessionStorage.getItem("progress-events") || "[]");
        events.push(JSON.parse(event.data));
        sessionStorage.setItem("progress-events", JSON.stringify(events));
      });
    }
    return source;
  }
  Recording.prototype = Native.prototype;
  window.EventSource = Recording;
})();
"""


@pytest.fixture(scope="session")
def chromium():
    """Path of Debian's Chromium, installed with apt-get if missing (as root only)."""
    try:
        return debian_executable(CHROMIUM, "chromium")
    except PackageMissing as e:
        pytest.fail(str(e))


def proxy_config(proxy):
    """The Hub's proxy: InProcessProxy (RealHub's default), or JupyterHub's
    ConfigurableHTTPProxy starting the standalone inprocess-proxy command."""
    if proxy == "inprocess":
        return ""
    return f"""
c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = {hub_started_command()!r}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
"""


@pytest.fixture(params=["inprocess", "standalone"])
def hub(request, tmp_path):
    """A real Hub (its spawn handler always shows the spawn-pending page), with LAB_SETTINGS for USER."""
    hub = RealHub(tmp_path / "hub", config=proxy_config(request.param))
    settings_dir = hub.home(USER) / ".jupyter" / "lab" / "user-settings"
    for plugin, settings in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    hub.start()
    yield hub
    hub.stop()
    (hub.home(USER) / UPLOAD_NAME).unlink(missing_ok=True)


@pytest.fixture
def page(chromium, hub):
    """A page in headless Chromium with a fresh profile, recording spawn progress events."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(hub.directory / "chromium-profile"),  # a fresh user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.add_init_script(RECORD_PROGRESS_EVENTS)
        yield context.pages[0] if context.pages else context.new_page()
        context.close()


@pytest.fixture
def shot(page, tmp_path_factory):
    """``shot(name)`` saves a numbered screenshot of the page into a new folder, printed here."""
    folder = tmp_path_factory.mktemp("browser-screenshots")
    print(f"\nscreenshots: {folder}")
    numbers = itertools.count(1)

    def save(name):
        page.screenshot(path=str(folder / f"{next(numbers):02d}-{name}.png"))

    save.folder = folder
    return save


@contextlib.contextmanager
def evidence_on_failure(hub, shot):
    """On failure: a last screenshot, the screenshot folder and the Hub's log tail."""
    with hub.log_shown_on_failure():
        try:
            yield
        except BaseException:
            try:
                shot("failure")
            except Exception:
                pass  # the page may be gone; the original error matters more
            print(f"screenshots: {shot.folder}")
            raise


@pytest.fixture
def upload_file(tmp_path):
    """A 100 MiB file of random bytes (incompressible, so every byte crosses the proxy)."""
    path = tmp_path / UPLOAD_NAME
    with open(path, "wb") as f:
        for _ in range(UPLOAD_SIZE // (1 << 20)):
            f.write(os.urandom(1 << 20))
    yield path
    # pytest keeps the last three runs' temp dirs: don't keep 200 MB in each
    path.unlink()


def progress_events(page):
    """The spawn progress events recorded in this tab since the last clear."""
    return json.loads(page.evaluate("sessionStorage.getItem('progress-events') || '[]'"))


def watch_spawn(page, shot, name):
    """On the spawn-pending page: see progress events arrive, then the redirect away.

    Returns the recorded events, checked to be a stream that ended in ``ready``.
    """
    page.wait_for_url("**/hub/spawn-pending/**", timeout=UI_TIMEOUT)
    # the event log sits in a closed <details>: attached, not visible
    page.wait_for_selector("#progress-log .progress-log-event", state="attached", timeout=SPAWN_TIMEOUT)
    shot(name)
    page.wait_for_url(lambda url: "/hub/" not in url, timeout=SPAWN_TIMEOUT)
    events = progress_events(page)
    assert len(events) >= 2, f"expected progress events before 'ready', got {events}"
    assert not events[0].get("ready") and events[0]["progress"] < 100, events
    assert events[-1].get("ready") is True, events
    assert "Server ready" in events[-1]["message"], events
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    return events


def wait_for_lab(page):
    """Wait until JupyterLab has rendered its shell (file browser listing included)."""
    page.wait_for_selector("#jp-main-dock-panel", timeout=SPAWN_TIMEOUT)
    page.wait_for_selector(".jp-DirListing-content", timeout=SPAWN_TIMEOUT)


def current_tab(page):
    """The selected tab of JupyterLab's main area."""
    return page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")


def saved_outputs(path):
    """The text of every output saved in the notebook file at ``path`` ("" if unreadable)."""
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return ""  # not written yet, or caught mid-write
    return "".join("".join(o.get("text", "")) for cell in cells for o in cell.get("outputs", ()))


def open_launcher_card(page, selector):
    """Open a new Launcher tab and click one of its cards."""
    page.locator('[data-command="launcher:create"]').first.click()
    page.locator(f".jp-Launcher {selector}").last.click()


@pytest.mark.timeout(TEST_TIMEOUT, func_only=True)
def test_jupyterlab_session_through_inprocess_proxy(hub, page, shot, upload_file):
    with evidence_on_failure(hub, shot):
        # 1. log in
        page.goto(hub.public_url + "/hub/login", timeout=UI_TIMEOUT)
        page.fill("#username_input", USER)
        page.fill("#password_input", hub.password)
        shot("login")
        page.click("#login_submit")

        # 2. the spawn progress page streams events to the end, then redirects
        watch_spawn(page, shot, "spawn-progress")

        # 3. JupyterLab: a new notebook runs a cell (kernel websocket)
        page.wait_for_url(f"**/user/{USER}/lab**", timeout=UI_TIMEOUT)
        wait_for_lab(page)
        shot("jupyterlab")
        open_launcher_card(page, '.jp-LauncherCard[data-category="Notebook"]')
        notebook = page.locator(".jp-NotebookPanel:visible")
        # a cell run before the kernel's websocket is connected is silently
        # not executed; "Idle" in the status bar means connected and idle
        expect(page.locator("#jp-main-statusbar")).to_contain_text(
            "Python 3 (ipykernel) | Idle", timeout=SPAWN_TIMEOUT
        )
        notebook.locator(".jp-Cell .cm-content").first.click(timeout=UI_TIMEOUT)
        page.keyboard.type("print(6*7)")
        page.keyboard.press("Shift+Enter")
        expect(notebook.locator(".jp-OutputArea-output").first).to_have_text("42", timeout=UI_TIMEOUT)
        expect(current_tab(page)).to_contain_text(NOTEBOOK_NAME)
        page.keyboard.press("Control+s")
        wait_until(
            lambda: "42" in saved_outputs(hub.home(USER) / NOTEBOOK_NAME),
            timeout=UI_TIMEOUT / 1000,
            what=f"{NOTEBOOK_NAME} saved with its output",
        )
        shot("notebook-42")

        # 4. a terminal runs a command (terminal websocket)
        open_launcher_card(page, '.jp-LauncherCard[title="Start a new terminal session"]')
        terminal = page.locator(".jp-Terminal:visible")
        terminal.locator(".xterm-screen").click(timeout=UI_TIMEOUT)
        page.keyboard.type("echo hello-$((40+2))")
        page.keyboard.press("Enter")
        expect(terminal.locator(".xterm-accessibility-tree")).to_contain_text("hello-42", timeout=UI_TIMEOUT)
        shot("terminal-hello-42")

        # 5. upload 100 MiB through the file browser (chunked PUTs)
        with page.expect_file_chooser(timeout=UI_TIMEOUT) as chooser:
            page.locator('.jp-FileBrowser [data-jp-item-name="uploader"] jp-button').click()
        chooser.value.set_files(str(upload_file))
        # JupyterLab asks before uploading a file over 15 MB
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Large file size", timeout=UI_TIMEOUT)
        dialog.locator("button.jp-mod-accept").click()
        uploaded = hub.home(USER) / UPLOAD_NAME
        wait_until(
            lambda: uploaded.exists() and uploaded.stat().st_size == UPLOAD_SIZE,
            timeout=UPLOAD_TIMEOUT / 1000,
            interval=1,
            what=f"{UPLOAD_NAME} fully written on the server",
        )
        page.locator('[data-command="filebrowser:refresh"]').first.click()
        expect(page.locator(".jp-DirListing-item", has_text=UPLOAD_NAME)).to_be_visible(timeout=UI_TIMEOUT)
        assert uploaded.read_bytes() == upload_file.read_bytes(), "uploaded bytes differ"
        shot("upload-100MB-listed")

        # 6. stop the server from the Hub's home page
        page.goto(hub.public_url + "/hub/home", timeout=UI_TIMEOUT)
        page.click("#stop")
        expect(page.locator("#stop")).to_be_hidden(timeout=SPAWN_TIMEOUT)
        expect(page.locator("#start")).to_contain_text("Start My Server", timeout=UI_TIMEOUT)
        wait_until(lambda: hub.server_state(USER) is None, timeout=60, what="server stopped")
        shot("server-stopped")

        # 7. a bookmarked notebook URL: not-running page, spawn, back on the notebook
        page.evaluate("sessionStorage.removeItem('progress-events')")
        bookmark = f"{hub.public_url}/user/{USER}/lab/tree/{NOTEBOOK_NAME}"
        page.goto(bookmark, timeout=UI_TIMEOUT)
        expect(page.locator("#start")).to_contain_text("Launch Server", timeout=UI_TIMEOUT)
        shot("bookmark-server-not-running")
        page.click("#start")
        watch_spawn(page, shot, "bookmark-spawn-progress")
        page.wait_for_url(f"**/user/{USER}/lab/tree/{NOTEBOOK_NAME}", timeout=UI_TIMEOUT)
        wait_for_lab(page)
        expect(current_tab(page)).to_contain_text(NOTEBOOK_NAME, timeout=SPAWN_TIMEOUT)
        notebook = page.locator(".jp-NotebookPanel:visible")
        # the saved output came back with the notebook, and a new kernel is connected
        expect(notebook.locator(".jp-OutputArea-output").first).to_have_text("42", timeout=UI_TIMEOUT)
        expect(page.locator("#jp-main-statusbar")).to_contain_text(
            "Python 3 (ipykernel) | Idle", timeout=SPAWN_TIMEOUT
        )
        shot("bookmark-notebook")
