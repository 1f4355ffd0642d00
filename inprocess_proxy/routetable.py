"""The route table every front-end drives: routes, their activity, their listing.

``RouteTable`` is the in-memory route store: the Hub plugin (``proxy.py``)
and the CHP-compatible process both add, delete and list routes through it,
and the data path matches requests against its ``trie``. It is plain data
with no locks: whoever runs the data path's event loop owns it, and front-ends
on other threads reach it only through ``DataPlane`` (``plane.py``), which
hands each call to that loop.
"""

import time

from .activity import ActivityTracker, isoformat
from .metrics import ProxyStats
from .routes import Route, RouteTrie, routespec_key

__all__ = ["RouteTable"]


class RouteTable:
    """Routes by routespec, with the activity recorded under each.

    Args:
        host_routing: routespecs start with a host (``host/path/``).
        activity: the ActivityTracker (tests inject one with a clock).
        stats: the ProxyStats route operations are timed into.
    """

    def __init__(self, *, host_routing=False, activity=None, stats=None):
        self.trie = RouteTrie(host_routing)
        self.activity = activity if activity is not None else ActivityTracker()
        self.stats = stats if stats is not None else ProxyStats()

    def __len__(self):
        return len(self.trie)

    @property
    def host_routing(self):
        return self.trie.host_routing

    @host_routing.setter
    def host_routing(self, value):
        if len(self.trie) and value != self.trie.host_routing:
            raise ValueError("host_routing cannot change once routes have been added")
        self.trie.host_routing = value

    @property
    def loaded(self):
        """The table is complete; while False (a shared store has not loaded it) the health check answers 503."""
        return self.trie.loaded

    @loaded.setter
    def loaded(self, value):
        self.trie.loaded = value

    def add(self, routespec, target, data):
        """Add or replace a route; return the new Route.

        Raises:
            ValueError: naming the routespec, for a malformed routespec,
                target or data; nothing is changed then.
        """
        data = _route_data(routespec, data)
        started = time.perf_counter()
        trie = self.trie
        previous = trie.get(routespec)
        # the Hub re-adds extra_routes on every check_routes: an unchanged
        # target keeps its age, so its connects are not retried as a new one's
        added_at = previous.added_at if previous is not None and previous.target == target else time.monotonic()
        route = trie.add(routespec, target, dict(data), added_at)
        last_activity = self.activity.isoformat(routespec)
        if last_activity is not None:
            # a replacement keeps the activity recorded under its routespec
            route.record_activity(last_activity)
        self.stats.route_ops["add"].observe(time.perf_counter() - started)
        return route

    def check(self, routespec, target, data):
        """Validate an ``add`` without changing anything; return the data it would store.

        A shared store checks here before it writes a route for every replica.
        Reads only ``host_routing``, so any thread may call it.

        Raises:
            ValueError: as ``add`` does.
        """
        data = _route_data(routespec, data)
        routespec_key(routespec, self.host_routing)
        Route(routespec, target, data, 0.0)  # parses the target
        return data

    def delete(self, routespec):
        """Delete the route stored under exactly this routespec; absent is fine.

        Returns the removed Route or None. Raises ValueError for a malformed
        routespec.
        """
        started = time.perf_counter()
        removed = self.trie.remove(routespec)
        if removed is not None:
            self.activity.forget(routespec)
        self.stats.route_ops["delete"].observe(time.perf_counter() - started)
        return removed

    def replace(self, routes):
        """Make the table hold exactly ``routes``, ``{routespec: (target, data)}``, in one step.

        Routes whose target and data are unchanged are left alone (they keep
        their age and activity). Returns ``{routespec: ValueError}`` for the
        routes that could not be added; the rest of the table is replaced.
        """
        trie = self.trie
        for routespec in [spec for spec in trie.routespecs() if spec not in routes]:
            self.delete(routespec)
        errors = {}
        for routespec, (target, data) in routes.items():
            route = trie.get(routespec)
            if route is not None and route.target == target and route.data == data:
                continue
            try:
                self.add(routespec, target, data)
            except ValueError as e:
                errors[routespec] = e
        return errors

    def export(self):
        """``{routespec: (target, data)}`` as added (no ``last_activity``), data copied."""
        return {routespec: (route.target, dict(route.data)) for routespec, route in self.trie.items()}

    def merge_activity(self, times):
        """Take each ``{routespec: time}`` newer than the one recorded here, for routes in the table.

        Returns ``{routespec: time}`` of what was taken.
        """
        last = self.activity.last
        trie = self.trie
        taken = {}
        for routespec, timestamp in times.items():
            if timestamp > last.get(routespec, 0.0) and routespec in trie:
                last[routespec] = taken[routespec] = timestamp
        return taken

    def get(self, routespec):
        """One route as ``{routespec, target, data}`` (a fresh copy), or None."""
        route = self.trie.get(routespec)
        if route is None:
            return None
        listed = route.listed()
        last_activity = self.activity.isoformat(routespec)
        if last_activity is not None:
            listed["data"]["last_activity"] = last_activity
        return listed

    def list(self, inactive_since=None):
        """All routes as ``{routespec: {routespec, target, data}}``, as fresh copies.

        ``inactive_since``: a ``time.time()`` value; only routes with no
        activity since then are listed (configurable-http-proxy's filter).
        """
        started = time.perf_counter()
        trie = self.trie
        for routespec, timestamp in self.activity.changes(trie.routespecs()):
            trie.get(routespec).record_activity(isoformat(timestamp))
        if inactive_since is None:
            # the Hub lists every route each last_activity_interval: one copy
            # of one dict per route, in a comprehension
            routes = {routespec: route.listed() for routespec, route in trie.items()}
        else:
            last = self.activity.last
            routes = {
                routespec: route.listed()
                for routespec, route in trie.items()
                if last.get(routespec, 0.0) < inactive_since
            }
        self.stats.route_ops["get_all"].observe(time.perf_counter() - started)
        return routes


def _route_data(routespec, data):
    """``data`` as a route stores it: a dict (None is an empty one); ValueError otherwise."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"Cannot add route {routespec!r}: data must be a dict, not {data!r}")
    return data
