"""Serving clients: parse requests, match routes, relay to targets and back.

The only place where errors become responses.

Strategy: a ``ClientConnection`` is an ``asyncio.Protocol`` fed by llhttp
(httptools). Each request becomes an ``Exchange``, which asks
``dispatch.route_request`` what to do with it, then picks a pooled upstream
connection (or opens one) and is that connection's ``upstream.ResponseSink``. Everything is callback-driven: a request on a pooled connection
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

A client that closes its connection (or sends FIN: node's HTTP server and
nginx take a half-close the same way) abandons its request: the target
connection carrying it is aborted at once, since it cannot be reused
mid-response, and the abort is counted (``ProxyStats.client_aborts``).
"""

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from .activity import ActivityTracker
from .dispatch import Answer, ErrorPage, route_request
from .errorpages import ErrorPages
from .errors import BadUpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from .http1 import CHUNKED_BODY, LAST_CHUNK, NO_BODY, encode_chunk, raw_response_head, reason_phrase, response_head, simple_response
from .metrics import ProxyStats
from .options import ProxyOptions
from .routes import RouteTrie
from .upstream import UpstreamPool

__all__ = ["ClientConnection", "Exchange", "ExchangeContext", "RequestRejected"]

# why reading from a client is paused (bits of ClientConnection.read_blocks)
_BLOCKED_BY_UPSTREAM = 1  # the target's write buffer is full
_BLOCKED_BY_PIPELINE = 2  # a pipelined request waits for the current response
_BLOCKED_BY_CONNECT = 4  # a request body piles up while the target connection opens

#: request-body bytes buffered while connecting before reading pauses
#: (asyncio reads at most 256 KiB at a time, so this is one read)
_MAX_BUFFERED_BODY = 256 * 1024

#: seconds a rejected client's further bytes are read and dropped after the
#: answer, so that closing with unread bytes (which makes the kernel send a
#: reset) cannot destroy the answer before the client reads it; nginx's
#: lingering_timeout is 5 s, and a client writing a too-large head stops
#: as soon as it reads the answer
LINGER_SECONDS = 2.0

#: RFC 9110 9.2.2: a request with these methods may be sent again
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: refused and missing-socket errors: the target is not listening (yet)
_NOT_LISTENING = (ConnectionRefusedError, FileNotFoundError)


@dataclass(frozen=True)
class ExchangeContext:
    """What exchanges work with besides their client: one per listener."""

    trie: RouteTrie
    pool: UpstreamPool
    activity: ActivityTracker
    error_pages: ErrorPages
    stats: ProxyStats
    options: ProxyOptions
    log: object
    #: ``access_log(exchange, seconds)`` for every answered request, or None
    access_log: Optional[Callable]
    #: the listener speaks TLS (X-Forwarded-Proto/Port)
    tls: bool
    #: ``start_tunnel(client, upstream_conn, routespec, rest)`` after a 101
    start_tunnel: Callable


