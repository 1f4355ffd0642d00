"""``configurable-http-proxy`` as a replica set: Redis, N ``inprocess-proxy`` replicas, HAProxy.

``tests/test_jupyterhub.py``'s "replicas" runs put a shim first on the child's
``PATH`` that runs ``python -m chp_replica_set <CHP's flags>``, so every
proxy JupyterHub's suite starts (the Hub's ``ConfigurableHTTPProxy``, and
``test_external_proxy``'s own ``Popen``) is a replica set behind one address:

- a redis-server of its own, on a unix socket in a temporary directory (no
  port to race for; each set starts with an empty table, as CHP starts empty);
- ``INPROCESS_PROXY_REPLICAS`` (default 3) replicas, each the command with
  the flags JupyterHub gave, ``--route-store unix://...``, and their own
  loopback ports;
- Debian's HAProxy in TCP mode on the public and API addresses the flags
  name, round robin over the replicas that pass ``GET /_chp_healthz``. So the
  Hub's consecutive REST calls land on different replicas.

It is ready (HAProxy listens) once every replica is healthy and lists
``--default-target``'s route. SIGTERM or SIGINT stops HAProxy, the replicas
and Redis, and exits 0; if any of them dies first it stops the rest and exits
1. Every child gets PR_SET_PDEATHSIG, so a SIGKILL of this process takes them
along. Only TCP addresses without TLS (the suite's default mode); anything
else exits 2.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REDIS_SERVER = "/usr/bin/redis-server"
HAPROXY = "/usr/sbin/haproxy"
REPLICAS = int(os.environ.get("INPROCESS_PROXY_REPLICAS", "3"))
#: seconds for the set to come up, and for each stage of the stop
START_TIMEOUT = 30
STOP_TIMEOUT = 10
#: seconds between looks at the children while they start (other processes: polled)
POLL = 0.02
#: flags this supervisor places itself; the others go to every replica as given
LISTEN_FLAGS = ("--ip", "--port", "--api-ip", "--api-port")
#: what the supervisor waits for
WANTED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
UNSUPPORTED = ("--socket", "--api-socket", "--ssl-key", "--api-ssl-key", "--metrics-socket")

HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch 1
frontend public
    bind {public}
    default_backend public
frontend api
    bind {api}
    default_backend api
backend public
    balance roundrobin
    option httpchk GET /_chp_healthz
    default-server inter 200ms fall 2 rise 1
{public_servers}
backend api
    balance roundrobin
    option httpchk GET /_chp_healthz
    default-server inter 200ms fall 2 rise 1
{api_servers}
"""


def _die_with_me():
    """In each child: killed when this process dies; the signals this one waits for unblocked."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WANTED)


def split_flags(argv):
    """``(listen, rest)``: the listen flags' values by name, and every other argument in order."""
    listen, rest = {}, []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in UNSUPPORTED:
            sys.exit(f"chp_replica_set: {name} is not supported (TCP without TLS only)")
        if name in LISTEN_FLAGS:
            listen[name] = value if eq else next(args)
        else:
            rest.append(arg)
    return listen, rest


def bind_address(ip, port):
    if ip == "localhost":
        ip = "127.0.0.1"
    if ip == "*":
        ip = ""
    return f"{ip}:{port}"


