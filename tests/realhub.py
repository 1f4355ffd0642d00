"""A real JupyterHub in a subprocess, with InProcessProxy, for end-to-end tests.

``RealHub`` writes a generated ``jupyterhub_config.py`` into a scratch
directory, starts ``jupyterhub -f`` from this venv in its own process group on
free 127.0.0.1 ports, and at the end kills everything it started: the Hub,
the single-user servers it spawned (which run in sessions of their own, so
killing the Hub's group does not reach them), their kernels and terminals,
and Hub-managed services.

Strategy for the clean-up: every process of the run is found in two ways,
because either alone can miss some. (1) Descendants of the Hub, walked
through ``/proc/<pid>/stat`` just before the Hub is asked to stop; a process
whose parent died is reparented and would be lost to this walk. (2) A marker
variable, ``REALHUB_MARKER=<random>``, set in the Hub's environment and in
``Spawner.environment`` (the Spawner builds a fresh environment, so it is not
inherited there), found by scanning ``/proc/<pid>/environ``; it reaches
single-user servers and what they start, even if orphaned, and is added to
the ``environment`` of every Hub-managed service after a test's own config.

Nothing here imports ``inprocess_proxy``: the Hub loads it by its entry point
name, as a user's configuration would.
"""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

__all__ = ["RealHub", "free_port", "wait_for"]

#: seconds the Hub gets to start and answer through the proxy; a cold start
#: (importing JupyterHub, creating the sqlite db) takes 2-5 s here
HUB_START_TIMEOUT = 60
#: seconds the Hub gets to stop its servers after SIGTERM (it stops each
#: spawner, which waits up to Spawner.term_timeout, 5 s by default, per server)
HUB_STOP_TIMEOUT = 30
#: seconds a single-user server gets to start (JupyterLab imports take 3-8 s)
SERVER_START_TIMEOUT = 120

MARKER_VAR = "REALHUB_MARKER"


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago.

    The Hub is a separate process and needs a number in its config, so the
    port is chosen here and released; another process could take it in
    between, which on a test machine is rare enough.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout, interval=0.25, what="condition"):
    """Call ``predicate()`` until it returns something true; return that.

    Polling is the only way to watch another process's state here (the Hub's
    REST API has no long-poll for these); ``timeout`` bounds it.

    Raises:
        TimeoutError: naming ``what``, when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout} s")
        time.sleep(interval)


def _read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None  # gone, or not ours to read


def _parent_and_start(pid):
    """(parent pid, start time in clock ticks) of ``pid``, or None if it is gone."""
    stat = _read_proc(pid, "stat")
    if stat is None:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def _all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root_pid):
    """{pid: start time} of every live descendant of ``root_pid``."""
    children = {}
    starts = {}
    for pid in _all_pids():
        info = _parent_and_start(pid)
        if info is not None:
            children.setdefault(info[0], []).append(pid)
            starts[pid] = info[1]
    found = {}
    todo = list(children.get(root_pid, ()))
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in found:
            found[pid] = starts[pid]
            todo.extend(children.get(pid, ()))
    return found


def _marked(marker):
    """{pid: start time} of live processes whose environment holds ``marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = {}
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        environ = _read_proc(pid, "environ")
        if environ and needle in environ.split(b"\0"):
            info = _parent_and_start(pid)
            if info is not None:
                found[pid] = info[1]
    return found


def _kill_all(processes):
    """SIGKILL each ``{pid: start time}`` still alive as the same process (not a reused pid)."""
    killed = []
    for pid, start in processes.items():
        info = _parent_and_start(pid)
        if info is None or info[1] != start:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass  # exited between the check and the kill
    return killed


