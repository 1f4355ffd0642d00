"""HTTP/1.1 header rules for a reverse proxy, as pure functions on bytes.

Framing (finding where a message and its headers end) is llhttp's job, through
httptools; this module only decides what a forwarded message carries: which
headers are hop-by-hop, what ``X-Forwarded-*`` says, how a body is framed on
the other leg. No I/O, so every rule is tested by tables.

Header names and values are the raw ``bytes`` httptools hands over, in the
client's spelling; comparisons are on lower-cased names.
"""

from http import HTTPStatus

__all__ = [
    "HOP_BY_HOP",
    "LAST_CHUNK",
    "connection_tokens",
    "encode_chunk",
    "forwarded_request_head",
    "header_value",
    "raw_response_head",
    "request_host",
    "NO_BODY",
    "LENGTH_BODY",
    "CHUNKED_BODY",
    "forwarded_port",
    "reason_phrase",
    "response_head",
    "simple_response",
    "TEXT_PLAIN",
]

#: RFC 9110 7.6.1 and RFC 2616 13.5.1: meaningful for one connection only.
#: ``proxy-connection`` is the non-standard twin of ``connection`` that old
#: clients still send.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

LAST_CHUNK = b"0\r\n\r\n"

#: the content type of the proxy's own short answers
TEXT_PLAIN = b"text/plain; charset=utf-8"


#: headers a ``Connection`` token may not remove: without them a message
#: loses its framing (Content-Length) or, upstream, its Host (RFC 9110 7.6.1
#: lets connection options name only hop-by-hop extensions)
_NOT_REMOVABLE = frozenset({b"content-length", b"host"})


def connection_tokens(value):
    """The lower-cased tokens of a ``Connection`` header value."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def _removable(listed):
    """The header names a set of Connection tokens removes beyond HOP_BY_HOP."""
    return listed - HOP_BY_HOP - _NOT_REMOVABLE


def encode_chunk(data):
    """One chunk of a chunked body (RFC 9112 7.1), as the three parts to write.

    Parts, not one bytes object: the data path appends them to the pieces of
    one write, so a chunk's data is copied once, by that write's join.
    """
    return (b"%x\r\n" % len(data), data, b"\r\n")


def reason_phrase(status):
    """The standard reason phrase for ``status``, or ``b"Unknown"``."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def forwarded_port(host, tls):
    """The port a client connected to, from its Host header (bytes) or the scheme.

    IPv6 literals are bracketed, so ``[::1]:8000`` gives ``8000`` and ``[::1]``
    gives the scheme's default (configurable-http-proxy returns ``1`` there).
    """
    if host:
        end = host.rfind(b"]")
        colon = host.rfind(b":")
        if colon > end:
            port = host[colon + 1 :]
            if port.isdigit():
                return port
    return b"443" if tls else b"80"


def request_host(headers):
    """The request's Host value, or None if it has none.

    Raises:
        ValueError: for more than one Host field (RFC 9112 3.2: answer 400),
            which could route by one host and forward the other.
    """
    host = None
    for name, value in headers:
        # compare lengths first: most headers are not Host
        if len(name) == 4 and name.lower() == b"host":
            if host is not None:
                raise ValueError("more than one Host header")
            host = value
    return host