class RequestRejected(Exception):
    """A client request the proxy refuses before routing it."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ClientConnection(asyncio.Protocol):
    """One connection from a client: a sequence of exchanges, or a tunnel."""

    def __init__(self, server, context):
        # Per-connection state
        self.server = server
        self.context = context
        self.options = context.options
        self.transport = None
        self.parser = HttpRequestParser(self)
        #: the client's IP as bytes (b"" on a unix socket)
        self.peer = b""
        self.closed = False
        #: no further requests will be read (error, Connection: close, stop)
        self.closing = False
        #: answered and half-closed: what still arrives is dropped (see linger)
        self.lingering = False
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
        # the client left (see the module docstring): closing the transport
        # calls connection_lost, which abandons every exchange
        self.closing = True
        return False

    def data_received(self, data):
        if self.lingering:
            return
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
                self.context.log.error("Proxy error while reading a request", exc_info=cause or e)
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
            exchange.upstream.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()

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

    def reject(self, status, reason, *, linger=True):
        """Answer a request the proxy cannot read, then close the connection.

        ``linger``: the client may still be sending what was refused (see
        ``linger()``); a client too slow to send its head is just closed.
        """
        self.closing = True
        self.context.log.debug("Rejecting request from %s: %d %s", self.peer, status, reason)
        exchange = self.exchange
        if exchange is not None and exchange.response_started:
            # a response is on its way; the connection ends with it
            self.transport.pause_reading()
            return
        for pending in (exchange, self.reading, *(self.waiting or ())):
            if pending is not None:
                pending.abandon()
        self.exchange = self.reading = self.waiting = None
        head_request = self.parser.get_method() == b"HEAD"
        self.write(simple_response(status, b"%d %s\n" % (status, reason_phrase(status)), head=head_request))
        if linger:
            self.linger()
        else:
            self.close()

    def linger(self):
        """Half-close after an answer, drop what the client still sends, close at LINGER_SECONDS.

        The client may still be sending the head or body the proxy refused;
        closing now, with its bytes unread, would reset the connection and
        can destroy the answer in the client's receive buffer.
        """
        transport = self.transport
        if self.closed or not transport.can_write_eof():
            # TLS cannot half-close; nothing better than closing is possible
            self.close()
            return
        self.lingering = self.closing = True
        transport.write_eof()
        self.read_blocks = 0
        transport.resume_reading()
        self.deadline = time.monotonic() + LINGER_SECONDS

    def close(self):
        if not self.closed:
            self.closing = True
            self.transport.close()

    def shutdown(self):
        """The server stops: finish the exchange in flight, then close; idle, close now."""
        self.closing = True
        if self.exchange is None and self.reading is None:
            self.close()

    def check_timeouts(self, now):
        """Called by the sweeper: enforce header and keep-alive deadlines."""
        exchange = self.exchange
        if exchange is not None:
            exchange.check_timeouts(now)
        elif self.reading is None and now > self.deadline:
            if self.in_head and (self.head_size or self.head_bytes) and not self.lingering:
                self.reject(408, "request head not received in time", linger=False)
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
        "context",
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
        "decision",
        "started",
    )

    def __init__(self, client, method, target, headers, *, keep_alive, http10, upgrade):
        self.client = client
        self.context = client.context
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
        #: what dispatch.route_request decided (set by prepare())
        self.decision = None
        #: wall-clock time the head was parsed (activity, duration, access log)
        self.started = time.time()

    # --- request side -------------------------------------------------------

    def prepare(self):
        """Decide what to do with the request and queue its head; no I/O.

        Runs as soon as the head is parsed, even for a pipelined request that
        waits its turn, so its body can be framed while it arrives.
        """
        client = self.client
        context = self.context
        decision = route_request(
            self.method,
            self.target,
            self.headers,
            http10=self.http10,
            upgrade=self.upgrade,
            trie=context.trie,
            health_check_path=context.options.health_check_path,
            peer=client.peer,
            tls=context.tls,
            custom_headers=context.options.custom_headers,
        )
        self.decision = decision
        if self.upgrade:
            self.keep_alive = False
        if isinstance(decision, (Answer, ErrorPage)):
            return
        self.route = decision.route
        self.websocket = decision.websocket
        self.head = decision.head
        self.body = decision.body
        self.headers = None
        self.to_upstream.append(self.head)

    def dispatch(self):
        """Start answering: locally, with an error page, or through the target."""
        decision = self.decision
        if isinstance(decision, Answer):
            self.respond_locally(decision.status, decision.body, decision.content_type)
            return
        if isinstance(decision, ErrorPage):
            self.fail(decision.status)
            return
        conn = self.context.pool.take_idle(self.route.endpoint)
        if conn is not None:
            self.send_on(conn)
        else:
            self.connecting = asyncio.ensure_future(self.connect())

    def request_body(self, chunk):
        if self.finished or self.head is None or self.response_done:
            # no target takes it (client gone, local answer, answered early)
            return
        self.moved = True
        self.context.stats.bytes_in += len(chunk)
        if self.body == CHUNKED_BODY:
            self.to_upstream += encode_chunk(chunk)
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

    def send_on(self, conn):
        """Send the request on ``conn``."""
        self.upstream = conn
        self.connecting = None
        # activity counts once a target takes the request: the proxy's own
        # 503s for a server that is down are not activity, as with CHP
        self.context.activity.last[self.route.routespec] = self.started
        conn.start(self, self.method == b"HEAD")
        if self.client.write_paused:
            conn.pause_reading()
        self.sent_at = time.monotonic()
        if self.request_done:
            conn.end_request()
        if self.buffered:
            self.buffered = 0
            self.client.unblock(_BLOCKED_BY_CONNECT)

    async def connect(self):
        """Open a connection for this request, retrying while a new route's target starts."""
        pool = self.context.pool
        route = self.route
        retry_until = route.added_at + self.context.options.new_route_retry_period
        delay = 0.05
        while True:
            try:
                conn = await pool.connect(route.endpoint)
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
            pool.release(conn)
            return
        self.send_on(conn)
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
        self.context.stats.bytes_out += len(chunk)
        if self.chunked:
            self.to_client += encode_chunk(chunk)
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
        context = self.context
        context.stats.upstream_errors[error.cause] += 1
        context.log.warning(
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
        self.fail(error.status_hint)

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
        self.context.start_tunnel(self.client, conn, self.route.routespec, rest)

    def upstream_write_paused(self):
        self.client.block(_BLOCKED_BY_UPSTREAM)

    def upstream_write_resumed(self):
        self.client.unblock(_BLOCKED_BY_UPSTREAM)

    # --- endings ------------------------------------------------------------

    def _count(self, now, touch_route):
        """Record an answered request: activity (``touch_route``: the target
        answered), metrics and the access log."""
        context = self.context
        if touch_route:
            context.activity.last[self.route.routespec] = now
        context.stats.request_done(1 if self.websocket else 0, self.status, now - self.started)
        if context.access_log is not None:
            context.access_log(self, now - self.started)

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

    def respond_locally(self, status, body, content_type):
        """Answer without a target (health check, requests the proxy will not route)."""
        self.response_started = True
        self.status = status
        keep_alive = self.keep_alive and not self.client.closing and status < 400
        self.keep_alive = keep_alive
        self.client.write(
            simple_response(status, body, content_type, keep_alive=keep_alive, head=self.method == b"HEAD")
        )
        self._response_complete(touch_route=False)

    def fail(self, status):
        """Answer with an error: a bare status for websockets, else the Hub's page."""
        self.response_started = True
        self.status = status
        if self.websocket or self.upgrade:
            self.keep_alive = False
            self.client.write(simple_response(status, b"", b""))
            self._response_complete(touch_route=False)
            return
        self.connecting = asyncio.ensure_future(self._send_error_page(status))

    async def _send_error_page(self, status):
        content_type, body = await self.context.error_pages.render(status, self.target)
        self.connecting = None
        if self.finished:
            return
        self.keep_alive = self.keep_alive and not self.client.closing
        self.client.write(
            simple_response(status, body, content_type, keep_alive=self.keep_alive, head=self.method == b"HEAD")
        )
        self._response_complete(touch_route=False)

    def client_lost(self):
        """The client went away: a request not yet answered is abandoned, and counted."""
        if not self.finished and self.route is not None and not self.response_done:
            self.context.stats.client_aborts += 1
        self.abandon()

    def abandon(self):
        """Stop relaying: drop the target connection, which cannot be reused mid-response."""
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
        options = self.context.options
        if self.moved:
            self.moved = False
            self.idle_since = now
            if self.route is not None:
                self.context.activity.last[self.route.routespec] = time.time()
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