class RealHub:
    """One JupyterHub process with InProcessProxy and generated configuration.

    Args:
        directory: scratch directory for the config, the sqlite db, the cookie
            secret, the Hub's log and the users' home directories
            (``home/<name>``).
        config: extra configuration lines appended to the generated base, for
            what one test needs (e.g. services, intervals).

    The base configuration: InProcessProxy on ``self.url``, the Hub's API on
    another free port, SharedPasswordAuthenticator with ``self.password`` (any
    user name), SimpleLocalProcessSpawner running this venv's
    ``jupyterhub-singleuser`` with JupyterLab as default URL, and an admin
    service whose token (``self.token``) the test uses for the REST API.
    """

    def __init__(self, directory, *, config=""):
        self.directory = Path(directory)
        self.port = free_port()
        self.hub_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.token = secrets.token_hex(32)
        self.marker = secrets.token_hex(8)
        self.extra_config = config
        self.log_path = self.directory / "jupyterhub.log"
        self.config_path = self.directory / "jupyterhub_config.py"
        self.process = None
        self._log_file = None
        #: processes started under an earlier Hub run (``stop_hub_only``), for ``stop()``
        self._earlier = {}

    @property
    def marker_env(self):
        """Environment entries that let ``stop()`` find a process this run started."""
        return {MARKER_VAR: self.marker}

    def _tail_config(self):
        """Marks the managed services a test's config added (see the module docstring)."""
        return textwrap.dedent(
            f"""\
            # generated by tests/realhub.py, after the test's own config
            for _service in c.JupyterHub.services:
                if "command" in _service:
                    _service["environment"] = {{**_service.get("environment", {{}}), **{self.marker_env!r}}}
            """
        )

    def home(self, username):
        """A user's home directory (the single-user server's root directory)."""
        return self.directory / "home" / username

    def _base_config(self):
        singleuser = os.path.join(sys.prefix, "bin", "jupyterhub-singleuser")
        args = [
            # no outbound fetches from JupyterLab during tests (news feed, update check)
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        return textwrap.dedent(
            f"""\
            # generated by tests/realhub.py
            c = get_config()  # noqa: F821

            c.JupyterHub.proxy_class = "inprocess"
            c.JupyterHub.bind_url = {self.url + "/"!r}
            c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
            c.JupyterHub.db_url = {"sqlite:///" + str(self.directory / "jupyterhub.sqlite")!r}
            c.JupyterHub.cookie_secret_file = {str(self.directory / "jupyterhub_cookie_secret")!r}
            c.JupyterHub.pid_file = {str(self.directory / "jupyterhub.pid")!r}
            c.JupyterHub.log_level = "DEBUG"
            # Never wait for a spawn inside the request that asked for it: the
            # browser always gets the spawn-pending page with its progress
            # stream, and POST /users/<name>/server answers 202 at once instead
            # of after up to 10 s, so several spawns run together.
            c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}

            c.JupyterHub.authenticator_class = "shared-password"
            c.SharedPasswordAuthenticator.user_password = {self.password!r}
            c.Authenticator.allow_all = True

            c.JupyterHub.spawner_class = "simple"
            c.SimpleLocalProcessSpawner.home_dir_template = {str(self.directory / "home" / "{username}")!r}
            c.Spawner.cmd = [{singleuser!r}]
            c.Spawner.args = {args!r}
            c.Spawner.default_url = "/lab"
            c.Spawner.start_timeout = {SERVER_START_TIMEOUT}
            c.Spawner.http_timeout = {SERVER_START_TIMEOUT}
            c.Spawner.environment = {self.marker_env!r}

            c.JupyterHub.services = [{{"name": "realhub-admin", "api_token": {self.token!r}}}]
            c.JupyterHub.load_roles = [
                {{
                    "name": "realhub-admin",
                    "scopes": ["admin:users", "admin:servers", "access:servers", "proxy"],
                    "services": ["realhub-admin"],
                }}
            ]
            """
        )

    def start(self):
        """Start the Hub; return once its API answers through the proxy.

        Raises:
            RuntimeError: with the log's tail, if the Hub exits or does not
                answer within HUB_START_TIMEOUT.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join([self._base_config(), textwrap.dedent(self.extra_config), self._tail_config()])
        )
        env = dict(os.environ, **self.marker_env)
        # the venv's scripts first, whatever PATH the test runner had
        env["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + env.get("PATH", "")
        # appended to: a Hub started again after stop_hub_only() logs after its first run
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [os.path.join(sys.prefix, "bin", "jupyterhub"), "-f", str(self.config_path)],
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterHub exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return requests.get(self.url + "/hub/api/", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        try:
            wait_for(answers, timeout=HUB_START_TIMEOUT, what="JupyterHub answering through InProcessProxy")
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{self.log_tail()}") from None
        return self

    def api(self, method, path, **kwargs):
        """A Hub REST API request (``path`` after ``/hub/api``) with the admin token, through the proxy."""
        kwargs.setdefault("timeout", 30)
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, **kwargs)

    def server_state(self, username):
        """The user's default server model from the REST API, or None if it is not running."""
        response = self.api("GET", f"/users/{username}")
        response.raise_for_status()
        return response.json()["servers"].get("")

    def start_servers(self, *usernames, wait=True, timeout=SERVER_START_TIMEOUT):
        """Create the users if needed and start their default servers together.

        Args:
            wait: wait until every server is ready (the REST API says so).
        """
        for username in usernames:
            if self.api("GET", f"/users/{username}").status_code == 404:
                self.api("POST", f"/users/{username}").raise_for_status()
            response = self.api("POST", f"/users/{username}/server")
            if response.status_code not in (201, 202):
                raise RuntimeError(f"starting {username}'s server: {response.status_code} {response.text}")
        if not wait:
            return
        for username in usernames:
            wait_for(
                lambda username=username: (self.server_state(username) or {}).get("ready"),
                timeout=timeout,
                what=f"{username}'s server ready",
            )

    def log_tail(self, lines=60):
        """The last lines of the Hub's log (with its spawned servers' output)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no JupyterHub log)"
        return "\n".join(text.splitlines()[-lines:])

    @contextlib.contextmanager
    def log_shown_on_failure(self, lines=80):
        """Print the tail of the Hub's log if the block raises (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            print(f"JupyterHub log (tail):\n{self.log_tail(lines)}")
            raise

    def stop_hub_only(self):
        """SIGTERM the Hub process alone and wait for it to exit; ``start()`` may follow.

        What the Hub leaves running by its configuration (its servers with
        ``cleanup_servers = False``, the proxy it started with ``cleanup_proxy
        = False``) keeps running; ``stop()`` still kills it in the end.

        Returns:
            The Hub's exit status.
        """
        process, self.process = self.process, None
        self._earlier.update(_descendants(process.pid))
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(HUB_STOP_TIMEOUT)
        self._log_file.close()
        return returncode

    def stop(self):
        """Stop the Hub and kill whatever of this run is still alive; idempotent.

        Returns:
            The pids that had to be killed after the Hub's own shutdown.
        """
        process, self.process = self.process, None
        if process is None:
            return _kill_all({**self._earlier, **_marked(self.marker)})
        started = {**self._earlier, **_descendants(process.pid)}
        if process.poll() is None:
            # the Hub stops its servers on SIGTERM (JupyterHub.cleanup_servers)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(HUB_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass  # killed below with everything else
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is already empty
        process.wait(10)
        started.update(_marked(self.marker))
        killed = _kill_all(started)
        self._log_file.close()
        return killed

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
