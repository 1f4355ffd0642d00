"""A real redis-server for the route store tests: free loopback port, data in a temp dir.

``RedisServer`` runs Debian's ``redis-server`` (the ``redis_server_executable``
fixture installs it when missing and root) bound to 127.0.0.1 on a port picked
at start, with no persistence unless asked, in its own session, killed with
the test process if that dies (``PR_SET_PDEATHSIG``). A test that stops or
restarts Redis gets a server of its own; ``restart()`` keeps the port, so
clients can reconnect.

Nothing here imports ``inprocess_proxy``.
"""

import os
import signal
import socket
import subprocess
import time

from benchmarks._procs import _die_with_parent, free_port

__all__ = ["REDIS_SERVER", "RedisServer"]

REDIS_SERVER = "/usr/bin/redis-server"
#: seconds redis-server gets to say "Ready to accept connections" (it takes
#: 10-30 ms here; loading a saved table takes longer)
START_TIMEOUT = 15
#: seconds it gets to exit after SIGTERM or SHUTDOWN (it saves first if asked)
STOP_TIMEOUT = 15
#: how often a start-up is checked for; redis-server is another process, so
#: its log is the only signal
START_POLL = 0.01


class RedisServer:
    """One redis-server process; ``url`` is where clients find it.

    Args:
        executable: the redis-server binary.
        directory: its working directory (logs, a saved table).
        password: ``requirepass``; the URL does not carry it.
        tls: a ``backends.TLSFiles``: serve TLS only (``rediss://``), no
            client certificates asked for.
    """

    def __init__(self, executable, directory, *, password=None, tls=None):
        self.executable = executable
        self.directory = str(directory)
        self.password = password
        self.tls = tls
        self.port = None
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={self.tls.ca}" if self.tls else ""
        return f"{scheme}://127.0.0.1:{self.port}/0{query}"

    @property
    def log_path(self):
        return os.path.join(self.directory, f"redis-{self.starts}.log")

    def argv(self):
        argv = [self.executable, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.directory]
        if self.tls:
            argv += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.tls.cert, "--tls-key-file", self.tls.key,
                "--tls-ca-cert-file", self.tls.ca, "--tls-auth-clients", "no",
            ]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def start(self):
        """Start it (on the port it had, after the first start) and wait until it accepts commands."""
        if self.port is None:
            self.port = free_port()
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, start_new_session=True, preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with open(self.log_path, errors="replace") as log:
                text = log.read()
            if "Ready to accept connections" in text:
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}:\n{text[-3000:]}")
            time.sleep(START_POLL)

    def stop(self, *, save=False):
        """Stop it: ``SHUTDOWN SAVE`` (the table survives a restart) or ``SHUTDOWN NOSAVE``."""
        if self.proc is None:
            return
        try:
            self._command("SHUTDOWN", "SAVE" if save else "NOSAVE")
        except OSError:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self):
        """SIGKILL it (a crash: connections reset, nothing saved)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self, *, save=False):
        """Stop and start it on the same port; with ``save`` the table survives."""
        self.stop(save=save)
        return self.start()

    def _command(self, *args):
        """Send one command on a plain socket and return the first reply line (no TLS)."""
        if self.tls:
            raise OSError("no plain-socket commands to a TLS-only server")
        parts = ([b"AUTH", self.password.encode()],) if self.password else ()
        payload = b""
        for command in (*parts, [a.encode() for a in args]):
            payload += b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in command)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(payload)
            return sock.recv(4096)
