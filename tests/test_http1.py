"""http1: the header rules, checked by parsing what they produce with llhttp."""

import httptools
import pytest

from inprocess_proxy.http1 import (
    CHUNKED_BODY,
    HOP_BY_HOP,
    LAST_CHUNK,
    LENGTH_BODY,
    NO_BODY,
    connection_tokens,
    encode_chunk,
    forwarded_port,
    forwarded_request_head,
    raw_response_head,
    reason_phrase,
    response_head,
    simple_response,
)

HOST = (b"Host", b"hub.example.com")
KEPT = (b"X-Kept", b"1")
PEER = b"10.0.0.1"


class Message:
    """What httptools saw: the target, headers in order, the body, messages completed."""

    def __init__(self):
        self.url = b""
        self.headers = []
        self.body = b""
        self.completed = 0
        self.upgrade = False
        self.parser = None

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.completed += 1

    def values(self, name):
        return [value for n, value in self.headers if n.lower() == name]

    def names(self):
        return {name.lower() for name, _ in self.headers}


def header_id(header):
    return b": ".join(header).decode()


def parse(parser_class, data, bytewise=False):
    message = Message()
    message.parser = parser = parser_class(message)
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    try:
        for piece in pieces:
            parser.feed_data(piece)
    except httptools.HttpParserUpgrade:
        message.upgrade = True
    return message


def forward(headers, *, method=b"GET", target=b"/x", peer=PEER, tls=False, websocket=None):
    """Parse the forwarded head; return (message, body framing, raw head)."""
    head, body = forwarded_request_head(method, target, headers, peer=peer, tls=tls, websocket=websocket)
    assert head.endswith(b"\r\n\r\n")
    return parse(httptools.HttpRequestParser, head), body, head


def respond(headers, *, status=200, reason=b"OK", no_body=False, keep_alive=True, http10=False):
    """Parse the response head; return (message, chunked, keep_alive, raw head)."""
    head, chunked, keep = response_head(
        status, reason, headers, no_body=no_body, keep_alive=keep_alive, http10=http10
    )
    assert head.endswith(b"\r\n\r\n")
    return parse(httptools.HttpResponseParser, head), chunked, keep, head


# -- small functions ---------------------------------------------------------


@pytest.mark.parametrize(
    "value, tokens",
    [
        (b"close", {b"close"}),
        (b"Keep-Alive, Upgrade", {b"keep-alive", b"upgrade"}),
        (b" , X-Secret ,,", {b"x-secret"}),
        (b"", set()),
    ],
)
def test_connection_tokens(value, tokens):
    assert connection_tokens(value) == tokens


@pytest.mark.parametrize(
    "host, tls, port",
    [
        (b"example.com:8000", False, b"8000"),
        (b"example.com:8443", True, b"8443"),
        (b"example.com", False, b"80"),
        (b"example.com", True, b"443"),
        (b"127.0.0.1:8000", False, b"8000"),
        (b"[::1]:8000", False, b"8000"),
        (b"[::1]", False, b"80"),
        (b"[::1]", True, b"443"),
        (b"example.com:", False, b"80"),
        (b"example.com:http", False, b"80"),
        (b"", False, b"80"),
        (None, True, b"443"),
    ],
)
def test_forwarded_port(host, tls, port):
    assert forwarded_port(host, tls) == port


@pytest.mark.parametrize(
    "status, phrase",
    [(200, b"OK"), (404, b"Not Found"), (502, b"Bad Gateway"), (101, b"Switching Protocols"), (599, b"Unknown")],
)
def test_reason_phrase(status, phrase):
    assert reason_phrase(status) == phrase


@pytest.mark.parametrize(
    "data, encoded",
    [(b"hello", b"5\r\nhello\r\n"), (b"x" * 26, b"1a\r\n" + b"x" * 26 + b"\r\n")],
)
def test_encode_chunk(data, encoded):
    assert b"".join(encode_chunk(data)) == encoded


# -- request: hop-by-hop and Connection --------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        (b"Connection", b"close"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"KEEP-ALIVE", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Proxy-Authorization", b"Basic eDp5"),
        (b"TE", b"trailers"),
        (b"Trailer", b"Expires"),
        (b"Upgrade", b"h2c"),
    ],
    ids=header_id,
)
def test_hop_by_hop_request_headers_are_dropped(header):
    message, body, _ = forward([HOST, header, KEPT])
    assert header[0].lower() not in message.names()
    assert message.values(b"x-kept") == [b"1"]
    assert body == NO_BODY


