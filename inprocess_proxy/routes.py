"""The routing table: a path-segment trie matched by longest prefix.

Pure data, no I/O and no JupyterHub import, so it can be tested by tables and
benchmarked on its own.

Strategy (after configurable-http-proxy's ``lib/trie.js``):

- A routespec is JupyterHub's already-escaped key, ``/user/has%40x/`` or, with
  host routing, ``host.example.com/user/x/``. The table stores and returns it
  byte for byte; only the trie works on *decoded* segments, so that a request
  for ``/user/has@x/`` and one for ``/user/has%40x/`` reach the same route.
- Requests are split on the raw ``/`` first and each segment is decoded after,
  so ``%2F`` never becomes a separator: the proxy routes by the same segments
  a backend sees (see ``docs/design.md``, "Route confusion").
- With host routing the lower-cased host, without port, is the first segment.
  The routespec ``/`` is the root of the trie and so the fallback for every
  host, which is how JupyterHub routes its own pages in subdomain mode.
- Matching walks the trie as far as the request's segments go and returns the
  deepest node that holds a route: whole segments only, so ``/user/namex``
  does not hit ``/user/name/``.
"""

from urllib.parse import unquote

from .targets import parse_target

__all__ = ["Route", "RouteTrie", "split_host", "split_path", "routespec_key"]


class Route:
    """One entry of the table: what a front-end added, with its target parsed.

    Activity is not kept here but by routespec (``activity.ActivityTracker``),
    so that a tunnel opened on a route that is later replaced keeps counting
    for the route that replaced it.
    """

    __slots__ = ("routespec", "target", "data", "endpoint", "added_at", "_listed_data")

    def __init__(self, routespec, target, data, added_at):
        """Raises ValueError naming the routespec for a malformed target."""
        try:
            self.endpoint = parse_target(target)
        except ValueError as e:
            raise ValueError(f"Cannot add route {routespec!r}: {e}") from None
        self.routespec = routespec
        self.target = target
        self.data = data
        #: monotonic time the route was added (new routes retry connects)
        self.added_at = added_at
        #: ``data`` as listed, with ``last_activity`` once traffic is seen:
        #: rebuilt when activity changes, so a listing copies one dict per route
        self._listed_data = data

    def record_activity(self, last_activity):
        """Set the ISO-8601 ``last_activity`` the route is listed with."""
        self._listed_data = listed = self.data.copy()
        listed["last_activity"] = last_activity

    def listed(self):
        """A fresh ``{routespec, target, data}``, the shape of ``jupyterhub.proxy.Proxy``.

        ``data`` is copied one level deep: route data is flat.
        """
        return {"routespec": self.routespec, "target": self.target, "data": self._listed_data.copy()}

    def __repr__(self):
        return f"<Route {self.routespec} -> {self.target}>"


class _Node:
    """A trie node: children by decoded segment, and the routes ending here.

    Two routespecs can decode to the same segments (``/a@b/`` and ``/a%40b/``);
    both are kept so that deleting one leaves the other routable. The most
    recently added one is the one that matches.
    """

    __slots__ = ("children", "route", "routes")

    def __init__(self):
        self.children = {}
        self.route = None
        self.routes = None

    def attach(self, route):
        if self.routes is None:
            self.routes = {}
        self.routes.pop(route.routespec, None)
        self.routes[route.routespec] = route
        self.route = route

    def detach(self, routespec):
        if self.routes is None or routespec not in self.routes:
            return
        del self.routes[routespec]
        if self.routes:
            self.route = next(reversed(self.routes.values()))
        else:
            self.routes = None
            self.route = None


def split_path(path):
    """Split a request path into decoded segments.

    ``path`` is the path part of the request target (no query), as text.
    A trailing slash adds no segment; an empty segment inside (``//``) is kept,
    as configurable-http-proxy keeps it, so ``/user//x`` is not ``/user/x``.

    Raises:
        ValueError: for a dot segment (``.``, ``..``, or encoded as ``%2e``),
            which a backend might resolve into another route's prefix.
    """
    segments = path.split("/")
    # the leading "/" gives an empty first item; a trailing "/" an empty last
    if segments and segments[0] == "":
        del segments[0]
    if segments and segments[-1] == "":
        del segments[-1]
    if "%" in path:
        # invalid UTF-8 escapes decode as the raw bytes the request carried,
        # the way forward.py decodes raw bytes, never as U+FFFD
        segments = [unquote(s, errors="surrogateescape") if "%" in s else s for s in segments]
    elif "." not in path:
        return segments
    for segment in segments:
        if segment == "." or segment == "..":
            raise ValueError(f"dot segment in path {path!r}")
    return segments


