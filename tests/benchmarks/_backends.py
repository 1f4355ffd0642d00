"""The backends every candidate forwards to: nginx for HTTP, a node ``ws`` echo server for websockets.

nginx runs with one worker from a generated config in the run's temp dir, so
nothing outside it is written (the binary is the only root-owned path used).
It serves ``/small`` (100 B) and ``/large`` (1 MiB), and the same files under
``/bench/`` for the Hub test, whose ``extra_routes`` keep that prefix.
"""

import os
import shutil
from dataclasses import dataclass

import _tests_on_path  # noqa: F401
from support.ports import free_port, http_status, port_accepts
from support.processes import wait_until

SMALL_BODY_BYTES = 100
LARGE_BODY_BYTES = 1024 * 1024
STARTUP_TIMEOUT_SECONDS = 15

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # Keep benchmark connections open for the whole run, as perf.md's backend did.
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path {root}/nginx-tmp/body;
    proxy_temp_path {root}/nginx-tmp/proxy;
    fastcgi_temp_path {root}/nginx-tmp/fastcgi;
    uwsgi_temp_path {root}/nginx-tmp/uwsgi;
    scgi_temp_path {root}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location /bench/ {{ alias {root}/www/; }}
    }}
}}
"""


@dataclass
class Backends:
    """Where the backends listen."""

    http_port: int
    ws_port: int

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_target(self):
        """The websocket backend as a proxy target (http scheme, as the Hub writes targets)."""
        return f"http://127.0.0.1:{self.ws_port}"


def find_nginx():
    """The nginx binary: on PATH, or Debian's /usr/sbin/nginx, which is not on every PATH."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise FileNotFoundError("nginx not found: run tests/benchmarks/setup.sh")
    return found


def _write_nginx_site(root, port):
    www = os.path.join(root, "www")
    os.makedirs(www, exist_ok=True)
    os.makedirs(os.path.join(root, "nginx-tmp"), exist_ok=True)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"s" * SMALL_BODY_BYTES)
    with open(os.path.join(www, "large"), "wb") as f:
        f.write(os.urandom(LARGE_BODY_BYTES))
    conf_path = os.path.join(root, "nginx.conf")
    with open(conf_path, "w") as f:
        f.write(NGINX_CONF.format(root=root, port=port))
    # Run as root, nginx's worker drops to an unprivileged user that must be
    # able to read the files; mkdtemp makes the directory 0700.
    for path in (root, www):
        os.chmod(path, 0o755)
    return conf_path


def start_nginx(procs, root):
    """Start nginx (one worker) serving /small and /large; returns its port."""
    port = free_port()
    conf_path = _write_nginx_site(root, port)
    argv = [find_nginx(), "-p", root, "-c", conf_path, "-e", os.path.join(root, "nginx-error.log")]
    proc = procs.start("nginx", argv)
    small_url = f"http://127.0.0.1:{port}/small"
    wait_until(
        lambda: http_status(small_url) == 200, timeout=STARTUP_TIMEOUT_SECONDS, what="nginx /small", process=proc
    )
    return port


def start_ws_echo(procs, node_modules):
    """Start the node ws echo server; returns its port."""
    port = free_port()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ws_echo_server.js")
    env = dict(os.environ, NODE_PATH=node_modules)
    proc = procs.start("ws-echo", ["node", script, str(port)], env=env)
    wait_until(lambda: port_accepts(port), timeout=STARTUP_TIMEOUT_SECONDS, what="ws echo server", process=proc)
    return port


def start_backends(procs, root, node_modules):
    return Backends(http_port=start_nginx(procs, root), ws_port=start_ws_echo(procs, node_modules))
