"""A real Hub driving the standalone command: users stay connected while the Hub restarts.

JupyterHub's "running the proxy separately" set-up, with ``inprocess-proxy``
as the proxy: ``c.ConfigurableHTTPProxy.should_start = False``,
``c.JupyterHub.cleanup_servers = False``, an ``auth_token`` and ``api_url``,
and the command run as its own process with JupyterHub's documented flags.
One user's server runs (``jupyterhub-singleuser``, see ``realhub.py``) with a
kernel websocket open and a large download in progress while the Hub is
stopped and started again.

Then the other set-up: the Hub starts the command itself, with
``cleanup_proxy = False``. JupyterHub 6.1.1 does not adopt a proxy that
outlived it: its next start finds the pid file, stops that proxy (SIGTERM,
then a second one a second later, then SIGKILL) and starts a new one, which
it fills from its database. The test checks that the proxy keeps serving
while the Hub is down, stops cleanly at the first SIGTERM, and that the new
one serves the same routes.

Waits on another process (its log, its REST API) poll with a bound; traffic
threads pace their requests so that they span the restart.
"""

import hashlib
import json
import os
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from websockets.sync.client import connect as ws_connect

from realhub import RealHub
from support.ports import free_port
from support.processes import wait_until
from standalone_process import TOKEN, ProxyProcess, hub_started_command

USER = "alice"
#: the download: big enough to stay in progress across the restart at DOWNLOAD_PACE
DOWNLOAD_SIZE = 64 * 1024 * 1024
DOWNLOAD_CHUNK = 1024 * 1024
#: seconds between two chunks of the download (64 chunks: about 13 s)
DOWNLOAD_PACE = 0.2
#: seconds between two page loads, and between two kernel round trips
PAGE_PACE = 0.2
KERNEL_PACE = 0.3
#: seconds the Hub stays down
DOWN_FOR = 2.0
#: seconds one kernel round trip may take
KERNEL_WAIT = 30
TEST_TIMEOUT = 300


def _hub_config(api_port, extra=""):
    return f"""
c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.auth_token = {TOKEN!r}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.JupyterHub.cleanup_servers = False
# no other last_activity listing/check_routes than the one at start
c.JupyterHub.last_activity_interval = 3600
{extra}
"""


def _proxy_routes(api_port):
    """The proxy's routes, from its REST API."""
    response = requests.get(
        f"http://127.0.0.1:{api_port}/api/routes", headers={"Authorization": f"token {TOKEN}"}, timeout=10
    )
    response.raise_for_status()
    return {key: {k: v for k, v in route.items() if k != "last_activity"} for key, route in response.json().items()}


def _hub_routes(hub):
    """The routes as the Hub sees them through ConfigurableHTTPProxy (GET /hub/api/proxy)."""
    response = hub.api("GET", "/proxy")
    response.raise_for_status()
    return {spec: (route["target"], route["data"].get("user")) for spec, route in response.json().items()}


class Traffic:
    """A user's traffic during the restart: page loads, kernel round trips, one download."""

    def __init__(self, hub, download_path, expected_sha256):
        self.hub = hub
        self.base = f"{hub.public_url}/user/{USER}"
        self.headers = {"Authorization": f"token {hub.token}"}
        self.download_path = download_path
        self.expected_sha256 = expected_sha256
        self.stop = threading.Event()
        #: (time, status or exception text) of each page load
        self.pages = []
        #: (time, ok or exception text) of each kernel round trip
        self.kernel = []
        self.download = None
        self.threads = []

    def start(self, kernel_id):
        for target, args in ((self._load_pages, ()), (self._kernel_round_trips, (kernel_id,)), (self._download, ())):
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self, timeout=120):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread} did not end"

    def _load_pages(self):
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    status = session.get(f"{self.base}/api/status", headers=self.headers, timeout=10).status_code
                except requests.RequestException as e:
                    status = f"{type(e).__name__}: {e}"
                self.pages.append((time.monotonic(), status))
                self.stop.wait(PAGE_PACE)

    def _kernel_round_trips(self, kernel_id):
        url = self.base.replace("http://", "ws://", 1) + f"/api/kernels/{kernel_id}/channels"
        try:
            with ws_connect(url, additional_headers=self.headers, open_timeout=30) as ws:
                while not self.stop.is_set():
                    self.kernel.append((time.monotonic(), _kernel_info(ws)))
                    self.stop.wait(KERNEL_PACE)
        except Exception as e:  # recorded: the test asserts every round trip succeeded
            self.kernel.append((time.monotonic(), f"{type(e).__name__}: {e}"))

    def _download(self):
        digest = hashlib.sha256()
        size = 0
        try:
            with requests.get(
                f"{self.base}/files/{self.download_path}", headers=self.headers, stream=True, timeout=30
            ) as response:
                response.raise_for_status()
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    time.sleep(DOWNLOAD_PACE)  # a slow client, so the download spans the restart
            self.download = (time.monotonic(), size, digest.hexdigest())
        except Exception as e:
            self.download = (time.monotonic(), size, f"{type(e).__name__}: {e}")


def _kernel_info(ws):
    """One kernel_info_request on the shell channel; True when its reply came back."""
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "kernel_info_request",
                    "username": USER,
                    "session": "restart-test",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {},
                "channel": "shell",
            }
        )
    )
    deadline = time.monotonic() + KERNEL_WAIT
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=KERNEL_WAIT))
        if message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"] == "kernel_info_reply":
            return True
    return "no kernel_info_reply"


