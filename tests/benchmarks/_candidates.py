"""The things measured: a direct connection, CHP 5.3.0, a blind Python byte relay, InProcessProxy
and the standalone inprocess-proxy command.

Each ``start_*`` function starts one candidate in front of the backends and
returns a ``Candidate``: where to send HTTP and websocket load, and which
process is the proxy (for CPU and RSS). Every candidate routes ``/`` to nginx
and ``/ws/`` to the websocket echo server, as a Hub would; the relay (the
floor for a proxy in Python, see byte_relay.py) has a port for each instead.
CHP and the standalone command are started alike: ``--default-target`` for
``/`` and ``/ws`` added through their REST API.
"""

import json
import os
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field

import _tests_on_path  # noqa: F401
from support.ports import free_ports, http_status, port_accepts
from support.procfs import rss_kib
from support.processes import StartupError, wait_until

STARTUP_TIMEOUT_SECONDS = 30
WS_PATH = "/ws/echo"
HERE = os.path.dirname(os.path.abspath(__file__))
#: the checkout the standalone command is run from (first on its PYTHONPATH)
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


@dataclass
class Candidate:
    """One thing under test, already running."""

    name: str
    http_url: str
    ws_url: str
    # The proxy's process (CPU and RSS are read from it); None for the direct connection.
    pid: int | None = None
    # The process as ChildProcesses started it, to check it is still alive.
    proc: object = None
    # RSS at start-up in KiB: "rss_after_start" (routes added, no traffic yet), and for
    # InProcessProxy "rss_before_start" (every import done, proxy not started; see inprocess_runner.py).
    memory_kib: dict = field(default_factory=dict)

    def is_alive(self):
        return self.proc is None or self.proc.poll() is None

    def exit_message(self):
        return f"{self.name} exited (code {self.proc.returncode}); see {self.proc.log_path}"


def start_direct(procs, backends, node_modules):
    """No proxy: load goes straight to nginx and to the echo server."""
    return Candidate(
        name="direct",
        http_url=backends.http_url,
        ws_url=f"ws://127.0.0.1:{backends.ws_port}{WS_PATH}",
    )


def chp_command(node_modules):
    """argv prefix that runs CHP's entry point with node (so the pid is node's, not a shell's)."""
    entry = os.path.join(node_modules, "configurable-http-proxy", "bin", "configurable-http-proxy")
    if not os.path.exists(entry):
        raise StartupError(f"{entry} not found: run tests/benchmarks/setup.sh")
    return ["node", entry]


def _add_chp_route(api_port, token, routespec, target):
    """Add a route through CHP's REST API, as JupyterHub does."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/api/routes{routespec}",
        data=json.dumps({"target": target}).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status != 201:
            raise StartupError(f"CHP refused route {routespec}: HTTP {response.status}")


def standalone_command():
    """argv prefix that runs this checkout's inprocess-proxy command (the pid is Python's)."""
    return [sys.executable, "-m", "inprocess_proxy"]


def _start_chp_like(procs, backends, name, command, env=None):
    """A CHP-compatible command with nginx as its default target and /ws added through its REST API."""
    port, api_port = free_ports(2)
    token = uuid.uuid4().hex
    argv = command + [
        "--ip", "127.0.0.1", "--port", str(port),
        "--api-ip", "127.0.0.1", "--api-port", str(api_port),
        "--default-target", backends.http_url,
    ]  # fmt: skip
    proc = procs.start(name, argv, env=dict(env or os.environ, CONFIGPROXY_AUTH_TOKEN=token))
    wait_until(
        lambda: port_accepts(port) and port_accepts(api_port),
        timeout=STARTUP_TIMEOUT_SECONDS,
        what=name,
        process=proc,
    )
    _add_chp_route(api_port, token, "/ws", backends.ws_target)
    return Candidate(
        name=name,
        http_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}{WS_PATH}",
        pid=proc.pid,
        proc=proc,
        memory_kib={"rss_after_start": rss_kib(proc.pid)},
    )


def start_chp(procs, backends, node_modules):
    """CHP with nginx as its default target and /ws added through its API."""
    return _start_chp_like(procs, backends, "chp", chp_command(node_modules))


def start_standalone(procs, backends, node_modules):
    """The inprocess-proxy command, started as CHP is; its RSS is the whole process's, as CHP's."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    return _start_chp_like(procs, backends, "standalone", standalone_command(), env)


def _first_json_line(path):
    """A runner's ready line from its log (it logs to stderr, so stdout has only that line)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("{") and line.endswith("\n"):
                    return json.loads(line)
    except OSError:
        pass
    return None


def _start_python_runner(procs, name, script, args):
    """Start one of this folder's Python scripts and wait for its JSON ready line; returns (proc, ready)."""
    argv = [sys.executable, os.path.join(HERE, script), *args]
    proc = procs.start(name, argv, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wait_until(
        lambda: _first_json_line(proc.log_path), timeout=STARTUP_TIMEOUT_SECONDS, what=script, process=proc
    )
    return proc, _first_json_line(proc.log_path)


def start_relay(procs, backends, node_modules):
    """byte_relay.py: one port relayed blindly to nginx, one to the echo server."""
    targets = [
        "--http-target", f"127.0.0.1:{backends.http_port}",
        "--ws-target", f"127.0.0.1:{backends.ws_port}",
    ]  # fmt: skip
    proc, ready = _start_python_runner(procs, "relay", "byte_relay.py", targets)
    return Candidate(
        name="relay",
        http_url=f"http://127.0.0.1:{ready['http_port']}",
        ws_url=f"ws://127.0.0.1:{ready['ws_port']}{WS_PATH}",
        pid=ready["pid"],
        proc=proc,
        memory_kib={"rss_after_start": rss_kib(ready["pid"])},
    )


def start_inprocess(procs, backends, node_modules):
    """InProcessProxy alone in a Python process (inprocess_runner.py), routes / and /ws/."""
    routes = ["--route", f"/={backends.http_url}", "--route", f"/ws/={backends.ws_target}"]
    proc, ready = _start_python_runner(procs, "inprocess", "inprocess_runner.py", routes)
    http_url = ready["public_url"].rstrip("/")
    wait_until(
        lambda: http_status(f"{http_url}/small") is not None,
        timeout=STARTUP_TIMEOUT_SECONDS,
        what="InProcessProxy",
        process=proc,
    )
    return Candidate(
        name="inprocess",
        http_url=http_url,
        ws_url=http_url.replace("http://", "ws://", 1) + WS_PATH,
        pid=ready["pid"],
        proc=proc,
        memory_kib={
            "rss_before_start": ready["rss_before_start_kib"],
            "rss_after_start": ready["rss_after_start_kib"],
        },
    )


STARTERS = {
    "direct": start_direct,
    "chp": start_chp,
    "relay": start_relay,
    "inprocess": start_inprocess,
    "standalone": start_standalone,
}
