"""Connections to routes' targets: target parsing, connecting, and the keep-alive pool.

The only module that opens upstream connections.

Strategy: each connection is an ``asyncio.Protocol`` with an llhttp response
parser (httptools). It carries one request at a time for a ``ResponseSink``
(the exchange relaying to a client, or an error-page fetch) and reports what
it parses and what happens to the connection to that sink. Idle connections wait in a
per-target stack (last in, first out, so few stay warm) and keep reading, so
a target that closes one is noticed at once (``connection_lost`` drops it)
instead of when the next request fails on it; the sweeper closes those idle
longer than ``upstream_keep_alive_timeout``, after aiohttp's connector.
"""

import asyncio
import ssl
import time
from typing import Protocol

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpResponseParser

from .errors import BadUpstreamResponse, UpstreamClosed, UpstreamError, UpstreamUnreachable

__all__ = ["ResponseSink", "UpstreamConnection", "UpstreamPool"]


class ResponseSink(Protocol):
    """What an ``UpstreamConnection`` reports to the request it carries.

    Calls come from the connection's protocol callbacks, in this order for one
    response: ``response_interim``* then ``response_head``, ``response_body``*,
    ``response_end``; or ``upstream_failed`` / ``upstream_upgraded`` instead of
    the end. After any of those three the connection forgets the sink.
    ``flush`` ends each read, so a sink can write once per read.
    """

    def response_interim(self, status: int, reason: bytes, headers: list) -> None:
        """A 1xx response other than 101 (``100 Continue``, ``103 Early Hints``)."""

    def response_head(self, status: int, reason: bytes, headers: list) -> None:
        """The final status line and headers (or a 101)."""

    def response_body(self, chunk: bytes) -> None:
        """Body bytes, de-chunked."""

    def response_end(self) -> None:
        """The response is complete; the connection went back to the pool or closed."""

    def upstream_failed(self, conn: "UpstreamConnection | None", error: UpstreamError) -> None:
        """The request failed: the connection closed, timed out or sent bytes that are not HTTP.

        ``conn`` is the failed connection (its ``uses`` and
        ``response_started`` tell whether a retry is safe), or None.
        """

    def upstream_upgraded(self, conn: "UpstreamConnection", rest: bytes) -> None:
        """After a 101: the connection is the sink's to detach; ``rest`` followed the head."""

    def upstream_write_paused(self) -> None:
        """The connection's write buffer is full: stop sending it request bytes."""

    def upstream_write_resumed(self) -> None:
        """The write buffer drained."""

    def flush(self) -> None:
        """One read's events have all been reported."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to a target; one request at a time."""

    def __init__(self, pool, endpoint, log):
        # Per-connection state
        self.pool = pool
        self.log = log
        self.endpoint = endpoint
        self.transport = None
        self.parser = HttpResponseParser(self)
        self.closed = False
        #: requests this connection has carried (0 while the first is on it)
        self.uses = 0
        #: monotonic time it went back to the pool
        self.idle_since = 0.0

        # Per-request state
        self.sink = None
        self.headers = []
        self.reason = b""
        self.head_request = False
        self.request_done = False
        #: any byte of the response arrived (a retry would no longer be safe)
        self.response_started = False
        #: the response ended at its head (HEAD): llhttp cannot be told so
        self.ended_at_head = False
        #: the message being parsed is a 1xx interim response
        self.interim = False
        #: the response is a 101: what follows is the tunnel's, not HTTP
        self.upgrading = False
        #: the body has neither length nor chunks: it ends when the target
        #: closes (RFC 9112 6.3, item 8), which httptools cannot be told
        self.until_close = False

    def __repr__(self):
        return f"<UpstreamConnection {self.endpoint.key}>"

    # --- used by the sink ---------------------------------------------------

    def start(self, sink: ResponseSink, head_request):
        """Carry a new request for ``sink``; ``head_request``: its method is HEAD."""
        self.sink = sink
        self.head_request = head_request
        self.request_done = False
        self.response_started = False
        self.ended_at_head = False
        self.upgrading = False
        self.until_close = False
        self.uses += 1

    def write(self, data):
        self.transport.write(data)

    def end_request(self):
        """The whole request has been written."""
        self.request_done = True

    def pause_reading(self):
        """Stop reading the response (the client cannot take more now)."""
        self.transport.pause_reading()

    def resume_reading(self):
        self.transport.resume_reading()

    def close(self):
        """Close after writing what is buffered; the pool forgets it."""
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            self.transport.close()

    def abort(self):
        """Drop the connection at once (never reused); the sink is not told."""
        self.sink = None
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def detach(self):
        """Give up the connection to a tunnel: stop parsing HTTP on it."""
        self.sink = None
        self.pool.forget(self)

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if self.until_close and exc is None:
            sink.response_end()
        else:
            sink.upstream_failed(self, UpstreamClosed(_describe_lost(exc)))

    def eof_received(self):
        # close our side too; connection_lost reports it to the sink
        return False

    def data_received(self, data):
        sink = self.sink
        if sink is None:
            # a target must not talk between requests: never reuse it
            self.abort()
            return
        self.response_started = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self.sink = None
            sink.upstream_upgraded(self, data[upgrade.args[0] :])
            return
        except HttpParserError as e:
            self.sink = None
            self.abort()
            if isinstance(e, HttpParserCallbackError) and e.__context__ is not None:
                # not the target's bytes: a bug in a callback of ours
                cause = e.__context__
                self.log.error("Proxy error while reading a response", exc_info=(type(cause), cause, cause.__traceback__))
            sink.upstream_failed(self, BadUpstreamResponse(f"invalid response: {e}"))
            return
        if self.upgrading:
            # a 101 without the headers llhttp wants for an upgrade: what
            # followed it in this read was parsed as HTTP, so it is not a tunnel
            self.sink = None
            self.abort()
            sink.upstream_failed(self, BadUpstreamResponse("101 response without Connection: upgrade"))
            return
        if self.ended_at_head:
            # llhttp still expects the body its Content-Length announced
            keep_alive = self.parser.should_keep_alive()
            self.parser = HttpResponseParser(self)
            self._finish(sink, keep_alive)
        sink.flush()

    def pause_writing(self):
        if self.sink is not None:
            self.sink.upstream_write_paused()

    def resume_writing(self):
        if self.sink is not None:
            self.sink.upstream_write_resumed()

    # --- llhttp callbacks ---------------------------------------------------

    def on_message_begin(self):
        self.headers = []
        self.reason = b""

    def on_status(self, status):
        self.reason += status

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self.interim = True
            self.sink.response_interim(status, self.reason, self.headers)
            return
        if status == 101:
            self.upgrading = True
        elif not (self.head_request or status == 204 or status == 304):
            self.until_close = not _has_framing(self.headers)
        self.sink.response_head(status, self.reason, self.headers)
        if self.head_request:
            self.ended_at_head = True

    def on_body(self, body):
        if not self.ended_at_head:
            self.sink.response_body(body)

    def on_message_complete(self):
        if self.interim:
            self.interim = False
        elif not self.ended_at_head and not self.upgrading and self.sink is not None:
            self._finish(self.sink, self.parser.should_keep_alive())

    def _finish(self, sink, keep_alive):
        self.sink = None
        reusable = self.request_done and keep_alive and not self.closed
        sink.response_end()
        if reusable:
            self.pool.release(self)
        else:
            self.close()


