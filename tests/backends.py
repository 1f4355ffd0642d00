"""Test helpers for the HTTP data path: a strict raw client and real backends.

Nothing here imports ``inprocess_proxy``: these are the independent ends the
proxy sits between.

- ``RawClient``: one client connection (TCP, TLS or unix socket) that writes
  exactly the bytes a test gives it and parses responses strictly (no header
  added, framing checked), so tests see what the proxy really sent.
- Tornado backends (``backend_app``, ``CountingHTTPServer``): an echo
  handler plus small handlers for cookies, redirects, gzip, HEAD/204/304,
  server-sent events, gated (slow) responses and streamed bodies; the server
  counts accepted and closed connections.
- Raw asyncio backends (the ``*_script`` functions, served by conftest's
  ``make_raw_backend``): for bytes Tornado will not send
  (garbage, 103 Early Hints, a response cut after its headers).

Certificates and free ports are in ``support`` (``support.tls``,
``support.ports``), shared with the benchmarks.
"""

import asyncio
import gzip
import json
from dataclasses import dataclass, field

from tornado import httpserver, web
from tornado.iostream import StreamClosedError

# --------------------------------------------------------------------------
# Raw client
# --------------------------------------------------------------------------

#: bytes a raw client buffers; large enough for the oversized-header tests
CLIENT_READ_LIMIT = 1 << 20
#: statuses whose responses never have a body (RFC 9112 6.3)
NO_BODY_STATUSES = {204, 304}


class HeaderList:
    """Lookups on ``self.headers``, a list of ``(name, value)`` in received order."""

    def get(self, name, default=None):
        """The first value of header ``name`` (any case), or ``default``."""
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name):
        """Every value of header ``name`` (any case), in order."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def names(self):
        """The set of lower-cased header names."""
        return {n.lower() for n, _ in self.headers}


@dataclass
class Head(HeaderList):
    """A parsed status line and header block; header names keep their spelling."""

    status: int
    reason: str
    version: str
    headers: list


@dataclass
class Echo(HeaderList):
    """What ``EchoHandler`` saw: method, raw request target, headers, body."""

    method: str
    uri: str
    headers: list
    body: str

    @classmethod
    def of(cls, response):
        """The echo in a RawClient ``Response``, which must be a 200."""
        assert response.status == 200, (response.status, response.headers, response.body[:200])
        return cls.of_json(response.body)

    @classmethod
    def of_json(cls, body):
        data = json.loads(body)
        return cls(data["method"], data["uri"], [tuple(h) for h in data["headers"]], data["body"])


@dataclass
class Response(Head):
    body: bytes = b""
    #: 1xx responses received before this one
    interim: list = field(default_factory=list)

    def json(self):
        return json.loads(self.body)


def build_request(method="GET", target="/", headers=(), body=b"", host="proxy.test"):
    """Request bytes exactly as given: a Host (unless ``host`` is None), the
    headers, a Content-Length when there is a body and none was given."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    headers = list(headers.items() if isinstance(headers, dict) else headers)
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(data):
    """Parse a status line and headers (bytes ending in CRLF CRLF), strictly."""
    text = data.decode("latin-1")
    assert text.endswith("\r\n\r\n"), f"head not terminated by CRLF CRLF: {text!r}"
    lines = text[:-4].split("\r\n")
    version, _, rest = lines[0].partition(" ")
    assert version in ("HTTP/1.1", "HTTP/1.0"), f"bad status line {lines[0]!r}"
    code, _, reason = rest.partition(" ")
    assert code.isdigit() and len(code) == 3, f"bad status line {lines[0]!r}"
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name and name == name.strip(), f"bad header line {line!r}"
        headers.append((name, value.strip()))
    return Head(int(code), reason, version, headers)