def _write_download(hub):
    home = hub.home(USER)
    home.mkdir(parents=True, exist_ok=True)
    data = os.urandom(DOWNLOAD_SIZE)
    (home / "big.bin").write_bytes(data)
    return "big.bin", hashlib.sha256(data).hexdigest()


@pytest.fixture
def separate_proxy(tmp_path):
    """The Hub of JupyterHub's "running the proxy separately" docs, and the command as its proxy."""
    api_port = free_port()
    hub = RealHub(tmp_path / "hub", config=_hub_config(api_port, "c.ConfigurableHTTPProxy.should_start = False"))
    args = [
        f"--ip=127.0.0.1", f"--port={urlsplit(hub.public_url).port}", "--api-ip=127.0.0.1", f"--api-port={api_port}",
        f"--default-target={hub.hub_url}",
        f"--error-target={hub.hub_url}/hub/error",
    ]  # fmt: skip
    proxy = ProxyProcess(tmp_path / "proxy", args, listen=False)
    proxy.api_address = ("127.0.0.1", api_port)
    with proxy:
        try:
            yield hub, proxy, api_port
        finally:
            hub.stop()


@pytest.mark.timeout(TEST_TIMEOUT)
def test_hub_restart_keeps_users_connected(separate_proxy):
    hub, proxy, api_port = separate_proxy
    download_path, sha256 = _write_download(hub)
    hub.start()
    with hub.log_shown_on_failure():
        hub.start_servers(USER)
        kernel = requests.post(
            f"{hub.public_url}/user/{USER}/api/kernels", headers={"Authorization": f"token {hub.token}"}, json={}, timeout=60
        )
        assert kernel.status_code == 201, kernel.text
        routes_before = _proxy_routes(api_port)
        assert f"/user/{USER}" in routes_before, routes_before

        traffic = Traffic(hub, download_path, sha256)
        traffic.start(kernel.json()["id"])
        wait_until(lambda: traffic.kernel and traffic.pages, timeout=60, what="first page load and kernel round trip")

        assert hub.stop_hub_only() == 0
        down_from = time.monotonic()
        time.sleep(DOWN_FOR)  # the Hub stays down a while; the traffic threads keep going
        hub.start()
        up_at = time.monotonic()
        wait_until(lambda: traffic.download is not None, timeout=120, what="the download to end")
        traffic.finish()

        failed_pages = [(t, s) for t, s in traffic.pages if s != 200]
        assert not failed_pages, failed_pages
        assert any(down_from < t < up_at for t, _ in traffic.pages), "no page load while the Hub was down"
        failed_kernel = [(t, ok) for t, ok in traffic.kernel if ok is not True]
        assert not failed_kernel, failed_kernel
        assert any(down_from < t < up_at for t, _ in traffic.kernel), "no kernel round trip while the Hub was down"
        ended_at, size, digest = traffic.download
        assert (size, digest) == (DOWNLOAD_SIZE, sha256)
        assert ended_at > up_at, "the download ended before the Hub was back; make it slower"

        # the Hub found its routes in the proxy and changed nothing
        assert _proxy_routes(api_port) == routes_before
        hub_view = _hub_routes(hub)
        assert hub_view == {
            "/": (hub.hub_url, None),
            f"/user/{USER}/": (routes_before[f"/user/{USER}"]["target"], USER),
        }
        assert proxy.process.poll() is None


@pytest.mark.timeout(TEST_TIMEOUT)
def test_hub_started_proxy_outlives_the_hub_and_is_replaced_cleanly(tmp_path):
    """``cleanup_proxy = False``: the proxy serves while the Hub is down; the next Hub stops it and starts its own."""
    api_port = free_port()
    pid_file = tmp_path / "proxy.pid"
    extra = f"""
c.ConfigurableHTTPProxy.command = {hub_started_command()!r}
c.ConfigurableHTTPProxy.pid_file = {str(pid_file)!r}
c.JupyterHub.cleanup_proxy = False
"""
    hub = RealHub(tmp_path / "hub", config=_hub_config(api_port, extra))
    try:
        hub.start()
        with hub.log_shown_on_failure():
            hub.start_servers(USER)
            first = int(pid_file.read_text())
            status = f"{hub.public_url}/user/{USER}/api/status"
            headers = {"Authorization": f"token {hub.token}"}
            assert requests.get(status, headers=headers, timeout=10).status_code == 200

            assert hub.stop_hub_only() == 0
            assert _alive(first), "the proxy stopped with the Hub"
            assert requests.get(status, headers=headers, timeout=10).status_code == 200

            hub.start()
            second = int(pid_file.read_text())
            assert second != first and _alive(second)
            wait_until(lambda: not _alive(first), timeout=10, what="the first proxy to exit")
            # the Hub stopped it (its log), at the first SIGTERM: the proxy, whose
            # stderr goes to the Hub's log, saw no second one
            log = hub.log_path.read_text(errors="replace")
            assert f"Stopped proxy at pid={first}" in log
            assert "SIGTERM: stopping" in log and "SIGTERM during the drain" not in log
            assert requests.get(status, headers=headers, timeout=10).status_code == 200
            assert f"/user/{USER}" in _proxy_routes(api_port)
    finally:
        hub.stop()


def _alive(pid):
    """Whether ``pid`` runs (a zombie counts as gone: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
