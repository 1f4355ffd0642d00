"""Which answer a parsed request gets: one pure decision, no I/O.

``route_request`` applies, in order, the rules a reverse proxy checks before a
byte goes to a target, and returns one of three named outcomes:

- ``Forward``: the route, the head to send to its target and how the body
  that follows is framed;
- ``Answer``: a complete response the proxy gives itself (the health check,
  400 for a request it will not route);
- ``ErrorPage``: an error status whose body is the Hub's error page (404 when
  no route matches).

``forward.Exchange`` calls it once per request and only carries out what it
returns, so the rules are tested by tables without sockets.
"""

from typing import NamedTuple, Optional

from .http1 import NO_BODY, TEXT_PLAIN, forwarded_request_head, header_value, request_host
from .routes import Route, RouteTrie

__all__ = ["Answer", "ErrorPage", "Forward", "route_request"]


class Forward(NamedTuple):
    """Send the request to ``route``'s target."""

    route: Route
    #: the request head for the target (prefix, X-Forwarded-*, hop-by-hop rules)
    head: bytes
    #: ``http1.NO_BODY``, ``LENGTH_BODY`` or ``CHUNKED_BODY``
    body: int
    #: the client's ``Upgrade`` value for a websocket request, else None
    websocket: Optional[bytes]


class Answer(NamedTuple):
    """Answer without a target."""

    status: int
    body: bytes
    content_type: bytes


class ErrorPage(NamedTuple):
    """Answer with an error status and the Hub's page for it."""

    status: int


BAD_REQUEST = Answer(400, b"400 Bad Request\n", TEXT_PLAIN)
HEALTHY = Answer(200, b'{"status": "OK"}', b"application/json")
NOT_LOADED = Answer(503, b'{"status": "route table not loaded"}', b"application/json")
NO_ROUTE = ErrorPage(404)


def route_request(
    method, target, headers, *, http10, upgrade, trie: RouteTrie, health_check_path, peer, tls, custom_headers=()
):
    """Decide what to do with a request whose head llhttp parsed.

    Args:
        method, target: bytes of the request line.
        headers: the client's ``(name, value)`` pairs.
        http10: the request is HTTP/1.0 (Host is optional there).
        upgrade: llhttp parsed it as an upgrade request.
        trie: the RouteTrie to match against.
        health_check_path: a path answered ``200 {"status": "OK"}`` (503
            while ``trie.loaded`` is false), or "".
        peer, tls: the client's address (bytes) and whether it came over TLS,
            for the X-Forwarded-* headers.
        custom_headers: ``(name, value)`` pairs forwarded instead of any
            header of that name (``ProxyOptions.custom_headers``).

    Returns:
        ``Forward``, ``Answer`` or ``ErrorPage``.
    """
    if target[:1] != b"/" or method == b"CONNECT":
        # absolute-form, authority-form (CONNECT) and asterisk-form: a reverse
        # proxy routes origin-form paths only (docs/design.md)
        return BAD_REQUEST
    try:
        host = request_host(headers)
    except ValueError:
        # RFC 9112 3.2: several Host fields are a 400
        return BAD_REQUEST
    if host is None and not http10:
        # RFC 9112 3.2: an HTTP/1.1 request without Host is a 400
        return BAD_REQUEST
    path = target.partition(b"?")[0].decode("utf-8", "surrogateescape")
    if path == health_check_path:
        return HEALTHY if trie.loaded else NOT_LOADED
    try:
        route = trie.match_request(path, host.decode("latin-1") if host else None)
    except ValueError:
        # a dot segment, which a backend might resolve into another route
        return BAD_REQUEST
    if route is None:
        return NO_ROUTE
    websocket = None
    if upgrade:
        value = header_value(headers, b"upgrade")
        if value is not None and value.lower() == b"websocket" and method == b"GET":
            websocket = value
    endpoint = route.endpoint
    head, body = forwarded_request_head(
        method,
        endpoint.prefix + target if endpoint.prefix else target,
        headers,
        peer=peer,
        tls=tls,
        websocket=websocket,
        custom_headers=custom_headers,
    )
    if upgrade and body != NO_BODY:
        # llhttp does not parse the body of an upgrade request: its bytes
        # would reach the target as the start of the tunnel
        return BAD_REQUEST
    return Forward(route, head, body, websocket)