def split_host(host):
    """Return the routing form of a Host header value: lower case, no port.

    IPv6 literals keep their brackets (``[::1]:8000`` -> ``[::1]``); a trailing
    dot of a fully qualified name is dropped.
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")
    if colon != -1:
        host = host[:colon]
    return host.rstrip(".")


def routespec_key(routespec, host_routing):
    """Return the decoded trie segments for a routespec.

    Raises:
        ValueError: if the routespec is not a string of the form the table
            accepts (``/`` and ``/path/``, or ``host/path/`` with host routing).
    """
    if not isinstance(routespec, str) or not routespec:
        raise ValueError(f"Invalid routespec {routespec!r}: must be a non-empty string")
    if routespec == "/":
        return []
    if "?" in routespec or "#" in routespec:
        raise ValueError(f"Invalid routespec {routespec!r}: must not contain '?' or '#'")
    if host_routing:
        if routespec.startswith("/"):
            raise ValueError(
                f"Invalid routespec {routespec!r}: a host is required with host routing"
            )
        host, slash, path = routespec.partition("/")
        if not host:
            raise ValueError(f"Invalid routespec {routespec!r}: empty host")
        path = "/" + path
        prefix = [split_host(host)]
    elif not routespec.startswith("/"):
        raise ValueError(
            f"Invalid routespec {routespec!r}: must start with '/' without host routing"
        )
    else:
        path = routespec
        prefix = []
    try:
        return prefix + split_path(path)
    except ValueError as e:
        raise ValueError(f"Invalid routespec {routespec!r}: {e}") from None


class RouteTrie:
    """Routes by routespec, matched by longest decoded-segment prefix.

    ``add``/``remove`` validate before changing anything and take effect when
    they return. ``match`` never raises and costs O(segments of the request).
    """

    def __init__(self, host_routing=False):
        self.host_routing = host_routing
        #: the table is complete: False while a shared route store has not
        #: loaded it yet, and the health check answers 503 meanwhile
        self.loaded = True
        self._root = _Node()
        #: routespec -> Route, in insertion order, for listing
        self._routes = {}

    def __len__(self):
        return len(self._routes)

    def __contains__(self, routespec):
        return routespec in self._routes

    def __iter__(self):
        return iter(self._routes.values())

    def routespecs(self):
        """A live set-like view of the routespecs in the table."""
        return self._routes.keys()

    def items(self):
        """``(routespec, Route)`` pairs, in insertion order."""
        return self._routes.items()

    def get(self, routespec):
        """The Route stored under exactly this routespec, or None."""
        return self._routes.get(routespec)

    def add(self, routespec, target, data, added_at):
        """Add or replace the route for ``routespec``; return the new Route.

        Raises:
            ValueError: naming the routespec, for a malformed routespec or
                target; nothing is changed then.
        """
        key = routespec_key(routespec, self.host_routing)
        route = Route(routespec, target, data, added_at)
        node = self._root
        for segment in key:
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        node.attach(route)
        self._routes[routespec] = route
        return route

    def remove(self, routespec):
        """Remove the route stored under ``routespec``; absent is not an error.

        Returns the removed Route, or None. Empty branches are pruned so the
        trie does not grow with churn.
        """
        key = routespec_key(routespec, self.host_routing)
        route = self._routes.pop(routespec, None)
        if route is None:
            return None
        path = [self._root]
        for segment in key:
            path.append(path[-1].children[segment])
        path[-1].detach(routespec)
        for depth in range(len(key), 0, -1):
            node = path[depth]
            if node.routes is not None or node.children:
                break
            del path[depth - 1].children[key[depth - 1]]
        return route

    def match(self, segments):
        """Return the Route with the longest prefix of ``segments``, or None."""
        node = self._root
        found = node.route
        children = node.children
        for segment in segments:
            node = children.get(segment)
            if node is None:
                break
            if node.route is not None:
                found = node.route
            children = node.children
        return found

    def match_request(self, path, host=None):
        """Match a request's path (text, no query) and, with host routing, Host."""
        segments = split_path(path)
        if self.host_routing:
            segments.insert(0, split_host(host) if host else "")
        return self.match(segments)
