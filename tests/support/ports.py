"""Free TCP ports on 127.0.0.1, and probes of what answers on a port.

A free port is for a process that needs a number in its configuration (a
Hub, CHP, nginx) or for a target nothing listens on. In-process servers bind
port 0 and keep the socket instead (``tornado.testing.bind_unused_port``),
which leaves no gap in which another process could take the port.
"""

import contextlib
import socket
import urllib.error
import urllib.request


def free_ports(count):
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago (the OS picks them).

    Nothing listens on them: each was bound and released, so a connection to
    one is refused until something binds it. The sockets are held open
    together: closing one before binding the next lets the OS hand out the
    same port twice, which happened.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port():
    """One TCP port on 127.0.0.1 that was free a moment ago; see ``free_ports``."""
    return free_ports(1)[0]


def port_accepts(port):
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url, timeout=2.0):
    """The status code of a GET to url, or None if no HTTP answer came."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None
