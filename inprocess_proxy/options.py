"""Settings of the data path, as one frozen object.

Front-ends turn their configuration into this plain parameter object, as
tornado's ``HTTP1ConnectionParameters`` does, so the data plane never imports
traitlets. The defaults written here are the only copy: ``proxy.InProcessProxy``
builds its traits from them, and ``docs/configuration.md`` shows them. A field
with no trait of that name (``custom_headers``) is a setting of the standalone
command only, and the Hub plugin leaves it at its default.
"""

from dataclasses import dataclass

__all__ = ["ProxyOptions"]


@dataclass(frozen=True)
class ProxyOptions:
    #: seconds to open a TCP (and TLS) connection to a target
    connect_timeout: float = 10.0
    #: seconds from sending a request until the target's response headers
    response_header_timeout: float = 300.0
    #: seconds without a byte in either direction while a request or response
    #: body is moving; 0 disables
    idle_timeout: float = 300.0
    #: seconds a client has to send a complete request head
    client_header_timeout: float = 60.0
    #: seconds an idle keep-alive client connection is kept open
    client_keep_alive_timeout: float = 75.0
    #: seconds an idle pooled connection to a target is kept open; shorter than
    #: the 5 s of node's HTTP server, the shortest keep-alive of common backends
    upstream_keep_alive_timeout: float = 4.0
    #: seconds a websocket tunnel may stay silent in both directions; 0 disables
    websocket_idle_timeout: float = 0.0
    #: seconds after a route is added during which refused connects are retried
    new_route_retry_period: float = 5.0
    #: seconds to wait for the Hub's error page before a plain-text fallback
    error_page_timeout: float = 2.0
    #: largest request head (request line and headers), bytes -> 431
    max_header_size: int = 65536
    #: longest request target, bytes -> 414
    max_url_size: int = 16384
    #: most header fields in a request -> 431
    max_header_count: int = 256
    #: most simultaneous client connections; 0 means no limit
    max_client_connections: int = 10000
    #: path answered by the proxy itself, before routing
    health_check_path: str = "/_chp_healthz"
    #: seconds in-flight requests may take to finish when the proxy stops
    stop_timeout: float = 5.0
    #: ``(name, value)`` byte pairs added to every forwarded request; each
    #: replaces any header of that name the request would carry, Host and
    #: X-Forwarded-* included (configurable-http-proxy's ``--custom-header``)
    custom_headers: tuple = ()
