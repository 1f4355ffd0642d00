"""Route targets: the URL a route forwards to, parsed once when the route is added.

Pure data, no I/O: ``routes.Route`` holds the ``Endpoint`` and the upstream
pool opens connections by it.
"""

from collections import namedtuple
from urllib.parse import unquote, urlsplit

__all__ = ["Endpoint", "parse_target"]


class Endpoint(namedtuple("Endpoint", "key host port unix_path tls prefix")):
    """A parsed route target.

    ``key`` identifies the pool a connection belongs to; ``prefix`` is the
    target's path (bytes, no trailing slash) that requests are forwarded under,
    as configurable-http-proxy's ``prependPath`` does.
    """

    @property
    def host_header(self):
        """What the proxy's own requests (error pages) send as Host."""
        if self.unix_path is not None:
            return b"localhost"
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        return f"{netloc}:{self.port}".encode("idna")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(parts):
    """``(parts.hostname, parts.port)``, reading the netloc once in the usual case.

    Each of those properties splits the netloc again, on every route added; a plain ``host:port`` (what JupyterHub's targets
    are) is split here by the same rules, and the rest (user info, IPv6
    literals) is left to ``urllib.parse``.
    """
    netloc = parts.netloc
    if "@" in netloc or "[" in netloc:
        return parts.hostname, parts.port
    host, _, port = netloc.partition(":")
    if port and not (port.isdigit() and port.isascii() and int(port) <= 65535):
        raise ValueError(f"invalid port {port!r}")
    return host.lower() or None, int(port) if port else None


def parse_target(target):
    """Parse a route target URL into an Endpoint.

    Accepts ``http://host[:port][/path]``, ``https://...`` and
    ``http+unix://<%-quoted socket path>[/path]`` (JupyterHub's form for
    servers bound to unix sockets).

    Raises:
        ValueError: naming the target, for anything else.
    """
    if not isinstance(target, str):
        raise ValueError(f"target must be a URL string, not {target!r}")
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ValueError(f"target {target!r} must not have a query or fragment")
    prefix = parts.path.rstrip("/").encode("utf-8")
    if scheme == "http+unix":
        path = unquote(parts.netloc)
        if not path:
            raise ValueError(f"target {target!r} has no socket path")
        return Endpoint(("unix", path), None, None, path, False, prefix)
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"target {target!r} must be an http://, https:// or http+unix:// URL")
    try:
        host, port = _host_and_port(parts)
    except ValueError as e:
        raise ValueError(f"target {target!r} has an invalid port") from e
    if not host:
        raise ValueError(f"target {target!r} has no host")
    port = port or _DEFAULT_PORTS[scheme]
    return Endpoint((scheme, host, port), host, port, None, scheme == "https", prefix)
