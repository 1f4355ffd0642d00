"""What can go wrong between the proxy and a route's target.

Each error says whose fault it was and suggests the status the client sees,
after h11's ``error_status_hint``. Lower layers raise these (wrapping
``OSError``, ``ssl.SSLError`` and parser errors with ``raise ... from``);
only ``forward.py`` turns them into responses.
"""

__all__ = [
    "UpstreamError",
    "UpstreamUnreachable",
    "UpstreamClosed",
    "UpstreamTimeout",
    "BadUpstreamResponse",
]


class UpstreamError(Exception):
    """The target could not be reached or did not answer properly."""

    #: the status the client gets if nothing has been sent to it yet
    status_hint = 502
    #: a short label for logs and metrics
    cause = "error"


class UpstreamUnreachable(UpstreamError):
    """Connecting failed: refused, unreachable, TLS handshake or connect timeout."""

    status_hint = 503
    cause = "connect"


class UpstreamClosed(UpstreamError):
    """The target closed or reset the connection before its response was complete."""

    status_hint = 503
    cause = "closed"


class UpstreamTimeout(UpstreamError):
    """The target did not start its response, or stalled, within its timeout."""

    status_hint = 504
    cause = "timeout"


class BadUpstreamResponse(UpstreamError):
    """The target sent bytes that are not a valid HTTP/1.1 response."""

    status_hint = 502
    cause = "protocol"