@pytest.mark.parametrize(
    "headers, dropped",
    [
        ([(b"Connection", b"X-Secret"), (b"X-Secret", b"1")], {b"x-secret"}),
        (
            [(b"Connection", b"close, x-secret, X-Other"), (b"X-SECRET", b"1"), (b"x-other", b"2")],
            {b"x-secret", b"x-other"},
        ),
        ([(b"Connection", b"x-a"), (b"Connection", b"x-b"), (b"X-A", b"1"), (b"X-B", b"2")], {b"x-a", b"x-b"}),
        ([(b"Proxy-Connection", b"X-Secret"), (b"X-Secret", b"1")], {b"x-secret"}),
    ],
    ids=["one", "several", "two-connection-headers", "proxy-connection"],
)
def test_headers_listed_in_connection_are_dropped_from_requests(headers, dropped):
    message, _, _ = forward([HOST, *headers, KEPT])
    assert not dropped & message.names()
    assert b"connection" not in message.names()
    assert message.values(b"x-kept") == [b"1"]


def test_connection_cannot_remove_the_request_content_length():
    """The body is forwarded as the proxy framed it, never re-read as a second request."""
    smuggled = b"GET /user/other/ HTTP/1.1\r\nHost: h\r\n\r\n"
    headers = [HOST, (b"Connection", b"content-length"), (b"Content-Length", b"%d" % len(smuggled))]
    head, body = forwarded_request_head(b"POST", b"/x", headers, peer=PEER, tls=False)
    assert body == LENGTH_BODY
    message = parse(httptools.HttpRequestParser, head + smuggled)
    assert (message.completed, message.body) == (1, smuggled)


def test_connection_cannot_remove_host():
    message, _, _ = forward([HOST, (b"Connection", b"host")])
    assert message.values(b"host") == [HOST[1]]


# -- request: what is kept and what is added ---------------------------------


def test_request_line_is_forwarded_unchanged():
    target = b"/user/has%40x/a%2Fb/%E7%A7%80?x=1&y=%20"
    message, _, head = forward([HOST], method=b"PROPFIND", target=target)
    assert head.startswith(b"PROPFIND " + target + b" HTTP/1.1\r\n")
    assert (message.parser.get_method(), message.url) == (b"PROPFIND", target)


def test_nothing_is_added_but_x_forwarded():
    message, body, _ = forward([HOST])
    assert [name for name, _ in message.headers] == [
        b"Host",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"X-Forwarded-Port",
        b"X-Forwarded-Host",
    ]
    assert body == NO_BODY


def test_client_headers_keep_order_spelling_and_repeats():
    headers = [HOST, (b"cookie", b"a=1"), (b"X-Mixed-Case", b"v"), (b"Cookie", b"b=2"), (b"Accept", b"*/*")]
    message, _, _ = forward(headers)
    assert message.headers[: len(headers)] == headers


@pytest.mark.parametrize(
    "headers, host, forwarded_host",
    [
        ([(b"Host", b"hub.example.com:8000")], [b"hub.example.com:8000"], [b"hub.example.com:8000"]),
        ([HOST, (b"X-Forwarded-Host", b"lb.example.com")], [HOST[1]], [b"lb.example.com"]),
        ([], [], []),
    ],
)
def test_host_is_kept_and_x_forwarded_host_set_only_when_absent(headers, host, forwarded_host):
    message, _, _ = forward(headers)
    assert message.values(b"host") == host
    assert message.values(b"x-forwarded-host") == forwarded_host