def _has_framing(headers):
    """Whether response headers give a Content-Length or a Transfer-Encoding."""
    for name, _ in headers:
        # compare lengths first: most headers are neither
        if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            return True
    return False


def _describe_lost(exc):
    if exc is None:
        return "the target closed the connection"
    return f"the connection to the target failed: {exc}"


class UpstreamPool:
    """Open and reuse connections to targets.

    Args:
        connect_timeout: seconds for TCP and TLS set-up.
        keep_alive_timeout: seconds an idle connection is kept.
        ssl_context: used for every https target (internal_ssl's client
            identity inside a Hub).
    """

    def __init__(self, *, connect_timeout, keep_alive_timeout, ssl_context, log):
        self.log = log
        self.connect_timeout = connect_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.ssl_context = ssl_context
        #: endpoint key -> idle connections, most recently used last
        self.idle = {}
        #: every open connection, idle or busy, so stop() can close them
        self.connections = set()

    def __len__(self):
        return len(self.connections)

    def idle_count(self):
        """Connections waiting in the pool for a request (for metrics)."""
        return sum(map(len, self.idle.values()))

    def take_idle(self, endpoint):
        """A pooled connection to ``endpoint`` ready for a request, or None."""
        stack = self.idle.get(endpoint.key)
        while stack:
            conn = stack.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, endpoint):
        """Open a new connection to ``endpoint``.

        Raises:
            UpstreamUnreachable: refused, unreachable, TLS failure or timeout.
        """
        loop = asyncio.get_running_loop()

        def factory():
            return UpstreamConnection(self, endpoint, self.log)

        if endpoint.unix_path is not None:
            opening = loop.create_unix_connection(factory, endpoint.unix_path)
        elif endpoint.tls:
            opening = loop.create_connection(
                factory, endpoint.host, endpoint.port, ssl=self.ssl_context, server_hostname=endpoint.host
            )
        else:
            opening = loop.create_connection(factory, endpoint.host, endpoint.port)
        try:
            _, conn = await asyncio.wait_for(opening, self.connect_timeout)
        except asyncio.TimeoutError as e:
            raise UpstreamUnreachable(f"connect timed out after {self.connect_timeout:g}s") from e
        except (OSError, ssl.SSLError) as e:
            raise UpstreamUnreachable(str(e) or type(e).__name__) from e
        self.connections.add(conn)
        return conn

    def release(self, conn):
        """Put a connection whose response is complete back for reuse."""
        conn.idle_since = time.monotonic()
        # a slow client may have paused it; idle, it must read to see a close
        conn.resume_reading()
        stack = self.idle.get(conn.endpoint.key)
        if stack is None:
            stack = self.idle[conn.endpoint.key] = []
        stack.append(conn)

    def forget(self, conn):
        """Stop tracking a connection that closed or left for a tunnel."""
        self.connections.discard(conn)

    def sweep(self, now):
        """Close connections idle for longer than the keep-alive timeout."""
        expired_before = now - self.keep_alive_timeout
        for key in list(self.idle):
            stack = self.idle[key]
            # the oldest sit at the bottom of each stack
            while stack and (stack[0].closed or stack[0].idle_since < expired_before):
                stack.pop(0).close()
            if not stack:
                del self.idle[key]

    def close(self):
        """Close every connection, idle or busy."""
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()
        self.idle.clear()
