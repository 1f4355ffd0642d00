"""A small HTTP/1.1 server for the process's own endpoints: the REST API, metrics, the HTTPS redirect.

Strategy: one ``asyncio.Protocol`` per connection with llhttp (httptools) for
framing, as on the data path, and answers written by ``http1.simple_response``.
It serves one request at a time per connection, in order, each as a task that
awaits its ``ControlHandler``; requests read meanwhile queue up (up to
``MAX_QUEUED``); a connection keeps alive as HTTP/1.1 says.
Tornado would do the same job, but importing ``tornado.web`` and its
``HTTPServer`` costs more memory than this whole module (``docs/design.md``,
"Standalone process"); these endpoints see a handful of requests a second.

Bad input never reaches a handler: a malformed request gets 400, a head over
``MAX_HEAD_SIZE`` 431, a body over the handler's ``max_body`` 413, and a
handler may answer from the head alone (``head_received``: 403 before a body
is read). After such an answer the rest of the request is read and dropped,
then the connection closes. A malformed request affects only its own
connection.
"""

import asyncio
import json
from collections import deque
from typing import NamedTuple, Optional, Protocol

from httptools import HttpParserCallbackError, HttpParserError, HttpRequestParser

from ..http1 import simple_response
from ..server import bind, remove_stale_socket

__all__ = ["ControlHandler", "ControlServer", "Request", "Response", "error_response", "json_response"]

#: largest request head (request line and headers), bytes -> 431; the REST
#: API's requests carry one short header of note, Authorization
MAX_HEAD_SIZE = 16384
#: seconds a connection may take to send a complete request, and stay idle
#: between requests; JupyterHub's client (aiohttp) drops idle ones after 15 s
REQUEST_TIMEOUT = 60.0
#: after an early answer, body bytes read and dropped (as multiples of the
#: handler's max_body) before the connection is simply closed
DISCARD_FACTOR = 4
#: pipelined requests read ahead of their answers before reading pauses.
#: Reading is not paused per request: with uvloop, pausing and resuming the
#: transport around every answer made aiohttp's (JupyterHub's) route adds
#: take half as long again
MAX_QUEUED = 16

JSON = b"application/json"


class Request(NamedTuple):
    """One parsed request."""

    method: str
    #: the request target as sent, still percent-encoded, and its two parts
    target: str
    path: str
    query: str
    #: lower-cased header names -> values (the last one of a repeated name)
    headers: dict
    body: bytes


class Response(NamedTuple):
    """An answer: status, body and its content type, and more ``(name, value)`` byte pairs."""

    status: int
    body: bytes = b""
    content_type: bytes = b""
    headers: tuple = ()


def json_response(status, value):
    return Response(status, json.dumps(value).encode(), JSON)


def error_response(status, message):
    """A JSON error body, as JupyterHub's own API writes them."""
    return json_response(status, {"status": status, "message": message})


class ControlHandler(Protocol):
    """What a ``ControlServer`` serves."""

    #: largest request body accepted, bytes -> 413
    max_body: int

    def head_received(self, request: Request) -> Optional[Response]:
        """An answer from the head alone (``request.body`` is empty), or None to read the body."""

    async def handle(self, request: Request) -> Response:
        """The answer to a complete request."""


