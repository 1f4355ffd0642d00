"""Helpers for the attack and failure tests: raw ends and resource counts.

Nothing here imports ``inprocess_proxy``; these are the independent ends the
proxy sits between, plus the gauges the tests read before and after.

- ``RecordingBackend``: a raw asyncio server that keeps every byte it receives,
  per connection, and answers each request llhttp finds in them with a fixed
  ``200`` whose body names the backend and the request target. Tests re-parse
  the recorded bytes afterwards with two independent parsers (llhttp through
  httptools, and h11) to prove what was forwarded is unambiguous.
- ``exchange`` / ``parse_responses``: one raw connection to the proxy that
  writes exact bytes and reads until the proxy closes, and a response splitter.
- ``snapshot``: open file descriptors, asyncio tasks, the proxy's client,
  tunnel and upstream-pool counts, and RSS, read the same way before and after.
- ``LoopProblems``: records what reaches the loop's exception handler
  ("Task exception was never retrieved", "Exception in callback ...").
"""

import asyncio
import gc
import socket
import struct

import h11
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, HttpResponseParser

from support.procfs import open_fds, rss_kib

#: seconds any single raw exchange with the proxy may take in these tests
EXCHANGE_TIMEOUT = 5


# --------------------------------------------------------------------------
# Resource gauges
# --------------------------------------------------------------------------


def snapshot(proxy):
    """The gauges compared before and after a fault run (after a full GC)."""
    gc.collect()
    server = proxy.server
    return {
        "fds": open_fds(),
        "tasks": len(asyncio.all_tasks()),
        "clients": len(server.clients),
        "tunnels": len(server.tunnels),
        "pool": len(server.pool),
        "rss_kib": rss_kib(),
    }


def percentile(samples, fraction):
    """The ``fraction`` percentile (0..1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


class LoopProblems:
    """Record what reaches the running loop's exception handler, then restore it.

    Use as ``with LoopProblems() as problems: ...`` inside the test coroutine;
    ``problems.contexts`` holds each context dict the loop reported.
    """

    def __init__(self):
        self.contexts = []
        self._loop = None
        self._previous = None

    def __enter__(self):
        self._loop = asyncio.get_running_loop()
        self._previous = self._loop.get_exception_handler()
        self._loop.set_exception_handler(lambda loop, context: self.contexts.append(context))
        return self

    def __exit__(self, *exc):
        self._loop.set_exception_handler(self._previous)
        return False

    def describe(self):
        return [f"{c.get('message')}: {c.get('exception')!r}" for c in self.contexts]


# --------------------------------------------------------------------------
# Parsing recorded bytes
# --------------------------------------------------------------------------


class _Collect:
    """httptools callbacks collecting whole messages."""

    def __init__(self):
        self.messages = []
        self.begun = 0
        self.url = b""
        self.headers = []
        self.body = []

    def on_message_begin(self):
        self.begun += 1
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        self.messages.append((self.url, self.headers, b"".join(self.body)))


class Reparse:
    """What a fresh parser makes of recorded request bytes.

    Attributes:
        messages: ``(target, headers, body)`` of each complete request.
        error: the parser error, or None.
        partial: a request was begun but not completed when the bytes ended.
        upgraded: the parser stopped at an upgrade or CONNECT.
        after_upgrade: the bytes that followed that request's head.
    """

    def __init__(self, messages, error, partial, upgraded, after_upgrade=b""):
        self.messages = messages
        self.error = error
        self.partial = partial
        self.upgraded = upgraded
        self.after_upgrade = after_upgrade

    @property
    def framing_error(self):
        """A parser error about framing, not h11's Host rule (RFC 9112 3.2)."""
        return self.error is not None and "Host" not in self.error

    def __repr__(self):
        return (
            f"<Reparse {len(self.messages)} messages, error={self.error!r}, partial={self.partial},"
            f" upgraded={self.upgraded}, after_upgrade={self.after_upgrade[:40]!r}>"
        )


def reparse_llhttp(data):
    """Parse request bytes from scratch with llhttp (httptools)."""
    sink = _Collect()
    parser = HttpRequestParser(sink)
    error = None
    upgraded = False
    after = b""
    data = bytes(data)
    try:
        parser.feed_data(data)
    except HttpParserUpgrade as e:
        upgraded = True
        after = data[e.args[0] :]
    except HttpParserError as e:
        error = f"{type(e).__name__}: {e}"
    partial = sink.begun > len(sink.messages) and not upgraded
    return Reparse(sink.messages, error, partial, upgraded, after)