class ReplicaSet:
    def __init__(self, argv):
        listen, self.rest = split_flags(argv)
        port = int(listen.get("--port", 8000))
        api_port = int(listen.get("--api-port", port + 1))
        self.public = bind_address(listen.get("--ip", ""), port)
        self.api = bind_address(listen.get("--api-ip", "localhost"), api_port)
        self.default_target = None
        for i, arg in enumerate(self.rest):
            if arg == "--default-target":
                self.default_target = self.rest[i + 1]
            elif arg.startswith("--default-target="):
                self.default_target = arg.partition("=")[2]
        self.directory = tempfile.mkdtemp(prefix="chp-replica-set-")
        self.children = []  # (name, Popen), started in order, stopped in reverse

    def spawn(self, name, argv, **kwargs):
        log = open(os.path.join(self.directory, f"{name}.log"), "wb")
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_me, **kwargs
        )
        log.close()
        self.children.append((name, process))
        return process

    def log(self, name):
        try:
            with open(os.path.join(self.directory, f"{name}.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait(self, predicate, what):
        deadline = time.monotonic() + START_TIMEOUT
        while not predicate():
            for name, process in self.children:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {START_TIMEOUT} s")
            time.sleep(POLL)

    def start(self):
        socket_path = os.path.join(self.directory, "redis.sock")
        self.spawn(
            "redis",
            [REDIS_SERVER, "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.directory],
        )
        env = dict(os.environ)
        replicas = []
        for i in range(REPLICAS):
            name = f"replica-{i}"
            argv = [sys.executable, "-m", "inprocess_proxy", *self.rest, "--ip", "127.0.0.1", "--port", "0",
                    "--api-ip", "127.0.0.1", "--api-port", "0", "--route-store", f"unix://{socket_path}"]
            self.spawn(name, argv, env=env)
            replicas.append(name)
        ports = {}

        def listening(name):
            log = self.log(name)
            public = re.search(r"Proxying http://[^ ]*:(\d+) to ", log)
            api = re.search(r"Proxy API at http://[^ ]*:(\d+)/api/routes", log)
            if public and api:
                ports[name] = int(public.group(1)), int(api.group(1))
            return name in ports

        for name in replicas:
            self.wait(lambda: listening(name), f"{name} listening")
        for name in replicas:
            self.wait(lambda: self.ready(*ports[name]), f"{name} healthy")
        config = os.path.join(self.directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(
                HAPROXY_CONFIG.format(
                    public=self.public,
                    api=self.api,
                    public_servers="\n".join(f"    server {n} 127.0.0.1:{p} check" for n, (p, _) in ports.items()),
                    api_servers="\n".join(
                        f"    server {n} 127.0.0.1:{a} check port {p}" for n, (p, a) in ports.items()
                    ),
                )
            )
        # a set stopped a moment ago may still hold the addresses (HAProxy binds with SO_REUSEPORT)
        for address in (self.public, self.api):
            self.wait(lambda: not self.accepts(address), f"{address} free")
        self.spawn("haproxy", [HAPROXY, "-db", "-f", config])
        for address in (self.public, self.api):
            self.wait(lambda: self.accepts(address), f"HAProxy on {address}")
        print(
            f"chp_replica_set: {len(replicas)} replicas behind HAProxy on {self.public} (API {self.api}),"
            f" Redis at unix://{socket_path}; logs in {self.directory}",
            file=sys.stderr,
            flush=True,
        )

    def ready(self, port, api_port):
        """Healthy, and serving --default-target's route (stored once the table is loaded)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_chp_healthz", timeout=2) as response:
                if response.status != 200:
                    return False
            if not self.default_target:
                return True
            request = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/api/routes",
                headers={"Authorization": f"token {os.environ.get('CONFIGPROXY_AUTH_TOKEN', '')}"},
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                return "/" in json.load(response)
        except OSError:
            return False

    @staticmethod
    def accepts(address):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    replica_set = ReplicaSet(argv)
    wanted = WANTED
    # handled by sigwait below; blocked before any child starts, unblocked in each child
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    status = 0
    try:
        try:
            replica_set.start()
        except RuntimeError as e:
            print(f"chp_replica_set: cannot start: {e}", file=sys.stderr)
            for name, _ in replica_set.children:
                print(f"--- {name}:\n{replica_set.log(name)[-3000:]}", file=sys.stderr)
            return 1
        while True:
            signum = signal.sigwait(wanted)
            if signum != signal.SIGCHLD:
                break
            dead = [name for name, process in replica_set.children if process.poll() is not None]
            if dead:
                print(f"chp_replica_set: {', '.join(dead)} exited; stopping", file=sys.stderr)
                status = 1
                break
    finally:
        replica_set.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