@pytest.mark.parametrize(
    "sent, peer, chain",
    [
        ([], PEER, [b"10.0.0.1"]),
        ([b"1.1.1.1"], PEER, [b"1.1.1.1", b"10.0.0.1"]),
        ([b"1.1.1.1, 2.2.2.2"], PEER, [b"1.1.1.1", b"2.2.2.2", b"10.0.0.1"]),
        ([b"1.1.1.1", b"2.2.2.2"], PEER, [b"1.1.1.1", b"2.2.2.2", b"10.0.0.1"]),
        ([], b"::1", [b"::1"]),
        ([], b"", []),
        ([b"1.1.1.1"], b"", [b"1.1.1.1"]),
    ],
)
def test_x_forwarded_for_appends_the_peer(sent, peer, chain):
    message, _, _ = forward([HOST, *((b"X-Forwarded-For", value) for value in sent)], peer=peer)
    values = message.values(b"x-forwarded-for")
    assert len(values) == (1 if chain else 0)
    assert [address.strip() for value in values for address in value.split(b",")] == chain


@pytest.mark.parametrize(
    "tls, websocket, host, sent, proto, port",
    [
        (False, None, b"h", [], b"http", b"80"),
        (True, None, b"h", [], b"https", b"443"),
        (False, b"websocket", b"h", [], b"ws", b"80"),
        (True, b"websocket", b"h", [], b"wss", b"443"),
        (False, None, b"h:8000", [], b"http", b"8000"),
        (False, None, b"[::1]:8000", [], b"http", b"8000"),
        (False, None, b"h:8000", [(b"X-Forwarded-Proto", b"https")], b"https,http", b"8000"),
        (False, None, b"h:8000", [(b"X-Forwarded-Port", b"443")], b"http", b"443,8000"),
    ],
)
def test_x_forwarded_proto_and_port_are_appended(tls, websocket, host, sent, proto, port):
    message, _, _ = forward([(b"Host", host), *sent], tls=tls, websocket=websocket)
    assert message.values(b"x-forwarded-proto") == [proto]
    assert message.values(b"x-forwarded-port") == [port]


# -- request: body framing and upgrades --------------------------------------


@pytest.mark.parametrize(
    "headers, body, transfer_encoding, content_length",
    [
        ([], NO_BODY, [], []),
        ([(b"Content-Length", b"0")], NO_BODY, [], [b"0"]),
        ([(b"Content-Length", b"5")], LENGTH_BODY, [], [b"5"]),
        ([(b"Transfer-Encoding", b"chunked")], CHUNKED_BODY, [b"chunked"], []),
        ([(b"transfer-encoding", b"chunked"), (b"Connection", b"transfer-encoding")], CHUNKED_BODY, [b"chunked"], []),
    ],
)
def test_request_body_framing(headers, body, transfer_encoding, content_length):
    message, framing, _ = forward([HOST, *headers], method=b"POST")
    assert framing == body
    assert message.values(b"transfer-encoding") == transfer_encoding
    assert message.values(b"content-length") == content_length


@pytest.mark.parametrize("bytewise", [False, True])
def test_rechunked_request_body_parses(bytewise):
    head, _ = forwarded_request_head(
        b"POST", b"/x", [HOST, (b"Transfer-Encoding", b"chunked")], peer=PEER, tls=False
    )
    data = b"".join((head, *encode_chunk(b"hello"), *encode_chunk(b", world" * 10), LAST_CHUNK))
    message = parse(httptools.HttpRequestParser, data, bytewise)
    assert (message.completed, message.body) == (1, b"hello" + b", world" * 10)


@pytest.mark.parametrize("connection", [b"Upgrade", b"keep-alive, Upgrade", b"upgrade"])
def test_websocket_upgrade_keeps_upgrade_headers(connection):
    headers = [
        HOST,
        (b"Connection", connection),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Keep-Alive", b"timeout=5"),
    ]
    message, body, _ = forward(headers, websocket=b"websocket")
    assert message.upgrade and message.parser.should_upgrade()
    assert message.values(b"connection") == [b"Upgrade"]
    assert message.values(b"upgrade") == [b"websocket"]
    assert message.values(b"sec-websocket-key") == [b"dGhlIHNhbXBsZSBub25jZQ=="]
    assert message.values(b"sec-websocket-version") == [b"13"]
    assert b"keep-alive" not in message.names()
    assert body == NO_BODY