def reparse_h11(data):
    """Parse request bytes from scratch with h11 (a second, independent parser)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(bytes(data))
    messages = []
    target, headers, body = None, None, []
    error = None
    partial = False
    upgraded = False
    after = b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            error = f"RemoteProtocolError: {e}"
            break
        if event is h11.NEED_DATA:
            partial = conn.their_state not in (h11.IDLE, h11.DONE)
            break
        if event is h11.PAUSED:
            if conn.their_state is h11.DONE:
                # pretend the backend answered, to read the next pipelined request
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
                continue
            # an upgrade or CONNECT: what follows is not HTTP
            upgraded = True
            after = conn.trailing_data[0]
            break
        if isinstance(event, h11.Request):
            target, headers, body = event.target, list(event.headers), []
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            messages.append((target, headers, b"".join(body)))
        elif isinstance(event, h11.ConnectionClosed):
            break
    return Reparse(messages, error, partial, upgraded, after)


# --------------------------------------------------------------------------
# Recording backend
# --------------------------------------------------------------------------


class _BackendConnection(asyncio.Protocol):
    """One connection to a RecordingBackend: record, parse with llhttp, answer 200."""

    def __init__(self, backend):
        self.backend = backend
        self.transport = None
        self.raw = bytearray()
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.method = b""
        self.done = False

    def connection_made(self, transport):
        self.transport = transport
        if self.backend.record:
            self.backend.connections.append(self)
        self.backend.accepted += 1
        self.backend.open.add(self)

    def connection_lost(self, exc):
        self.backend.open.discard(self)
        self.backend.lost.set()

    def data_received(self, data):
        if self.backend.record:
            self.raw += data
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            # an upgrade or CONNECT this backend will not perform: it answers
            # the request (already completed below) and closes
            self.done = True
            self.transport.close()
        except HttpParserError as e:
            self.backend.errors.append(repr(e))
            self.done = True
            self.transport.close()

    # llhttp callbacks
    def on_message_begin(self):
        self.url = b""

    def on_url(self, url):
        self.url += url

    def on_headers_complete(self):
        self.method = self.parser.get_method()
        if self.parser.should_upgrade():
            # llhttp stops after this head; answer it now
            self._answer()

    def on_message_complete(self):
        if not self.parser.should_upgrade():
            self._answer()

    def _answer(self):
        backend = self.backend
        if backend.record:
            backend.requests.append((backend.name, self.method, self.url))
        backend.answered += 1
        body = b"%s %s %s" % (backend.name.encode(), self.method, self.url)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (backend.name.encode(), len(body), body)
        )


class _RawBackend:
    """A raw asyncio server on 127.0.0.1 whose connections run ``protocol(self)``."""

    protocol = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        loop = asyncio.get_running_loop()
        protocol = type(self).protocol
        self.server = await loop.create_server(lambda: protocol(self), "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self):
        if self.server is not None:
            self.server.close()
        for conn in list(self.open):
            conn.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports run connection_lost


class RecordingBackend(_RawBackend):
    """A raw backend that records every byte and answers each request with 200.

    The response body is ``b"<name> <method> <target>"``, so a client can tell
    which backend answered and what target it saw.

    Args:
        name: this backend's name (in the body and ``X-Backend``).
        record: keep the raw bytes, the connections and the requests
            (turn off for load generators, which must not grow).
    """

    protocol = _BackendConnection

    def __init__(self, name="backend", record=True):
        self.name = name
        self.record = record
        self.connections = []
        self.open = set()
        self.requests = []
        self.errors = []
        self.accepted = 0
        #: requests answered (counted even when not recording)
        self.answered = 0
        self.lost = asyncio.Event()
        self.server = None
        self.port = None


    def raw_by_connection(self):
        return [bytes(c.raw) for c in self.connections]

    def reparse(self, parse=reparse_llhttp):
        """Each connection's recorded bytes parsed from scratch."""
        return [parse(c.raw) for c in self.connections]



# --------------------------------------------------------------------------
# Raw client side
# --------------------------------------------------------------------------


def address_of_proxy(proxy):
    host, _, port = proxy.public_url.split("://", 1)[1].rstrip("/").rpartition(":")
    return host, int(port)


async def exchange(address, data, *, timeout=EXCHANGE_TIMEOUT, shut_write=False):
    """Write ``data`` on a new connection and read until the peer closes.

    Returns ``(bytes received, ended)``: ``ended`` is ``"closed"`` or
    ``"reset"`` (the peer hung up), or ``"timeout"`` when the peer still had
    the connection open after ``timeout`` seconds.
    """
    reader, writer = await asyncio.open_connection(*address)
    received = bytearray()
    ended = "closed"
    try:
        writer.write(data)
        if shut_write:
            writer.write_eof()

        async def read_all():
            while chunk := await reader.read(65536):
                received.extend(chunk)

        try:
            await asyncio.wait_for(read_all(), timeout)
        except asyncio.TimeoutError:
            ended = "timeout"
        except ConnectionResetError:
            ended = "reset"
    finally:
        writer.transport.abort()
    return bytes(received), ended


class ParsedResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        name = name.lower().encode()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def __repr__(self):
        return f"<{self.status} {self.body[:80]!r}>"


class _ResponseCollect(_Collect):
    def __init__(self):
        super().__init__()
        self.parser = None

    def on_message_complete(self):
        self.messages.append(ParsedResponse(self.parser.get_status_code(), self.headers, b"".join(self.body)))


def parse_responses(data):
    """Split bytes a client received into responses (llhttp).

    Returns ``(responses, leftover_error)``: the complete responses, and a
    description of anything after them that is not a complete response.
    """
    sink = _ResponseCollect()
    parser = HttpResponseParser(sink)
    sink.parser = parser
    problem = None
    try:
        parser.feed_data(data)
    except HttpParserUpgrade:
        problem = "upgrade"
    except HttpParserError as e:
        problem = f"{type(e).__name__}: {e}"
    if problem is None and sink.begun > len(sink.messages):
        problem = "incomplete response"
    return sink.messages, problem


async def get(address, target="/", *, host=b"proxy.test", timeout=EXCHANGE_TIMEOUT):
    """One ``GET target`` with ``Connection: close``; returns ``(responses, problem, ended)``."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    data, ended = await exchange(
        address, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, host), timeout=timeout
    )
    responses, problem = parse_responses(data)
    return responses, problem, ended


def abort_with_reset(transport):
    """Close a socket with SO_LINGER 0: the peer gets a TCP reset, not a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --------------------------------------------------------------------------
# Fault backend
# --------------------------------------------------------------------------

#: the body of ``/download/...`` responses
DOWNLOAD_BODY = b"d" * (1024 * 1024)


class _FaultConnection(asyncio.Protocol):
    """One connection to a FaultBackend; what it does depends on the first path segment."""

    def __init__(self, backend):
        self.backend = backend
        self.transport = None
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.kind = b""
        self.dead = False
        self.received_body = 0

    def connection_made(self, transport):
        self.transport = transport
        self.backend.open.add(self)
        self.backend.accepted += 1

    def connection_lost(self, exc):
        self.dead = True
        self.backend.open.discard(self)

    def data_received(self, data):
        if self.dead:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self.dead = True
            self.transport.close()

    def on_message_begin(self):
        self.url = b""
        self.received_body = 0

    def on_url(self, url):
        self.url += url

    def on_headers_complete(self):
        parts = self.url.split(b"/")
        self.kind = parts[1] if len(parts) > 1 else b""
        kind = self.kind
        transport = self.transport
        if kind == b"close-mid":
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            transport.close()
            self.dead = True
        elif kind == b"reset":
            abort_with_reset(transport)
            self.dead = True
        elif kind == b"reset-mid":
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            abort_with_reset(transport)
            self.dead = True
        elif kind == b"garbage":
            transport.write(b"HELLO, this is not HTTP\r\n\r\n")
        elif kind == b"download":
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(DOWNLOAD_BODY))
            transport.write(DOWNLOAD_BODY)
        # hang: never answer; upload and anything else: answer at the end

    def on_body(self, body):
        self.received_body += len(body)
        if self.kind == b"upload":
            waiter = self.backend.upload_started.get(self.url)
            if waiter is not None and not waiter.done():
                waiter.set_result(self.received_body)

    def on_message_complete(self):
        if self.dead or self.kind in (b"hang", b"garbage", b"download"):
            return
        body = b"received %d" % self.received_body
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class FaultBackend(_RawBackend):
    """A raw backend that fails on request, by the first path segment.

    ``/close-mid``: promises 100 bytes, sends 3, closes. ``/reset``: resets the
    connection (SO_LINGER 0) right after the request head. ``/reset-mid``:
    sends a head and 3 of 100 bytes, then resets. ``/hang``: never answers.
    ``/garbage``: answers bytes that are not HTTP. ``/download/...``: 1 MiB.
    ``/upload/<id>``: counts the body, resolves ``upload_started[url]`` at its
    first bytes, answers 200 at its end. Anything else: 200.
    """

    protocol = _FaultConnection

    def __init__(self):
        self.open = set()
        self.accepted = 0
        self.upload_started = {}
        self.server = None
        self.port = None