class RawClient:
    """One client connection that sends raw bytes and parses responses strictly.

    Use ``await RawClient.connect(address)`` where ``address`` is a
    ``(host, port)`` tuple or a unix socket path.
    """

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address, *, ssl=None, server_hostname=None):
        if isinstance(address, str):
            reader, writer = await asyncio.open_unix_connection(address, limit=CLIENT_READ_LIMIT)
        else:
            reader, writer = await asyncio.open_connection(
                *address, ssl=ssl, server_hostname=server_hostname, limit=CLIENT_READ_LIMIT
            )
        return cls(reader, writer)

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method="GET", target="/", headers=(), body=b"", host="proxy.test"):
        """Send one request and read its final response."""
        await self.send(build_request(method, target, headers, body, host))
        return await self.read_response(method)

    async def read_head(self):
        return parse_head(await self.reader.readuntil(b"\r\n\r\n"))

    async def read_response(self, method="GET"):
        """Read a whole response: 1xx interim ones go to ``.interim``."""
        interim = []
        while True:
            head = await self.read_head()
            if 100 <= head.status < 200 and head.status != 101:
                interim.append(head)
                continue
            break
        body = b"".join([chunk async for chunk in self.body_chunks(head, method)])
        return Response(head.status, head.reason, head.version, head.headers, body, interim)

    async def body_chunks(self, head, method="GET"):
        """Yield the body of the response ``head`` as it arrives, framing checked.

        Raises ``asyncio.IncompleteReadError`` when the connection ends early.
        """
        if method == "HEAD" or head.status in NO_BODY_STATUSES or 100 <= head.status < 200:
            return
        if head.get("Transfer-Encoding") is not None:
            assert head.get("Transfer-Encoding").lower() == "chunked", head.headers
            assert head.get("Content-Length") is None, "both Content-Length and chunked"
            async for chunk in self._chunked():
                yield chunk
            return
        length = head.get("Content-Length")
        if length is None:
            while data := await self.reader.read(1 << 18):
                yield data
            return
        remaining = int(length)
        while remaining:
            data = await self.reader.read(min(remaining, 1 << 18))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            yield data

    async def _chunked(self):
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return
            yield await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n", "chunk not followed by CRLF"

    async def read_until_eof(self):
        """Everything until the peer closes; a reset ends it too (returns what came first)."""
        parts = []
        try:
            while data := await self.reader.read(1 << 16):
                parts.append(data)
        except ConnectionResetError:
            pass
        return b"".join(parts)

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass  # the peer may have reset it first; closed is what we want


# --------------------------------------------------------------------------
# Tornado backends
# --------------------------------------------------------------------------

#: a chunk of generated body; reused so generating bytes allocates nothing
STREAM_CHUNK = b"x" * (256 * 1024)
#: the gzip body ``GzipHandler`` sends
GZIP_BODY = gzip.compress(b"hello gzip " * 1000, mtime=0)
#: largest upload the backends accept (the proxy must stream 1 GiB through)
BACKEND_MAX_BODY = 4 << 30


class Backend:
    """A running backend's address and what it observed."""

    def __init__(self):
        #: gated handlers wait for this; tests set it, teardown always does
        self.gate = asyncio.Event()
        #: set when a gated handler has started
        self.entered = asyncio.Event()
        #: set each time a connection to this backend closes (tests clear it)
        self.connection_closed = asyncio.Event()
        self.accepted = 0
        self.closed = 0
        #: (method, uri, headers, body) of each request the echo handler saw
        self.requests = []
        self.url = None
        self.server = None


class CountingHTTPServer(httpserver.HTTPServer):
    """A Tornado HTTPServer that counts the connections it accepts and closes."""

    backend = None

    def handle_stream(self, stream, address):
        self.backend.accepted += 1
        return super().handle_stream(stream, address)

    def on_close(self, server_conn):
        super().on_close(server_conn)
        self.backend.closed += 1
        self.backend.connection_closed.set()