def header_value(headers, lname):
    """The value of the first header named ``lname`` (lower case), or None."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None


def _without_listed(headers, listed):
    """``headers`` less those a ``Connection`` header named (and may remove)."""
    if listed:
        removable = _removable(listed)
        if removable:
            return [(name, value) for name, value in headers if name.lower() not in removable]
    return headers


#: no custom header replaces the proxy's own X-Forwarded-* ones
_NOTHING_REPLACED = frozenset()

#: how a request body is framed, as ``forwarded_request_head`` reports it
NO_BODY, LENGTH_BODY, CHUNKED_BODY = 0, 1, 2


def forwarded_request_head(method, target, headers, *, peer, tls, websocket=None, custom_headers=()):
    """The request head to send upstream, and how the body that follows is framed.

    Args:
        method, target: bytes of the client's request line, target unchanged
            (never decoded and re-quoted).
        headers: the client's ``(name, value)`` pairs.
        peer: the client's IP address as bytes, or ``b""`` (unix socket).
        tls: whether the client connected over TLS.
        websocket: the client's ``Upgrade`` value for a websocket request; the
            upgrade headers are then kept, all other hop-by-hop ones dropped.
        custom_headers: ``(name, value)`` pairs sent instead of any header of
            the same name, the client's or the proxy's own (Host and
            ``X-Forwarded-*`` included), as configurable-http-proxy's
            ``--custom-header`` does.

    Returns:
        ``(head, body)``: ``body`` is NO_BODY, LENGTH_BODY (Content-Length
        passed on, bytes copied as they are) or CHUNKED_BODY (the client sent
        chunks; the proxy re-chunks what llhttp decoded).

    ``X-Forwarded-For``, ``-Proto`` and ``-Port`` are appended to what the
    client sent and ``X-Forwarded-Host`` set when absent, as
    configurable-http-proxy does. Nothing else is added: no User-Agent, no
    Accept-Encoding, no Content-Type.
    """
    kept = []
    listed = None
    host = None
    body = NO_BODY
    forwarded_for = forwarded_proto = forwarded_port_ = None
    has_forwarded_host = False
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection" or lname == b"proxy-connection":
                tokens = connection_tokens(value)
                listed = tokens if listed is None else listed | tokens
            elif lname == b"transfer-encoding":
                # llhttp accepted the request, so chunked is the last coding
                body = CHUNKED_BODY
            continue
        if lname == b"host":
            host = value
        elif lname == b"content-length":
            if body == NO_BODY and value.strip() != b"0":
                body = LENGTH_BODY
        elif lname == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            continue
        elif lname == b"x-forwarded-proto":
            forwarded_proto = value if forwarded_proto is None else forwarded_proto + b"," + value
            continue
        elif lname == b"x-forwarded-port":
            forwarded_port_ = value if forwarded_port_ is None else forwarded_port_ + b"," + value
            continue
        elif lname == b"x-forwarded-host":
            has_forwarded_host = True
        kept.append((name, value))
    kept = _without_listed(kept, listed)
    replaced = _NOTHING_REPLACED
    if custom_headers:
        replaced = {name.lower() for name, _ in custom_headers}
        kept = [(name, value) for name, value in kept if name.lower() not in replaced]
        kept += custom_headers

    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    if b"x-forwarded-for" not in replaced:
        if peer:
            parts += (b"X-Forwarded-For: ", peer if forwarded_for is None else forwarded_for + b", " + peer, b"\r\n")
        elif forwarded_for is not None:
            parts += (b"X-Forwarded-For: ", forwarded_for, b"\r\n")
    if b"x-forwarded-proto" not in replaced:
        proto = (b"wss" if tls else b"ws") if websocket else (b"https" if tls else b"http")
        parts += (b"X-Forwarded-Proto: ", proto if forwarded_proto is None else forwarded_proto + b"," + proto, b"\r\n")
    if b"x-forwarded-port" not in replaced:
        port = forwarded_port(host, tls)
        parts += (b"X-Forwarded-Port: ", port if forwarded_port_ is None else forwarded_port_ + b"," + port, b"\r\n")
    if host is not None and not has_forwarded_host and b"x-forwarded-host" not in replaced:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    if websocket:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", websocket, b"\r\n")
    elif body == CHUNKED_BODY:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), body


def response_head(status, reason, headers, *, no_body, keep_alive, http10):
    """The response head to send to the client, and how its body is framed.

    Args:
        status, reason: the upstream's status code (int) and phrase (bytes).
        headers: the upstream's ``(name, value)`` pairs; hop-by-hop ones are
            dropped, repeated ones (``Set-Cookie``) kept in order.
        no_body: the response has no body (HEAD, 204, 304); its
            Content-Length, if any, is passed on unchanged.
        keep_alive: the client connection may stay open after this response.
        http10: the client spoke HTTP/1.0 (no chunks; keep-alive explicit).

    Returns:
        ``(head, chunked, keep_alive)``: a body of unknown length is chunked
        for HTTP/1.1 clients and ends with the connection for HTTP/1.0 ones.
    """
    kept = []
    listed = None
    has_length = False
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                tokens = connection_tokens(value)
                listed = tokens if listed is None else listed | tokens
            continue
        if lname == b"content-length":
            has_length = True
        kept.append((name, value))
    kept = _without_listed(kept, listed)
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    chunked = not (no_body or has_length or http10)
    if http10 and not (no_body or has_length):
        keep_alive = False
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked, keep_alive


def raw_response_head(status, reason, headers):
    """A response head with every header as the target sent it (a 101 or 1xx)."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def simple_response(status, body=b"", content_type=TEXT_PLAIN, *, keep_alive=False, head=False, headers=()):
    """A complete response the proxy writes itself (errors, health check, the REST API).

    ``head`` omits the body but keeps its Content-Length, as for HEAD requests.
    ``headers``: more ``(name, value)`` byte pairs. A 204 gets no
    Content-Length (RFC 9110 8.6).
    """
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
    if body or content_type:
        parts += (b"Content-Type: ", content_type, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if status != 204:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)