def test_upgrade_other_than_websocket_is_dropped():
    headers = [HOST, (b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"), (b"HTTP2-Settings", b"AAA")]
    message, _, _ = forward(headers)
    assert not message.upgrade
    assert not {b"connection", b"upgrade", b"http2-settings"} & message.names()


# -- response ----------------------------------------------------------------

LENGTH = (b"Content-Length", b"2")


@pytest.mark.parametrize(
    "header",
    [
        (b"Connection", b"keep-alive"),
        (b"Connection", b"close"),
        (b"Connection", b"Keep-Alive, Close"),
        (b"Keep-Alive", b"timeout=5, max=100"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Trailer", b"Expires"),
        (b"Upgrade", b"h2c"),
        (b"Transfer-Encoding", b"chunked"),
    ],
    ids=header_id,
)
def test_hop_by_hop_response_headers_are_dropped(header):
    message, _, _, _ = respond([LENGTH, header, KEPT])
    assert header[0].lower() not in message.names()
    assert message.values(b"x-kept") == [b"1"]


@pytest.mark.parametrize(
    "headers, dropped",
    [
        ([(b"Connection", b"X-Secret"), (b"X-Secret", b"1")], {b"x-secret"}),
        (
            [(b"Connection", b"keep-alive, X-A"), (b"Connection", b"x-b"), (b"x-a", b"1"), (b"X-B", b"2")],
            {b"x-a", b"x-b"},
        ),
    ],
    ids=["one", "two-connection-headers"],
)
def test_headers_listed_in_connection_are_dropped_from_responses(headers, dropped):
    message, _, _, _ = respond([LENGTH, *headers, KEPT])
    assert not dropped & message.names()
    assert b"connection" not in message.names()
    assert message.values(b"x-kept") == [b"1"]


def test_repeated_set_cookie_is_kept_in_order():
    headers = [
        LENGTH,
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"X-Other", b"y"),
        (b"Set-Cookie", b"b=2"),
        (b"set-cookie", b"c=3"),
    ]
    message, _, _, _ = respond(headers)
    assert message.headers == headers


@pytest.mark.parametrize(
    "status, headers, no_body, keep_alive, http10, chunked, kept_alive, connection",
    [
        (200, [LENGTH], False, True, False, False, True, []),
        (200, [], False, True, False, True, True, []),
        (200, [(b"Transfer-Encoding", b"chunked")], False, True, False, True, True, []),
        (204, [], True, True, False, False, True, []),
        (304, [(b"ETag", b'"x"')], True, True, False, False, True, []),
        (200, [LENGTH], True, True, False, False, True, []),
        (200, [LENGTH], False, False, False, False, False, [b"close"]),
        (200, [], False, False, False, True, False, [b"close"]),
        (200, [LENGTH], False, True, True, False, True, [b"keep-alive"]),
        (200, [], False, True, True, False, False, [b"close"]),
        (200, [LENGTH], False, False, True, False, False, [b"close"]),
        (204, [], True, True, True, False, True, [b"keep-alive"]),
    ],
)
def test_response_framing_and_keep_alive(status, headers, no_body, keep_alive, http10, chunked, kept_alive, connection):
    message, is_chunked, keeps, _ = respond(
        headers, status=status, no_body=no_body, keep_alive=keep_alive, http10=http10
    )
    assert (is_chunked, keeps) == (chunked, kept_alive)
    assert message.values(b"transfer-encoding") == ([b"chunked"] if chunked else [])
    assert message.values(b"content-length") == [value for name, value in headers if name == b"Content-Length"]
    assert message.values(b"connection") == connection
    assert message.parser.get_status_code() == status
    if not no_body:
        assert message.parser.should_keep_alive() == kept_alive


@pytest.mark.parametrize("bytewise", [False, True])
def test_chunked_response_body_parses(bytewise):
    head, chunked, _ = response_head(200, b"OK", [], no_body=False, keep_alive=True, http10=False)
    assert chunked
    data = b"".join((head, *encode_chunk(b"data: 1\n\n"), *encode_chunk(b"data: 2\n\n"), LAST_CHUNK))
    message = parse(httptools.HttpResponseParser, data, bytewise)
    assert (message.completed, message.body) == (1, b"data: 1\n\ndata: 2\n\n")


def test_connection_cannot_unframe_a_response():
    """A target listing Content-Length in Connection still gets a framed response."""
    message, chunked, _, _ = respond([(b"Content-Length", b"5"), (b"Connection", b"content-length")])
    assert chunked or message.values(b"content-length") == [b"5"]


@pytest.mark.parametrize(
    "status, reason, line",
    [
        (404, b"", b"HTTP/1.1 404 Not Found"),
        (200, b"Fine Thanks", b"HTTP/1.1 200 Fine Thanks"),
        (599, b"", b"HTTP/1.1 599 Unknown"),
    ],
)
def test_response_status_line(status, reason, line):
    _, _, _, head = respond([LENGTH], status=status, reason=reason)
    assert head.split(b"\r\n", 1)[0] == line


def test_raw_response_head_keeps_every_header():
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]
    message = parse(httptools.HttpResponseParser, raw_response_head(101, b"", headers))
    assert message.parser.get_status_code() == 101
    assert message.headers == headers


def test_hop_by_hop_names_are_lower_case():
    assert all(name == name.lower() for name in HOP_BY_HOP)


# -- simple_response ---------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, content_type, keep_alive, head",
    [
        (404, b"404 Not Found\n", b"text/plain; charset=utf-8", False, False),
        (200, b'{"status": "OK"}', b"application/json", True, False),
        (503, b"503 Service Unavailable\n", b"text/plain; charset=utf-8", True, True),
        (200, b"", b"", False, False),
    ],
)
def test_simple_response(status, body, content_type, keep_alive, head):
    data = simple_response(status, body, content_type, keep_alive=keep_alive, head=head)
    message = parse(httptools.HttpResponseParser, data)
    assert message.parser.get_status_code() == status
    assert message.values(b"content-length") == [b"%d" % len(body)]
    assert message.values(b"content-type") == ([content_type] if content_type else [])
    assert message.values(b"connection") == [b"keep-alive" if keep_alive else b"close"]
    if head:
        assert data.endswith(b"\r\n\r\n") and body not in data
    else:
        assert (message.completed, message.body) == (1, body)