class BackendHandler(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    @property
    def backend(self):
        return self.settings["backend"]

    def check_xsrf_cookie(self):
        pass


class EchoHandler(BackendHandler):
    """Answers with what it received: method, raw target, headers, body."""

    def _echo(self):
        req = self.request
        headers = list(req.headers.get_all())
        self.backend.requests.append((req.method, req.uri, headers, req.body))
        self.set_header("Content-Type", "application/json")
        self.finish(
            {"method": req.method, "uri": req.uri, "headers": headers, "body": req.body.decode("latin-1")}
        )

    get = post = put = patch = delete = options = _echo

    def head(self):
        self.set_header("Content-Length", "0")


class CookiesHandler(BackendHandler):
    def get(self):
        for cookie in ("a=1; Path=/", "b=2; Path=/", "c=3; Path=/"):
            self.add_header("Set-Cookie", cookie)
        self.finish("cookies")


class RedirectHandler(BackendHandler):
    LOCATION = "http://elsewhere.example:8999/next?x=%20y"

    def get(self):
        self.set_status(302)
        self.set_header("Location", self.LOCATION)
        self.finish()


class GzipHandler(BackendHandler):
    def get(self):
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Content-Type", "text/plain")
        self.finish(GZIP_BODY)


class HopByHopResponseHandler(BackendHandler):
    """Sends hop-by-hop headers a proxy must not pass on."""

    def get(self):
        self.set_header("Connection", "X-Backend-Secret")
        self.set_header("X-Backend-Secret", "hidden")
        self.set_header("Keep-Alive", "timeout=99")
        self.set_header("X-Kept", "kept")
        self.finish("hop")


class ConnectionCloseHandler(BackendHandler):
    """Tells the proxy this upstream connection is not reusable."""

    def get(self):
        self.set_header("Connection", "close")
        self.finish("closing")


class BigResponseHeaderHandler(BackendHandler):
    """A response header far over aiohttp's 8190-byte default line limit."""

    VALUE = "v" * (32 * 1024)

    def get(self):
        self.set_header("X-Big", self.VALUE)
        self.finish("big")


class HeadHandler(BackendHandler):
    LENGTH = 1234

    def head(self):
        self.set_header("Content-Length", str(self.LENGTH))

    def get(self):
        self.finish(b"h" * self.LENGTH)


class StatusHandler(BackendHandler):
    """/status/<code>: that status, no body (204, 304) or a short one."""

    def get(self, code):
        self.set_status(int(code))
        if int(code) not in NO_BODY_STATUSES:
            self.write("status")
        self.finish()


class GatedHandler(BackendHandler):
    """Signals ``entered``, waits for ``gate``, then answers ``released``."""

    async def get(self):
        self.backend.entered.set()
        await self.backend.gate.wait()
        self.finish("released")


class StallAfterFirstChunkHandler(BackendHandler):
    """Sends headers and one chunk, then nothing until ``gate``."""

    async def get(self):
        self.write(b"first")
        await self.flush()
        self.backend.entered.set()
        await self.backend.gate.wait()
        self.finish(b"last")


class EventStreamHandler(BackendHandler):
    """Server-sent events: event 1, then event 2 only once ``gate`` is set."""

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.write(b"data: 1\n\n")
        await self.flush()
        await self.backend.gate.wait()
        self.finish(b"data: 2\n\n")


class TrickleHandler(BackendHandler):
    """Streams a small chunk every 50 ms until ``gate`` is set (steady traffic)."""

    async def get(self):
        self.write(b"tick\n")
        await self.flush()
        self.backend.entered.set()
        try:
            while not self.backend.gate.is_set():
                # pacing the traffic, not synchronising the test
                await asyncio.sleep(0.05)
                self.write(b"tick\n")
                await self.flush()
        except StreamClosedError:
            return  # the client went away before the gate opened
        self.finish(b"end\n")


class DownloadHandler(BackendHandler):
    """/download/<n>: n generated bytes with Content-Length, written chunk by chunk."""

    async def get(self, size):
        remaining = int(size)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(remaining))
        try:
            while remaining:
                chunk = STREAM_CHUNK if remaining >= len(STREAM_CHUNK) else STREAM_CHUNK[:remaining]
                self.write(chunk)
                remaining -= len(chunk)
                await self.flush()
        except StreamClosedError:
            return  # the proxy hung up: tests check that through on_connection_close
        self.finish()

    def on_connection_close(self):
        self.backend.connection_closed.set()


