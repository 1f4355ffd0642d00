"""Serving clients: parse requests, match routes, relay to targets and back.

The only place where errors become responses.

Strategy: a ``ClientConnection`` is an ``asyncio.Protocol`` fed by llhttp
(httptools). Each request becomes an ``Exchange``, which picks a pooled
upstream connection (or opens one) and is that connection's *sink* for the
response. Everything is callback-driven: a request on a pooled connection
creates no task and no future. Bytes produced while parsing one read are
gathered and written once after the read, so a small request or response is
one ``send()`` per leg.

Flow control both ways: a full client write buffer pauses reading from the
target, a full target write buffer pauses reading from the client. Reading
from a client is also paused while a pipelined request waits its turn and
while a request body piles up before its target connection is open; the
reasons are bits of ``read_blocks`` so one ending never resumes another's.

Timeouts are deadlines checked by the server's sweeper (``server.py``), so the
hot path sets a number instead of arming a timer.
"""

import asyncio
import time
from collections import deque

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from .errors import BadUpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from .http1 import (
    CHUNKED_BODY,
    LAST_CHUNK,
    NO_BODY,
    forwarded_request_head,
    raw_response_head,
    reason_phrase,
    request_host,
    response_head,
    simple_response,
)
from .routes import split_host, split_path

__all__ = ["ClientConnection", "Exchange", "RequestRejected"]

# why reading from a client is paused (bits of ClientConnection.read_blocks)
_BLOCKED_BY_UPSTREAM = 1  # the target's write buffer is full
_BLOCKED_BY_PIPELINE = 2  # a pipelined request waits for the current response
_BLOCKED_BY_CONNECT = 4  # a request body piles up while the target connection opens

#: request-body bytes buffered while connecting before reading pauses
#: (asyncio reads at most 256 KiB at a time, so this is one read)
_MAX_BUFFERED_BODY = 256 * 1024

#: RFC 9110 9.2.2: a request with these methods may be sent again
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: refused and missing-socket errors: the target is not listening (yet)
_NOT_LISTENING = (ConnectionRefusedError, FileNotFoundError)

_TEXT = b"text/plain; charset=utf-8"