# -- custom headers (the standalone command's --custom-header) ----------------


@pytest.mark.parametrize(
    "client_headers, custom, expected",
    [
        # added to what the client sent
        ([], [(b"k1", b"v1")], {b"k1": [b"v1"]}),
        # replaces the client's header of that name, whatever its case
        ([(b"K1", b"client")], [(b"k1", b"custom")], {b"k1": [b"custom"]}),
        # replaces Host, while X-Forwarded-Host still names the client's
        ([], [(b"Host", b"backend.test")], {b"host": [b"backend.test"], b"x-forwarded-host": [b"hub.example.com"]}),
        # replaces the proxy's own X-Forwarded-* (CHP's custom headers win over xfwd)
        (
            [(b"X-Forwarded-Proto", b"http")],
            [(b"X-Forwarded-Proto", b"https")],
            {b"x-forwarded-proto": [b"https"], b"x-forwarded-for": [PEER]},
        ),
        ([], [(b"X-Forwarded-For", b"10.9.9.9")], {b"x-forwarded-for": [b"10.9.9.9"]}),
    ],
)
def test_custom_headers_replace_headers_of_their_name(client_headers, custom, expected):
    head, _ = forwarded_request_head(
        b"GET", b"/x", [HOST, *client_headers], peer=PEER, tls=False, custom_headers=tuple(custom)
    )
    message = parse(httptools.HttpRequestParser, head)
    for name, values in expected.items():
        assert message.values(name) == values, name


def test_custom_headers_reach_websocket_upgrades():
    headers = [HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    head, _ = forwarded_request_head(
        b"GET", b"/ws", headers, peer=PEER, tls=False, websocket=b"websocket", custom_headers=((b"k", b"v"),)
    )
    message = parse(httptools.HttpRequestParser, head)
    assert message.upgrade and message.values(b"k") == [b"v"]


@pytest.mark.parametrize(
    "status, headers, has_length",
    [(200, (), True), (204, (), False), (301, ((b"Location", b"https://x/"),), True)],
)
def test_simple_response_headers_and_length(status, headers, has_length):
    data = simple_response(status, b"", b"", headers=headers)
    message = parse(httptools.HttpResponseParser, data)
    assert message.parser.get_status_code() == status
    assert (b"content-length" in message.names()) == has_length
    for name, value in headers:
        assert message.values(name.lower()) == [value]