@web.stream_request_body
class UploadHandler(BackendHandler):
    """Counts the request body as it streams in, stores none of it."""

    def prepare(self):
        self.request.connection.set_max_body_size(BACKEND_MAX_BODY)
        self.received = 0

    def data_received(self, chunk):
        self.received += len(chunk)

    def post(self):
        self.finish({"received": self.received})

    put = post


def backend_app(backend):
    """The Tornado application every backend runs; paths match at any prefix."""
    return web.Application(
        [
            (r".*/cookies", CookiesHandler),
            (r".*/redirect", RedirectHandler),
            (r".*/gzip", GzipHandler),
            (r".*/hop-by-hop", HopByHopResponseHandler),
            (r".*/connection-close", ConnectionCloseHandler),
            (r".*/big-response-header", BigResponseHeaderHandler),
            (r".*/head", HeadHandler),
            (r".*/status/(\d+)", StatusHandler),
            (r".*/gated", GatedHandler),
            (r".*/stall", StallAfterFirstChunkHandler),
            (r".*/events", EventStreamHandler),
            (r".*/trickle", TrickleHandler),
            (r".*/download/(\d+)", DownloadHandler),
            (r".*/upload", UploadHandler),
            (r".*", EchoHandler),
        ],
        backend=backend,
    )


# --------------------------------------------------------------------------
# Raw asyncio backends: scripts run per accepted connection
# --------------------------------------------------------------------------


async def _read_request_head(reader):
    """The next request head, or None when the proxy closed the connection."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def garbage_script(reader, writer):
    """Answers any request with bytes that are not HTTP, then waits for the proxy to hang up."""
    if await _read_request_head(reader) is not None:
        writer.write(b"HELLO\r\n\r\n")
        await reader.read()


async def early_hints_script(reader, writer):
    """Answers each request with 103 Early Hints, then 200 ``ok`` (keep-alive)."""
    while await _read_request_head(reader) is not None:
        writer.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()


async def bare_response_script(reader, writer):
    """Answers each request with nothing but a Content-Length header and ``ok``."""
    while await _read_request_head(reader) is not None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


class AnswerOncePerConnection:
    """Script: answers the first request on a connection; drops the connection on
    the second, as a backend whose idle timeout fires just as the proxy reuses it."""

    def __init__(self):
        #: requests that arrived on a reused connection and were dropped
        self.dropped = 0

    async def __call__(self, reader, writer):
        if await _read_request_head(reader) is None:
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if await _read_request_head(reader) is not None:
            self.dropped += 1


async def close_after_partial_body_script(reader, writer):
    """Promises 100 bytes, sends 3, closes."""
    if await _read_request_head(reader) is not None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()


async def close_mid_chunked_script(reader, writer):
    """Sends one chunk of a chunked body, closes without the last chunk."""
    if await _read_request_head(reader) is not None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()


async def close_delimited_script(reader, writer):
    """A response with neither Content-Length nor chunked: the body ends at close."""
    if await _read_request_head(reader) is not None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"until-close " * 1000)
        await writer.drain()


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------


def address_of(url):
    """``(host, port)`` of an http(s) URL, or the socket path of an ``http+unix://`` one."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme == "http+unix":
        return unquote(parts.netloc)
    return (parts.hostname, parts.port)


def assert_nothing_listening(url):
    """Connecting to ``url``'s address is refused (or its socket file is gone)."""
    import socket

    address = address_of(url)
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            return
    raise AssertionError(f"something still accepts connections at {url}")
