"""InProcessProxy: JupyterHub's Proxy API on an in-memory route table.

The only module that imports JupyterHub or traitlets. It turns configuration
into a ``ProxyOptions`` object for the data path, keeps the route table (which
works before ``start()`` and after ``stop()``, because the Hub calls the route
API then too) and starts and stops the listener inside the Hub's event loop.
"""

import logging
import ssl
import time

from jupyterhub.log import _scrub_uri
from jupyterhub.metrics import metrics_prefix
from jupyterhub.proxy import Proxy
from jupyterhub.utils import make_ssl_context
from traitlets import Bool, Float, Integer, TraitError, Unicode, observe, validate

from . import metrics
from .activity import ActivityTracker, isoformat
from .options import ProxyOptions
from .routes import RouteTrie
from .server import ProxyServer
from .upstream import parse_target

__all__ = ["InProcessProxy"]


def _seconds(default_value, help):
    return Float(default_value, config=True, help=help)


class InProcessProxy(Proxy):
    """A proxy that runs inside the Hub's own process and event loop.

    No Node.js, no second process: the Hub's route changes are dictionary
    operations, activity is recorded in memory, and HTTP and WebSocket traffic
    is forwarded by asyncio protocols on the Hub's event loop.

    Enable with ``c.JupyterHub.proxy_class = "inprocess"``.
    """

    connect_timeout = _seconds(
        10.0,
        """Seconds allowed for opening a connection (TCP and TLS) to a route's target.

        Default: 10 seconds. If a target does not accept in time, the client
        gets a 503.
        """,
    )
    response_header_timeout = _seconds(
        300.0,
        """Seconds a target may take to start its response (send its status line and headers).

        Default: 300 seconds. Past it the client gets a 504. There is no limit
        on the total time of a response: downloads and event streams live as
        long as bytes keep moving (see idle_timeout).
        """,
    )
    idle_timeout = _seconds(
        300.0,
        """Seconds a request or response body may go without a byte in either direction.

        Default: 300 seconds; 0 disables. JupyterHub's spawn progress stream
        sends a keepalive every 8 seconds, so it is never idle this long.
        Before the response starts, response_header_timeout applies instead.
        """,
    )
    client_header_timeout = _seconds(
        60.0,
        """Seconds a client has to send a complete request line and headers.

        Default: 60 seconds. Slow or stalled clients are disconnected, so
        they cannot hold connections open by dribbling headers.
        """,
    )
    client_keep_alive_timeout = _seconds(
        75.0,
        """Seconds an idle keep-alive connection from a client is kept open.

        Default: 75 seconds, longer than the 60 seconds of common load
        balancers, so that the balancer, not the proxy, closes idle
        connections (which avoids the race that makes balancers answer 502).
        """,
    )
    upstream_keep_alive_timeout = _seconds(
        4.0,
        """Seconds an idle pooled connection to a target is kept for reuse.

        Default: 4 seconds, shorter than the 5 seconds of Node's HTTP server,
        the shortest keep-alive timeout among common backends, so the proxy
        closes idle connections before a backend does. If a backend closed a
        pooled connection anyway, a request with an idempotent method (GET,
        HEAD, PUT, DELETE, OPTIONS) and no body is sent again on a new one.
        """,
    )
    websocket_idle_timeout = _seconds(
        0.0,
        """Seconds a websocket tunnel may stay silent in both directions before it is closed.

        Default: 0, meaning never: kernels and terminals can sit silent for
        hours and must not be cut.
        """,
    )
    new_route_retry_period = _seconds(
        5.0,
        """Seconds after a route is added during which a refused connection to its target is retried.

        Default: 5 seconds. A server that was just started is often still
        binding its port; the request waits briefly instead of failing with
        503. Older routes fail at once.
        """,
    )
    error_page_timeout = _seconds(
        2.0,
        """Seconds to wait for the Hub's error page (``/hub/error/<code>``).

        Default: 2 seconds. Past it, or if the Hub cannot answer, the client
        gets a short plain-text error instead.
        """,
    )
    stop_timeout = _seconds(
        5.0,
        """Seconds in-flight requests may take to finish when the Hub shuts down.

        Default: 5 seconds. Websocket tunnels and idle connections are closed
        at once; requests still running after this are cut.
        """,
    )
    max_header_size = Integer(
        65536,
        config=True,
        help="""Largest request head (request line and all headers) accepted, in bytes.

        Default: 65536 (64 KiB). Larger heads get 431.
        """,
    )
    max_url_size = Integer(
        16384,
        config=True,
        help="""Longest request target (path and query) accepted, in bytes.

        Default: 16384 (16 KiB). Longer targets get 414.
        """,
    )
    max_header_count = Integer(
        256,
        config=True,
        help="""Most header fields accepted in one request.

        Default: 256. More get 431.
        """,
    )
    max_client_connections = Integer(
        10000,
        config=True,
        help="""Most client connections open at once; 0 means no limit.

        Default: 10000. Connections beyond it get 503 and are closed, so a
        flood cannot exhaust the Hub's file descriptors; a warning with the
        number refused is logged at most every 10 seconds.
        """,
    )
    health_check_path = Unicode(
        "/_chp_healthz",
        config=True,
        help="""Path the proxy answers itself with ``200 {"status": "OK"}``, before routing.

        Default: ``/_chp_healthz``, the path configurable-http-proxy uses, so
        existing load-balancer checks keep working. Set to an empty string to
        route that path like any other.
        """,
    )
    unix_socket_mode = Integer(
        0o600,
        config=True,
        help="""Permissions of the socket file when the Hub's bind_url is ``http+unix://``.

        Default: 0o600 (only the Hub's user). Use 0o660 to let a front-end
        server in the same group connect. A stale socket file left by a
        previous run is removed at start.
        """,
    )

    access_log = Bool(
        False,
        config=True,
        help="""Log every request the proxy answers, at debug level, in the Hub's access-log format.

        Default: False. Lines look like ``200 GET /user/ann/api/status (ann@10.0.0.5) 1.52ms -> http://127.0.0.1:51234``,
        with tokens in URLs scrubbed as the Hub scrubs its own. They appear only when the
        Hub logs at debug level (``c.JupyterHub.log_level = "DEBUG"``).
        """,
    )

    def __init__(self, *, activity=None, **kwargs):
        """``activity``: an ActivityTracker to use (tests inject one with a clock)."""
        # plain attributes, not traits: the route API reads them on every call
        # and a trait lookup costs more than the trie operation itself
        #: the route table
        self.routes = RouteTrie()
        #: last activity per routespec
        self.activity = activity if activity is not None else ActivityTracker()
        #: what the proxy counted, exported at /hub/metrics
        self.stats = metrics.ProxyStats()
        super().__init__(**kwargs)
        metrics.register(self, self.stats, metrics_prefix)

    @observe("host_routing")
    def _host_routing_changed(self, change):
        if len(self.routes):
            raise TraitError("host_routing cannot change once routes have been added")
        self.routes.host_routing = change.new

    @validate("should_start")
    def _validate_should_start(self, proposal):
        if not proposal.value:
            raise TraitError(
                "InProcessProxy runs inside the Hub and only the Hub can start it, so"
                " Proxy.should_start = False is not supported. To manage the proxy"
                " separately, use ConfigurableHTTPProxy or traefik-proxy instead."
            )
        return proposal.value

    @validate("max_header_size", "max_url_size", "max_header_count")
    def _validate_positive(self, proposal):
        if proposal.value < 1:
            raise TraitError(f"{proposal.trait.name} must be at least 1, not {proposal.value}")
        return proposal.value

    @validate("max_client_connections")
    def _validate_max_client_connections(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"max_client_connections must be 0 or more, not {proposal.value}")
        return proposal.value

    @validate(
        "connect_timeout",
        "response_header_timeout",
        "idle_timeout",
        "client_header_timeout",
        "client_keep_alive_timeout",
        "upstream_keep_alive_timeout",
        "websocket_idle_timeout",
        "new_route_retry_period",
        "error_page_timeout",
        "stop_timeout",
    )
    def _validate_seconds(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"{proposal.trait.name} must be 0 or more seconds, not {proposal.value}")
        return proposal.value

    _server = None

    def options(self):
        """The data path's settings, from the current configuration."""
        return ProxyOptions(
            connect_timeout=self.connect_timeout,
            response_header_timeout=self.response_header_timeout,
            idle_timeout=self.idle_timeout,
            client_header_timeout=self.client_header_timeout,
            client_keep_alive_timeout=self.client_keep_alive_timeout,
            upstream_keep_alive_timeout=self.upstream_keep_alive_timeout,
            websocket_idle_timeout=self.websocket_idle_timeout,
            new_route_retry_period=self.new_route_retry_period,
            error_page_timeout=self.error_page_timeout,
            max_header_size=self.max_header_size,
            max_url_size=self.max_url_size,
            max_header_count=self.max_header_count,
            max_client_connections=self.max_client_connections,
            health_check_path=self.health_check_path,
        )

    def _upstream_ssl_context(self):
        """TLS settings for https targets: internal_ssl's client identity, or the system CAs."""
        app = self.app
        if app is not None and getattr(app, "internal_ssl", False):
            certs = app.internal_proxy_certs["proxy-client"]
            return make_ssl_context(
                certs["keyfile"],
                certs["certfile"],
                cafile=app.internal_trust_bundles["proxy-client-ca"],
            )
        return ssl.create_default_context()

    def _public_ssl_context(self):
        if not (self.ssl_cert and self.ssl_key):
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ssl_cert, self.ssl_key)
        return context

    def _error_target(self):
        """Where the Hub serves its error pages, or None without a Hub."""
        if self.hub is None:
            return None
        return self.hub.url.rstrip("/") + "/error/"

    async def start(self):
        """Listen on ``public_url`` inside the Hub's event loop.

        Returns once the listener is bound. Raises OSError naming the address
        when it cannot bind, so the Hub exits instead of running unreachable.
        """
        if self._server is not None:
            return
        server = ProxyServer(
            routes=self.routes,
            activity=self.activity,
            stats=self.stats,
            options=self.options(),
            log=self.log,
            upstream_ssl=self._upstream_ssl_context(),
            error_target=self._error_target(),
            access_log=self._access_logger() if self.access_log else None,
        )
        bound_url = await server.listen(
            self.public_url,
            ssl_context=self._public_ssl_context(),
            unix_socket_mode=self.unix_socket_mode,
        )
        self._server = server
        if bound_url != self.public_url:
            self.public_url = bound_url
        self.log.info("InProcessProxy listening on %s", self.public_url)

    async def stop(self):
        """Stop accepting, let in-flight requests finish (up to stop_timeout), close the rest.

        Idempotent. The route table is kept: the Hub may still call the route
        API after stopping the proxy.
        """
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(self.stop_timeout)
        self.log.info("InProcessProxy stopped")

    def _access_logger(self):
        log = self.log

        def log_access(exchange, seconds):
            if not log.isEnabledFor(logging.DEBUG):
                return
            route = exchange.route
            user = route.data.get("user", "") if route is not None else ""
            log.debug(
                "%d %s %s (%s@%s) %.2fms -> %s",
                exchange.status,
                exchange.method.decode("ascii"),
                _scrub_uri(exchange.target.decode("utf-8", "replace")),
                user,
                exchange.client.peer.decode("ascii") or "unix",
                seconds * 1000,
                route.target if route is not None else "proxy",
            )

        return log_access

    @property
    def server(self):
        """The running ProxyServer, or None before start() and after stop()."""
        return self._server

    def validate_routespec(self, routespec):
        """JupyterHub's checks, with a ValueError (not AttributeError) for a non-string."""
        if not isinstance(routespec, str):
            raise ValueError(f"Invalid routespec {routespec!r}: must be a string")
        return super().validate_routespec(routespec)

    async def add_route(self, routespec, target, data):
        """Add or replace a route; effective when it returns.

        Raises:
            ValueError: naming the routespec, for a malformed routespec or
                target; nothing is changed then.
        """
        routespec = self.validate_routespec(routespec)
        try:
            endpoint = parse_target(target)
        except ValueError as e:
            raise ValueError(f"Cannot add route {routespec!r}: {e}") from None
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise ValueError(f"Cannot add route {routespec!r}: data must be a dict, not {data!r}")
        started = time.perf_counter()
        previous = self.routes.get(routespec)
        # the Hub re-adds extra_routes on every check_routes: an unchanged
        # target keeps its age, so its connects are not retried as a new one's
        added_at = previous.added_at if previous is not None and previous.target == target else time.monotonic()
        route = self.routes.add(routespec, target, dict(data), added_at)
        route.endpoint = endpoint
        last_activity = self.activity.isoformat(routespec)
        if last_activity is not None:
            # a replacement keeps the activity recorded under its routespec
            route.listed_data = listed = route.data.copy()
            listed["last_activity"] = last_activity
        self.stats.route_ops["add"].observe(time.perf_counter() - started)
        self.log.debug("Route added %s -> %s", routespec, target)

    async def delete_route(self, routespec):
        """Delete the route stored under exactly this routespec; absent is fine."""
        routespec = self.validate_routespec(routespec)
        started = time.perf_counter()
        removed = self.routes.remove(routespec)
        self.stats.route_ops["delete"].observe(time.perf_counter() - started)
        if removed is not None:
            self.activity.forget(routespec)
            self.log.debug("Route deleted %s", routespec)

    @staticmethod
    def _route_dict(route, activity_iso):
        """A fresh copy of a route in the shape of ``jupyterhub.proxy.Proxy``.

        ``data`` is copied one level deep: JupyterHub's route data is flat.
        """
        data = route.data.copy()
        if activity_iso is not None:
            data["last_activity"] = activity_iso
        return {"routespec": route.routespec, "target": route.target, "data": data}

    async def get_all_routes(self):
        """All routes as ``{routespec: {routespec, target, data}}``, as fresh copies."""
        started = time.perf_counter()
        table = self.routes
        for routespec, timestamp in self.activity.changes(table.routespecs()):
            route = table.get(routespec)
            route.listed_data = listed = route.data.copy()
            listed["last_activity"] = isoformat(timestamp)
        # the Hub lists every route each last_activity_interval: one copy of
        # one dict per route, in a comprehension
        routes = {
            routespec: {"routespec": routespec, "target": route.target, "data": route.listed_data.copy()}
            for routespec, route in table.items()
        }
        self.stats.route_ops["get_all"].observe(time.perf_counter() - started)
        return routes

    async def get_route(self, routespec):
        """One route as ``{routespec, target, data}``, or None."""
        routespec = self.validate_routespec(routespec)
        route = self.routes.get(routespec)
        if route is None:
            return None
        return self._route_dict(route, self.activity.isoformat(routespec))