class RequestRejected(Exception):
    """A client request the proxy refuses before routing it."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ClientConnection(asyncio.Protocol):
    """One connection from a client: a sequence of exchanges, or a tunnel."""

    def __init__(self, server):
        # Per-connection state
        self.server = server
        self.options = server.options
        self.stats = server.stats
        self.transport = None
        self.parser = HttpRequestParser(self)
        #: the client's IP as bytes (b"" on a unix socket)
        self.peer = b""
        self.closed = False
        #: no further requests will be read (error, Connection: close, stop)
        self.closing = False
        #: bits saying why reading is paused (see _BLOCKED_BY_*)
        self.read_blocks = 0
        #: the client's write buffer is full
        self.write_paused = False
        #: monotonic time by which the next request head must be complete
        self.deadline = 0.0
        #: a request head is being read (the deadline is the header timeout)
        self.in_head = False
        #: the exchange being answered, and pipelined ones waiting their turn
        self.exchange = None
        self.waiting = None
        #: the exchange whose request is still arriving
        self.reading = None
        #: bytes after a websocket request head, for the tunnel
        self.upgrade_rest = None

        # Per-request state (the head being parsed)
        self.url = b""
        self.headers = None
        #: bytes of the parsed request line and headers
        self.head_size = 0
        #: bytes received while one head stays incomplete across reads; this
        #: bounds what httptools buffers for a header line that never ends
        self.head_bytes = 0
        #: heads begun on this connection (tells reads of one head apart)
        self.heads_begun = 0

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        server = self.server
        limit = self.options.max_client_connections
        if limit and server.client_count() >= limit:
            server.refused_connection()
            self.closed = self.closing = True
            transport.write(simple_response(503, b"Too many connections\n"))
            transport.close()
            return
        server.clients.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = peer[0].encode("ascii")
        self.deadline = time.monotonic() + self.options.client_header_timeout
        self.in_head = True

    def connection_lost(self, exc):
        self.closed = True
        self.server.client_closed(self)
        for exchange in (self.exchange, self.reading, *(self.waiting or ())):
            if exchange is not None:
                exchange.client_lost()
        self.exchange = self.reading = self.waiting = None

    def eof_received(self):
        # a client may half-close after its request: answer it, then close;
        # but a request still arriving can never complete: drop it
        self.closing = True
        if self.exchange is None or self.reading is not None:
            return False
        return True

    def data_received(self, data):
        if self.upgrade_rest is not None:
            self._buffer_upgrade_data(data)
            return
        heads_begun = self.heads_begun
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._buffer_upgrade_data(data[upgrade.args[0] :])
        except HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, RequestRejected):
                self.reject(cause.status, str(cause))
            else:
                self.server.log.error("Proxy error while reading a request", exc_info=cause or e)
                self.reject(500, "proxy error")
            return
        except HttpParserError as e:
            self.reject(400, f"malformed request: {e}")
            return
        if self.in_head and self.heads_begun == heads_begun:
            # the same head is still incomplete: every byte of this read is head
            self.head_bytes += len(data)
            if self.head_bytes > self.options.max_header_size:
                self.reject(431, "request head too large")
                return
        exchange = self.reading or self.exchange
        if exchange is not None:
            exchange.flush_upstream()

    def pause_writing(self):
        self.write_paused = True
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.transport.resume_reading()

    # --- llhttp callbacks ---------------------------------------------------

    def on_message_begin(self):
        self.url = b""
        self.headers = []
        self.head_size = self.head_bytes = 0
        self.heads_begun += 1
        if not self.in_head:
            self.in_head = True
            self.deadline = time.monotonic() + self.options.client_header_timeout

    def on_url(self, url):
        self.url += url
        self.head_size += len(url)
        if len(self.url) > self.options.max_url_size:
            raise RequestRejected(414, "request target too long")

    def on_header(self, name, value):
        headers = self.headers
        headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.options.max_header_size:
            raise RequestRejected(431, "request head too large")
        if len(headers) > self.options.max_header_count:
            raise RequestRejected(431, "too many request headers")

    def on_headers_complete(self):
        self.in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            # HTTP/0.9 has no headers to route by; 2.0 and up are not HTTP/1
            status = 400 if version.startswith("0.") else 505
            raise RequestRejected(status, f"HTTP/{version} is not supported")
        exchange = Exchange(
            self,
            parser.get_method(),
            self.url,
            self.headers,
            keep_alive=parser.should_keep_alive() and not self.closing,
            http10=version == "1.0",
            upgrade=parser.should_upgrade(),
        )
        self.reading = exchange
        exchange.prepare()
        if self.exchange is None:
            self.exchange = exchange
            exchange.dispatch()
        else:
            # pipelined: answer in order; read no further meanwhile
            if self.waiting is None:
                self.waiting = deque()
            self.waiting.append(exchange)
            self.block(_BLOCKED_BY_PIPELINE)

    def on_body(self, body):
        self.reading.request_body(body)

    def on_message_complete(self):
        exchange, self.reading = self.reading, None
        exchange.request_complete()

    # --- used by exchanges and the server -----------------------------------

    def block(self, reason):
        if not self.read_blocks and not self.closed:
            self.transport.pause_reading()
        self.read_blocks |= reason

    def unblock(self, reason):
        if self.read_blocks & reason:
            self.read_blocks &= ~reason
            if not self.read_blocks and not self.closed:
                self.transport.resume_reading()

    def write(self, data):
        if not self.closed:
            self.transport.write(data)

    def exchange_finished(self, exchange):
        """The current exchange's request and response are both complete."""
        self.unblock(_BLOCKED_BY_UPSTREAM | _BLOCKED_BY_CONNECT)
        self.exchange = None
        if not exchange.keep_alive or self.server.stopping:
            self.closing = True
        if self.closing or self.closed:
            self.close()
            return
        if self.waiting:
            self.exchange = self.waiting.popleft()
            self.unblock(_BLOCKED_BY_PIPELINE)
            self.exchange.dispatch()
            self.exchange.flush_upstream()
        elif not self.in_head:
            self.deadline = time.monotonic() + self.options.client_keep_alive_timeout

    def reject(self, status, reason):
        """Answer a request the proxy cannot read, then close the connection."""
        self.closing = True
        self.server.log.debug("Rejecting request from %s: %d %s", self.peer, status, reason)
        exchange = self.exchange
        if exchange is not None and exchange.response_started:
            # a response is on its way; the connection ends with it
            self.transport.pause_reading()
            return
        for pending in (exchange, self.reading, *(self.waiting or ())):
            if pending is not None:
                pending.client_lost()
        self.exchange = self.reading = self.waiting = None
        head_request = self.parser.get_method() == b"HEAD"
        self.write(simple_response(status, b"%d %s\n" % (status, reason_phrase(status)), head=head_request))
        self.close()

    def close(self):
        if not self.closed:
            self.closing = True
            self.transport.close()

    def check_timeouts(self, now):
        """Called by the sweeper: enforce header and keep-alive deadlines."""
        exchange = self.exchange
        if exchange is not None:
            exchange.check_timeouts(now)
        elif self.reading is None and now > self.deadline:
            if self.in_head and (self.head_size or self.head_bytes):
                self.reject(408, "request head not received in time")
            else:
                self.close()

    def _buffer_upgrade_data(self, data):
        """Keep bytes a websocket client sent after its request, until the 101."""
        if self.upgrade_rest is None:
            self.upgrade_rest = bytearray()
        self.upgrade_rest += data
        if len(self.upgrade_rest) > _MAX_BUFFERED_BODY:
            self.block(_BLOCKED_BY_CONNECT)


