"""A blind TCP byte relay in plain Python: the floor any Python proxy can reach on this machine.

    python tests/benchmarks/byte_relay.py --http-target 127.0.0.1:8001 --ws-target 127.0.0.1:8002

It is not a proxy: it parses no HTTP and routes nothing. It shows what copying
bytes between two sockets costs in Python with nothing else: a proxy hop's CPU
is largely the kernel's loopback TCP work (recv and send on two sockets), the
same for every proxy, and this relay adds to it only the least a Python
program can, one recv and one send per chunk on a ``select.epoll`` loop (not
asyncio, whose own cost would raise the floor). ``bench_http.py`` runs it as
the ``relay`` candidate: where even this is about as fast as CHP, the test is
bound by the kernel and the load generators, not by the proxy's Python.

It listens on two ports of 127.0.0.1: connections to the first are relayed to
``--http-target`` (nginx), to the second to ``--ws-target`` (the websocket
echo server), so the websocket handshake and frames pass through untouched.
Once listening it prints one JSON line to stdout,
``{"pid": ..., "http_port": ..., "ws_port": ...}``, then relays until SIGTERM
or SIGINT.

Flow control: while a socket has not taken all the bytes sent to it, the relay
stops reading the socket they came from, so it never holds more than one recv
(256 KiB) per direction.
"""

import argparse
import json
import os
import select
import signal
import socket
import sys

RECV_BYTES = 256 * 1024
# Backends are on loopback: a connect that takes longer than this has failed.
CONNECT_TIMEOUT_SECONDS = 2


class Side:
    """One socket of a relayed pair, the bytes it has not taken yet, and its epoll mask."""

    def __init__(self, sock):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.peer = None
        self.unsent = b""
        self.mask = select.EPOLLIN


class Relay:
    """The epoll loop: listening sockets with their backend, and every relayed socket by fd."""

    def __init__(self, targets):
        self.epoll = select.epoll()
        self.listeners = {}  # fd: (listening socket, backend address)
        self.sides = {}  # fd: Side
        self.ports = []
        for target in targets:
            listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
            listener.setblocking(False)
            self.listeners[listener.fileno()] = (listener, target)
            self.epoll.register(listener.fileno(), select.EPOLLIN)
            self.ports.append(listener.getsockname()[1])

    def run(self):
        """Relay until a signal ends the process; a connection's error closes that pair only."""
        while True:
            for fd, events in self.epoll.poll():
                if fd in self.listeners:
                    self.accept(*self.listeners[fd])
                elif fd in self.sides:
                    side = self.sides[fd]
                    try:
                        self.handle(side, events)
                    except OSError:
                        # Reset, refused or broken pipe: clients drop connections after each load run.
                        self.close(side)

    def accept(self, listener, target):
        """Accept every pending connection and pair each with a new connection to target."""
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                # EAGAIN once the backlog is empty; anything else (a client gone before
                # accept, no file descriptors left) waits for the next readiness event.
                return
            backend = None
            try:
                backend = socket.create_connection(target, timeout=CONNECT_TIMEOUT_SECONDS)
                client_side, backend_side = Side(client), Side(backend)
            except OSError:
                # The backend refused, or the client was reset before it was set up.
                client.close()
                if backend is not None:
                    backend.close()
                continue
            client_side.peer, backend_side.peer = backend_side, client_side
            for side in (client_side, backend_side):
                self.sides[side.sock.fileno()] = side
                self.epoll.register(side.sock.fileno(), side.mask)

    def handle(self, side, events):
        """Error or hang-up (a reset) closes the pair; otherwise drain what is pending, then read."""
        if events & (select.EPOLLERR | select.EPOLLHUP):
            self.close(side)
            return
        if events & select.EPOLLOUT:
            self.flush(side)
        if events & select.EPOLLIN:
            self.forward(side)

    def forward(self, side):
        """Pass what side's socket has to its peer; keep what the peer does not take yet."""
        try:
            data = side.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        if not data:
            self.close(side)
            return
        peer = side.peer
        try:
            sent = peer.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            peer.unsent = memoryview(data)[sent:]
            self.update_masks(side)

    def flush(self, side):
        """Send side what it has not taken yet; once all is gone, read its peer again."""
        sent = side.sock.send(side.unsent)
        side.unsent = side.unsent[sent:]
        if not side.unsent:
            self.update_masks(side)

    def update_masks(self, side):
        """Read a socket only while its peer has taken everything; watch for room while it has not."""
        for each in (side, side.peer):
            mask = (0 if each.peer.unsent else select.EPOLLIN) | (select.EPOLLOUT if each.unsent else 0)
            if mask != each.mask:
                self.epoll.modify(each.sock.fileno(), mask)
                each.mask = mask

    def close(self, side):
        """Close both sockets of side's pair and forget them."""
        for each in (side, side.peer):
            fd = each.sock.fileno()
            if self.sides.pop(fd, None) is not None:
                self.epoll.unregister(fd)
                each.sock.close()


def parse_address(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-target", type=parse_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--ws-target", type=parse_address, required=True, metavar="HOST:PORT")
    return parser.parse_args()


def main():
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: sys.exit(0))
    relay = Relay([args.http_target, args.ws_target])
    http_port, ws_port = relay.ports
    print(json.dumps({"pid": os.getpid(), "http_port": http_port, "ws_port": ws_port}), flush=True)
    relay.run()


if __name__ == "__main__":
    main()
