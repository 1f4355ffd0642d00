"""The standalone command, ``python -m inprocess_proxy``, as a child process of a test.

``ProxyProcess`` starts it from this checkout (``PYTHONPATH`` is the
repository root, so the package under test is this one, not whatever is
installed) with ``CONFIGPROXY_AUTH_TOKEN`` set, on free 127.0.0.1 ports, in a
process group of its own, its log (stderr) in a file; it is ready when it
logs its REST API address. ``stop()`` signals it and waits; ``kill()`` (also
at the end of a ``with`` block) makes sure nothing outlives the test.

``api()`` speaks to the REST API with ``http.client`` (blocking: the API never
calls back into the test's event loop, so a test on that loop may call it).
"""

import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from support.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "inprocess_proxy"]
#: seconds the process gets to log that its API listens (imports take ~0.3 s)
START_TIMEOUT = 30
#: seconds it gets to exit after SIGTERM: its drain takes up to stop_timeout (5 s)
STOP_TIMEOUT = 15
TOKEN = "standalone-test-token"
READY_LINE = "Proxy API at "
#: numbers the log files of one test session
_runs = itertools.count()


def hub_started_command():
    """``c.ConfigurableHTTPProxy.command`` for this checkout's inprocess-proxy (``env`` execs, keeping the pid)."""
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "inprocess_proxy"]


def child_env(token=TOKEN, **extra):
    """The child's environment: ours, this checkout first on PYTHONPATH, the token."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("CONFIGPROXY_AUTH_TOKEN", None)
    if token is not None:
        env["CONFIGPROXY_AUTH_TOKEN"] = token
    return env


def run_command(args, *, timeout=START_TIMEOUT, token=TOKEN):
    """Run the command to its end (for command lines that must exit); returns CompletedProcess."""
    return subprocess.run(
        [*COMMAND, *args],
        env=child_env(token),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ProxyProcess:
    """One ``inprocess-proxy`` process.

    Args:
        directory: where its log (and any pid file a test asks for) go.
        args: command-line flags beyond where it listens.
        listen: False to give no ``--ip/--port/--api-ip/--api-port`` (the
            test's ``args`` say where it listens, and sets ``api_address``
            for a unix socket).
        token: CONFIGPROXY_AUTH_TOKEN, or None to leave it unset.
    """

    def __init__(self, directory, args=(), *, listen=True, token=TOKEN, env=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.args = list(args)
        if listen:
            # port 0: the child binds free ports (no race with other tests) and logs them
            self.args = ["--ip", "127.0.0.1", "--port", "0", "--api-ip", "127.0.0.1", "--api-port", "0", *self.args]
        self.env = child_env(token, **(env or {}))
        self.log_path = self.directory / f"inprocess-proxy-{next(_runs)}.log"
        self.process = None
        #: the public and API ports, read from the log once it started
        self.port = self.api_port = None
        #: the REST API's address: (host, port), or a unix socket path
        self.api_address = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid

    def start(self):
        """Start it; return once it logs that its API listens.

        Raises:
            RuntimeError: with its log, if it exits or is not ready in time.
        """
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*COMMAND, *self.args],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"inprocess-proxy exited with {self.process.returncode}:\n{self.log()}")
            return READY_LINE in self.log()

        try:
            wait_until(ready, timeout=START_TIMEOUT, interval=0.05, what="inprocess-proxy's REST API")
        except TimeoutError as e:
            self.kill()
            raise RuntimeError(f"{e}\n{self.log()}") from None
        log = self.log()
        public = re.search(r"Proxying https?://[^ ]*:(\d+) to ", log)
        api = re.search(r"Proxy API at https?://([^ ]*):(\d+)/api/routes", log)
        if public:
            self.port = int(public.group(1))
        if api and self.api_address is None:
            self.api_port = int(api.group(2))
            self.api_address = ("127.0.0.1", self.api_port)
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def api(self, method, path="", body=None, *, token=None, headers=None, raw_body=None):
        """One REST API request (``path`` after ``/api/routes``); returns ``(status, headers, body)``.

        ``body`` is sent as JSON, ``raw_body`` as given; the token is the
        process's unless ``token`` says otherwise ("" sends none).
        """
        token = self.token if token is None else token
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"token {token}"
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        connection = _connection(self.api_address)
        try:
            connection.request(method, "/api/routes" + path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def routes(self):
        """``GET /api/routes`` as a dict."""
        status, _, body = self.api("GET")
        assert status == 200, (status, body)
        return json.loads(body)

    def stop(self, signum=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send ``signum`` and wait for the exit; returns the exit status."""
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self):
        """Make sure the process (and its group) is gone; idempotent."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited already
        self.process.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.kill()


def _connection(address):
    if isinstance(address, str):
        return _UnixHTTPConnection(address)
    return http.client.HTTPConnection(*address, timeout=10)


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)