class Exchange:
    """One request and its response, relayed between a client and a target."""

    __slots__ = (
        "client",
        "method",
        "target",
        "headers",
        "keep_alive",
        "http10",
        "upgrade",
        "websocket",
        "route",
        "head",
        "body",
        "upstream",
        "connecting",
        "to_upstream",
        "buffered",
        "to_client",
        "request_done",
        "response_started",
        "response_done",
        "chunked",
        "finished",
        "sent_at",
        "moved",
        "idle_since",
        "status",
        "outcome",
        "started",
    )

    def __init__(self, client, method, target, headers, *, keep_alive, http10, upgrade):
        self.client = client
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.http10 = http10
        #: llhttp parsed this as an upgrade request (websocket or other)
        self.upgrade = upgrade
        #: the client's Upgrade value when this is a websocket request
        self.websocket = None
        self.route = None
        #: the request head for the target, kept for a retry
        self.head = None
        self.body = NO_BODY
        #: the UpstreamConnection carrying the request, once there is one
        self.upstream = None
        #: the task opening a new connection or fetching an error page, while
        #: it runs (client_lost() cancels it)
        self.connecting = None
        #: bytes for the target not yet written, and their size
        self.to_upstream = []
        self.buffered = 0
        #: bytes for the client gathered during one upstream read
        self.to_client = []
        self.request_done = False
        #: a response head was queued for the client (no error page after it)
        self.response_started = False
        self.response_done = False
        #: the response body is re-chunked for the client
        self.chunked = False
        #: the client is gone or the exchange is over: ignore late events
        self.finished = False
        #: monotonic time the request went to the target (for the header timeout)
        self.sent_at = 0.0
        #: bytes moved since the sweeper last looked (activity, idle timeout)
        self.moved = False
        self.idle_since = 0.0
        self.status = 0
        #: what prepare() decided to answer without a target: (status, body,
        #: content type) for a local answer, (status, None, None) for an error
        self.outcome = None
        #: wall-clock time the head was parsed (activity, duration, access log)
        self.started = time.time()

    # --- request side -------------------------------------------------------

    def prepare(self):
        """Route the request and build the head for its target; no I/O.

        Runs as soon as the head is parsed, even for a pipelined request that
        waits its turn, so its body can be framed while it arrives.
        """
        client = self.client
        server = client.server
        target = self.target
        if target[:1] != b"/" or self.method == b"CONNECT":
            # absolute-form, authority-form (CONNECT) and asterisk-form: a
            # reverse proxy routes origin-form paths only (docs/design.md)
            self.outcome = (400, b"400 Bad Request\n", _TEXT)
            return
        try:
            host = request_host(self.headers)
        except ValueError:
            host = None
        if host is None and not self.http10:
            # RFC 9112 3.2: no Host, or several, in an HTTP/1.1 request is a 400
            self.outcome = (400, b"400 Bad Request\n", _TEXT)
            return
        path = target.partition(b"?")[0].decode("utf-8", "surrogateescape")
        if path == client.options.health_check_path:
            self.outcome = (200, b'{"status": "OK"}', b"application/json")
            return
        try:
            segments = split_path(path)
        except ValueError:
            self.outcome = (400, b"400 Bad Request\n", _TEXT)
            return
        routes = server.routes
        if routes.host_routing:
            segments.insert(0, split_host((host or b"").decode("latin-1")))
        route = routes.match(segments)
        if route is None:
            self.outcome = (404, None, None)
            return
        self.route = route
        if self.upgrade:
            upgrade = _header(self.headers, b"upgrade")
            if upgrade is not None and upgrade.lower() == b"websocket" and self.method == b"GET":
                self.websocket = upgrade
            self.keep_alive = False
        endpoint = route.endpoint
        self.head, self.body = forwarded_request_head(
            self.method,
            endpoint.prefix + target if endpoint.prefix else target,
            self.headers,
            peer=client.peer,
            tls=server.tls,
            websocket=self.websocket,
        )
        if self.upgrade and self.body != NO_BODY:
            # llhttp does not parse the body of an upgrade request: its bytes
            # would reach the target as the start of the tunnel
            self.head = None
            self.outcome = (400, b"400 Bad Request\n", _TEXT)
            return
        self.headers = None
        self.to_upstream.append(self.head)

    def dispatch(self):
        """Start answering: locally, with an error page, or through the target."""
        if self.outcome is not None:
            status, body, content_type = self.outcome
            if body is None:
                self.fail(status, None)
            else:
                self.respond_locally(status, body, content_type)
            return
        conn = self.client.server.pool.take_idle(self.route.endpoint)
        if conn is not None:
            self.attach(conn)
        else:
            self.connecting = asyncio.ensure_future(self.connect())

    def request_body(self, chunk):
        if self.finished or self.head is None or self.response_done:
            # no target takes it (client gone, local answer, answered early)
            return
        self.moved = True
        self.client.stats.bytes_in += len(chunk)
        if self.body == CHUNKED_BODY:
            self.to_upstream += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            self.to_upstream.append(chunk)
        if self.upstream is None:
            self.buffered += len(chunk)
            if self.buffered > _MAX_BUFFERED_BODY:
                self.client.block(_BLOCKED_BY_CONNECT)

    def request_complete(self):
        self.request_done = True
        if self.finished:
            return
        if self.response_done:
            self.finished = True
            self.client.exchange_finished(self)
            return
        if self.body == CHUNKED_BODY:
            self.to_upstream.append(LAST_CHUNK)
        if self.upstream is not None:
            self.upstream.end_request()

    def flush_upstream(self):
        """Write what one client read produced, in one write."""
        out = self.to_upstream
        if out and self.upstream is not None:
            self.to_upstream = []
            self.upstream.write(out[0] if len(out) == 1 else b"".join(out))

    def attach(self, conn):
        """Send the request on ``conn``."""
        self.upstream = conn
        self.connecting = None
        # activity counts once a target takes the request: the proxy's own
        # 503s for a server that is down are not activity, as with CHP
        self.client.server.activity.last[self.route.routespec] = self.started
        conn.start(self, self.method == b"HEAD")
        if self.client.write_paused:
            conn.transport.pause_reading()
        self.sent_at = time.monotonic()
        if self.request_done:
            conn.end_request()
        if self.buffered:
            self.buffered = 0
            self.client.unblock(_BLOCKED_BY_CONNECT)

    async def connect(self):
        """Open a connection for this request, retrying while a new route's target starts."""
        server = self.client.server
        route = self.route
        retry_until = route.added_at + server.options.new_route_retry_period
        delay = 0.05
        while True:
            try:
                conn = await server.pool.connect(route.endpoint)
                break
            except UpstreamUnreachable as e:
                if self.finished:
                    return
                if isinstance(e.__cause__, _NOT_LISTENING) and time.monotonic() + delay < retry_until:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                self.connecting = None
                self.upstream_failed(None, e)
                return
        if self.finished:
            server.pool.release(conn)
            return
        self.attach(conn)
        self.flush_upstream()

    # --- response side (the upstream connection's sink) ---------------------

    def response_interim(self, status, reason, headers):
        if not self.http10 and not self.finished:
            self.to_client.append(raw_response_head(status, reason, headers))

    def response_head(self, status, reason, headers):
        if self.finished:
            return
        self.status = status
        if status == 101:
            if self.websocket:
                self.response_started = True
                self.to_client.append(raw_response_head(status, reason, headers))
            return
        self.moved = True
        head, self.chunked, self.keep_alive = response_head(
            status,
            reason,
            headers,
            no_body=self.method == b"HEAD" or status == 204 or status == 304,
            keep_alive=self.keep_alive and not self.client.closing,
            http10=self.http10,
        )
        self.response_started = True
        self.to_client.append(head)

    def response_body(self, chunk):
        if self.finished:
            return
        self.moved = True
        self.client.stats.bytes_out += len(chunk)
        if self.chunked:
            self.to_client += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            self.to_client.append(chunk)

    def response_end(self):
        self.upstream = None
        if self.finished:
            return
        if self.chunked:
            self.to_client.append(LAST_CHUNK)
        self.flush()
        self._response_complete(touch_route=True)

    def flush(self):
        """Write what one upstream read produced, in one write."""
        out = self.to_client
        if out:
            self.to_client = []
            self.client.write(out[0] if len(out) == 1 else b"".join(out))

    def upstream_failed(self, conn, error):
        self.upstream = None
        if self.finished:
            return
        if (
            conn is not None
            and conn.uses > 1
            and not conn.response_started
            and not self.response_started
            and self.body == NO_BODY
            and self.method in _IDEMPOTENT
        ):
            # a pooled connection the target had closed: once more, on a new one
            self.to_upstream = [self.head]
            self.connecting = asyncio.ensure_future(self.connect())
            return
        server = self.client.server
        server.stats.upstream_errors[error.cause] += 1
        server.log.warning(
            "Proxy error on %s -> %s: %s: %s",
            self.route.routespec,
            self.route.target,
            error.cause,
            error,
        )
        if self.response_started:
            # part of the response is out: the client connection ends here
            self.flush()
            self.finished = True
            self.client.close()
            return
        self.fail(error.status_hint, error)

    def upstream_upgraded(self, conn, rest):
        if self.finished or self.status != 101 or not self.websocket:
            conn.abort()
            self.upstream = None
            self.upstream_failed(None, BadUpstreamResponse("unexpected upgrade"))
            return
        conn.detach()
        self.upstream = None
        self.flush()
        self.finished = True
        self._count(time.time(), touch_route=True)
        self.client.server.start_tunnel(self.client, conn, self.route.routespec, rest)

    def upstream_write_paused(self):
        self.client.block(_BLOCKED_BY_UPSTREAM)

    def upstream_write_resumed(self):
        self.client.unblock(_BLOCKED_BY_UPSTREAM)

    # --- endings ------------------------------------------------------------

    def _count(self, now, touch_route):
        """Record an answered request: activity (``touch_route``: the target
        answered), metrics and the access log."""
        server = self.client.server
        if touch_route:
            server.activity.last[self.route.routespec] = now
        server.stats.request_done(1 if self.websocket else 0, self.status, now - self.started)
        if server.access_log is not None:
            server.access_log(self, now - self.started)

    def _response_complete(self, touch_route):
        self._count(time.time(), touch_route)
        self.response_done = True
        if self.request_done:
            self.finished = True
            self.client.exchange_finished(self)
        elif not self.keep_alive:
            self.finished = True
            self.client.close()
        # else: answered before the request ended; request_complete() goes on
        # once the rest of the body has been read and dropped

    def respond_locally(self, status, body, content_type=b"text/plain; charset=utf-8"):
        """Answer without a target (health check, rejected target forms)."""
        self.response_started = True
        self.status = status
        keep_alive = self.keep_alive and not self.client.closing and status < 400
        self.keep_alive = keep_alive
        self.client.write(
            simple_response(status, body, content_type, keep_alive=keep_alive, head=self.method == b"HEAD")
        )
        self._response_complete(touch_route=False)

    def fail(self, status, error):
        """Answer with an error: a bare status for websockets, else the Hub's page."""
        self.response_started = True
        self.status = status
        if self.websocket or self.upgrade:
            self.keep_alive = False
            self.client.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason_phrase(status)))
            self._response_complete(touch_route=False)
            return
        self.connecting = asyncio.ensure_future(self._send_error_page(status))

    async def _send_error_page(self, status):
        content_type, body = await self.client.server.error_pages.render(status, self.target)
        self.connecting = None
        if self.finished:
            return
        self.keep_alive = self.keep_alive and not self.client.closing
        self.client.write(
            simple_response(status, body, content_type, keep_alive=self.keep_alive, head=self.method == b"HEAD")
        )
        self._response_complete(touch_route=False)

    def client_lost(self):
        """The client went away: drop the target connection unless it is reusable."""
        if self.finished:
            return
        self.finished = True
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()

    def check_timeouts(self, now):
        """Called by the sweeper for the exchange being answered."""
        if self.finished:
            return
        options = self.client.options
        if self.moved:
            self.moved = False
            self.idle_since = now
            if self.route is not None:
                self.client.server.activity.last[self.route.routespec] = time.time()
            return
        conn = self.upstream
        if conn is not None and not self.response_started and self.request_done:
            # the wait starts when the last request byte went out
            if now - max(self.sent_at, self.idle_since) > options.response_header_timeout:
                conn.abort()
                self.upstream_failed(None, UpstreamTimeout(f"no response within {options.response_header_timeout:g}s"))
            return
        if options.idle_timeout and self.idle_since and now - self.idle_since > options.idle_timeout:
            if conn is not None:
                conn.abort()
                self.upstream_failed(None, UpstreamTimeout(f"no data for {options.idle_timeout:g}s"))
            else:
                self.client.close()


def _header(headers, lname):
    """The value of the first header named ``lname`` (lower case), or None."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None