class _ControlConnection(asyncio.Protocol):
    def __init__(self, server):
        # Per-connection state
        self.server = server
        self.handler = server.handler
        self.transport = None
        self.parser = HttpRequestParser(self)
        #: requests read and waiting for their turn, and the task serving one
        self.queue = deque()
        self.serving = None
        #: an early answer went out: read and drop the rest, then close
        self.discarding = False
        self.discarded = 0
        #: the client sent EOF: close once what it asked is answered
        self.client_done = False
        #: reading paused: MAX_QUEUED requests wait for their answers
        self.paused = False
        self.closed = False
        self.timer = None
        #: a request head is being read, and its bytes so far across reads:
        #: llhttp buffers an unfinished header line, so this bounds it
        self.in_head = False
        self.head_bytes = 0
        self._new_request()

    def _new_request(self):
        # Per-request state
        self.url = b""
        self.headers = {}
        self.head_size = 0
        self.body = []
        self.body_size = 0
        self.request = None

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc):
        self.closed = True
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.serving is not None:
            self.serving.cancel()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as e:
            # raised by our own callbacks: an early answer was sent
            if not isinstance(e.__context__, _Answered):
                self.server.log.error("Error reading a request on %s", self.server.name, exc_info=e.__context__ or e)
                self._answer_early(error_response(500, "internal error"))
            self.close()
            return
        except HttpParserError as e:
            self._answer_early(error_response(400, f"malformed request: {e}"))
            self.close()
            return
        if self.in_head:
            # a head is still incomplete: this read may also have held the end
            # of the previous request (its body, at most max_body), hence the bound
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_SIZE + self.handler.max_body:
                self._answer_early(error_response(431, "request head too large"))
                self.close()

    def eof_received(self):
        # the client is done sending: answer what it sent, then close
        if self.serving is None and not self.queue:
            return False
        self.client_done = True
        return True

    # --- llhttp callbacks ---------------------------------------------------

    def on_message_begin(self):
        self.in_head = True
        self.head_bytes = 0
        self._new_request()

    def on_url(self, url):
        self.url += url
        self._count_head(len(url))

    def on_header(self, name, value):
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count_head(len(name) + len(value) + 4)

    def on_headers_complete(self):
        self.in_head = False
        target = self.url.decode("latin-1")
        path, _, query = target.partition("?")
        request = Request(self.parser.get_method().decode("ascii"), target, path, query, self.headers, b"")
        self.request = request
        if self.discarding:
            return
        max_body = self.handler.max_body
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            self._answer_early(error_response(413, f"request body larger than {max_body} bytes"))
            return
        answer = self.handler.head_received(request)
        if answer is not None:
            self._answer_early(answer)

    def on_body(self, body):
        if self.discarding:
            self.discarded += len(body)
            if self.discarded > DISCARD_FACTOR * self.handler.max_body:
                raise _Answered()
            return
        self.body_size += len(body)
        if self.body_size > self.handler.max_body:
            self._answer_early(error_response(413, f"request body larger than {self.handler.max_body} bytes"))
            return
        self.body.append(body)

    def on_message_complete(self):
        if self.discarding:
            # the early answer ended this connection's conversation
            raise _Answered()
        request = self.request._replace(body=b"".join(self.body))
        self.queue.append((request, self.parser.should_keep_alive()))
        if self.serving is None:
            self._serve_next()
        elif len(self.queue) >= MAX_QUEUED and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    # --- serving ------------------------------------------------------------

    def _count_head(self, size):
        self.head_size += size
        if self.head_size > MAX_HEAD_SIZE:
            self._answer_early(error_response(431, "request head too large"))
            raise _Answered()

    def _serve_next(self):
        request, keep_alive = self.queue.popleft()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.paused and len(self.queue) < MAX_QUEUED // 2:
            self.paused = False
            self.transport.resume_reading()
        self.serving = asyncio.ensure_future(self._serve(request, keep_alive))

    async def _serve(self, request, keep_alive):
        try:
            response = await self.handler.handle(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.server.log.exception("Error answering %s %s on %s", request.method, request.path, self.server.name)
            response = error_response(500, "internal error")
        self.serving = None
        if self.closed:
            return
        keep_alive = keep_alive and not self.server.closing
        self._write(response, keep_alive, head=request.method == "HEAD")
        if not keep_alive:
            self.close()
        elif self.queue:
            self._serve_next()
        elif self.client_done:
            self.close()
        else:
            self._arm_timer()

    def _answer_early(self, response):
        """Answer the request being read without its body; the connection ends after it."""
        if self.discarding or self.closed:
            return
        self.discarding = True
        self.queue.clear()
        if self.serving is not None:
            # an earlier request is still being answered: answering this one
            # first would put the answers out of order; just end the connection
            self.serving.cancel()
            self.close()
            return
        self._write(response, keep_alive=False)
        if self.transport.can_write_eof():
            # half-close: the client reads the answer while the rest of its
            # request is read and dropped (closing now could reset the answer)
            self.transport.write_eof()
        else:
            self.close()

    def _write(self, response, keep_alive, head=False):
        self.transport.write(
            simple_response(
                response.status,
                response.body,
                response.content_type,
                keep_alive=keep_alive,
                head=head,
                headers=response.headers,
            )
        )

    def _arm_timer(self):
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self.close)

    def close(self):
        if not self.closed:
            self.closed = True
            self.transport.close()


class _Answered(Exception):
    """Stops llhttp after an early answer (raised from a parser callback)."""


class ControlServer:
    """Serve one ControlHandler on the running event loop, on any number of addresses.

    Args:
        handler: the ControlHandler.
        name: what the server is, for log lines ("REST API").
        log: the process's logger.
    """

    def __init__(self, handler, *, name, log):
        self.handler = handler
        self.name = name
        self.log = log
        self.connections = set()
        self.closing = False
        self._listeners = []
        self._unix_paths = []

    async def listen(self, url, *, ssl_context=None, unix_socket_mode=0o600):
        """Bind ``url`` (``http``, ``https`` or ``http+unix``); returns the URL bound.

        Raises:
            OSError: naming the server and the address.
        """
        listener, bound_url, unix_path = await bind(
            url,
            lambda: _ControlConnection(self),
            ssl_context=ssl_context,
            unix_socket_mode=unix_socket_mode,
            what=f"inprocess-proxy {self.name}",
        )
        self._listeners.append(listener)
        if unix_path is not None:
            self._unix_paths.append(unix_path)
        return bound_url

    def close(self):
        """Stop accepting, close every connection (an answer being computed is dropped), remove socket files."""
        self.closing = True
        for listener in self._listeners:
            listener.close()
        for connection in list(self.connections):
            connection.close()
        for path in self._unix_paths:
            remove_stale_socket(path)
