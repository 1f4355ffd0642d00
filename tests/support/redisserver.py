"""A real redis-server for the route store tests: free loopback port, data in a temp dir.

``RedisServer`` runs Debian's ``redis-server`` (``support.debian`` installs it
when missing and root) bound to 127.0.0.1 on a port picked at the first start,
with no persistence unless asked, as a ``ChildProcess`` (its own session,
killed with the thread that started it). A test that stops or restarts Redis
gets a server of its own; ``start()`` after ``stop()`` keeps the port, so
clients can reconnect.
"""

import os
import socket
import subprocess

from .ports import free_port
from .processes import ChildProcess, wait_until

__all__ = ["REDIS_SERVER", "RedisServer"]

REDIS_SERVER = "/usr/bin/redis-server"
#: seconds redis-server gets to say "Ready to accept connections" (it takes
#: 10-30 ms here; loading a saved table takes longer)
START_TIMEOUT = 15
#: seconds it gets to exit after SHUTDOWN (it saves first if asked)
STOP_TIMEOUT = 15
#: how often its log is read while it starts: another process, its log is the only signal
START_POLL = 0.01


class RedisServer:
    """One redis-server process; ``url`` is where clients find it.

    Args:
        executable: the redis-server binary.
        directory: its working directory (logs, a saved table).
        password: ``requirepass``; the URL does not carry it.
        tls: a ``support.tls.TLSFiles``: serve TLS only (``rediss://``, the
            CA in the URL), no client certificates asked for.
    """

    def __init__(self, executable, directory, *, password=None, tls=None):
        self.executable = executable
        self.directory = str(directory)
        self.password = password
        self.tls = tls
        self.port = None
        self.process = None
        self.starts = 0

    @property
    def url(self):
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

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
        """Start it (on the port it had, after the first start); returns once it accepts commands."""
        if self.port is None:
            self.port = free_port()
        self.starts += 1
        log_path = os.path.join(self.directory, f"redis-{self.starts}.log")
        self.process = ChildProcess(self.argv(), name="redis-server", log_path=log_path, cwd=self.directory)
        wait_until(
            lambda: "Ready to accept connections" in self.process.log_tail(),
            timeout=START_TIMEOUT, what=f"redis-server on 127.0.0.1:{self.port}",
            process=self.process, interval=START_POLL,
        )
        return self

    def stop(self, *, save=False):
        """``SHUTDOWN SAVE`` (the table survives a restart) or ``SHUTDOWN NOSAVE``; killed if it lingers."""
        if self.process is None:
            return
        try:
            self._command("SHUTDOWN", "SAVE" if save else "NOSAVE")
            self.process.popen.wait(STOP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            pass  # not answering, or still there: stop() below ends it
        self.process.stop(STOP_TIMEOUT)
        self.process = None

    def kill(self):
        """SIGKILL it (a crash: connections reset, nothing saved)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.popen.wait()
        self.process = None

    def restart(self, *, save=False):
        """Stop and start it on the same port; with ``save`` the table survives."""
        self.stop(save=save)
        return self.start()

    def _command(self, *args):
        """Send one command on a plain socket; returns the first bytes of the reply (no TLS)."""
        if self.tls:
            raise OSError("no plain-socket commands to a TLS-only server")
        commands = [[b"AUTH", self.password.encode()]] if self.password else []
        commands.append([a.encode() for a in args])
        payload = b"".join(
            b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in command)
            for command in commands
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(payload)
            return sock.recv(4096)
