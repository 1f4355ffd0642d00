"""InProcessProxy: JupyterHub's Proxy API, the Hub plugin face of the data plane.

The only module that imports JupyterHub or traitlets. It turns configuration
into a ``ProxyOptions`` object and drives a ``plane.DataPlane``: routes (which
work before ``start()`` and after ``stop()``, because the Hub calls the route
API then too), the listener on a thread of its own or on the Hub's loop, and
metrics in the Hub's registry.
"""

import dataclasses
import gc
import logging
import ssl
import sys

from jupyterhub.log import _scrub_uri
from jupyterhub.metrics import metrics_prefix
from jupyterhub.proxy import Proxy
from jupyterhub.utils import make_ssl_context
from traitlets import Bool, Enum, Float, Integer, TraitError, Unicode, observe, validate

from . import metrics
from .loopthread import loop_factory
from .options import ProxyOptions
from .plane import DataPlane

__all__ = ["InProcessProxy"]

#: whether this process froze its objects already (InProcessProxy.freeze_gc)
_gc_frozen = False

#: the data plane's defaults: the one place each is written
_DEFAULTS = ProxyOptions()


def _option(trait_type, name, help):
    """A config trait for the ProxyOptions field ``name``, with its default."""
    return trait_type(getattr(_DEFAULTS, name), config=True, help=help)


def _seconds(name, help):
    return _option(Float, name, help)


class InProcessProxy(Proxy):
    """A proxy that runs inside the Hub's own process and event loop.

    No Node.js, no second process: the Hub's route changes are dictionary
    operations, activity is recorded in memory, and HTTP and WebSocket traffic
    is forwarded by asyncio protocols on the Hub's event loop.

    Enable with ``c.JupyterHub.proxy_class = "inprocess"``.
    """

    connect_timeout = _seconds(
        "connect_timeout",
        """Seconds allowed for opening a connection (TCP and TLS) to a route's target.

        If a target does not accept in time, the client
        gets a 503.
        """,
    )
    response_header_timeout = _seconds(
        "response_header_timeout",
        """Seconds a target may take to start its response (send its status line and headers).

        Past it the client gets a 504. There is no limit
        on the total time of a response: downloads and event streams live as
        long as bytes keep moving (see idle_timeout).
        """,
    )
    idle_timeout = _seconds(
        "idle_timeout",
        """Seconds a request or response body may go without a byte in either direction.

        0 disables. JupyterHub's spawn progress stream
        sends a keepalive every 8 seconds, so it is never idle this long.
        Before the response starts, response_header_timeout applies instead.
        """,
    )
    client_header_timeout = _seconds(
        "client_header_timeout",
        """Seconds a client has to send a complete request line and headers.

        Slow or stalled clients are disconnected, so
        they cannot hold connections open by dribbling headers.
        """,
    )
    client_keep_alive_timeout = _seconds(
        "client_keep_alive_timeout",
        """Seconds an idle keep-alive connection from a client is kept open.

        Longer than the 60 seconds of common load balancers, so that the balancer, not the proxy, closes idle
        connections (which avoids the race that makes balancers answer 502).
        """,
    )
    upstream_keep_alive_timeout = _seconds(
        "upstream_keep_alive_timeout",
        """Seconds an idle pooled connection to a target is kept for reuse.

        Shorter than the 5 seconds of Node's HTTP server, the shortest keep-alive timeout among common backends, so the proxy
        closes idle connections before a backend does. If a backend closed a
        pooled connection anyway, a request with an idempotent method (GET,
        HEAD, PUT, DELETE, OPTIONS) and no body is sent again on a new one.
        """,
    )
    websocket_idle_timeout = _seconds(
        "websocket_idle_timeout",
        """Seconds a websocket tunnel may stay silent in both directions before it is closed.

        0 means never, the default: kernels and terminals can sit silent for
        hours and must not be cut.
        """,
    )
    new_route_retry_period = _seconds(
        "new_route_retry_period",
        """Seconds after a route is added during which a refused connection to its target is retried.

        A server that was just started is often still
        binding its port; the request waits briefly instead of failing with
        503. Older routes fail at once.
        """,
    )
    error_page_timeout = _seconds(
        "error_page_timeout",
        """Seconds to wait for the Hub's error page (``/hub/error/<code>``).

        Past it, or if the Hub cannot answer, the client
        gets a short plain-text error instead.
        """,
    )
    stop_timeout = _seconds(
        "stop_timeout",
        """Seconds in-flight requests may take to finish when the Hub shuts down.

        Websocket tunnels and idle connections are closed
        at once; requests still running after this are cut.
        """,
    )
    max_header_size = _option(
        Integer,
        "max_header_size",
        """Largest request head (request line and all headers) accepted, in bytes.

        Larger heads get 431.
        """,
    )
    max_url_size = _option(
        Integer,
        "max_url_size",
        """Longest request target (path and query) accepted, in bytes.

        Longer targets get 414.
        """,
    )
    max_header_count = _option(
        Integer,
        "max_header_count",
        """Most header fields accepted in one request.

        More get 431.
        """,
    )
    max_client_connections = _option(
        Integer,
        "max_client_connections",
        """Most client connections open at once; 0 means no limit.

        Connections beyond it get 503 and are closed, so a
        flood cannot exhaust the Hub's file descriptors; a warning with the
        number refused is logged at most every 10 seconds.
        """,
    )
    health_check_path = _option(
        Unicode,
        "health_check_path",
        """Path the proxy answers itself with ``200 {"status": "OK"}``, before routing.

        The default, ``/_chp_healthz``, is the path configurable-http-proxy uses, so
        existing load-balancer checks keep working. Set to an empty string to
        route that path like any other.
        """,
    )
    unix_socket_mode = Integer(
        0o600,
        config=True,
        help="""Permissions of the socket file when the Hub's bind_url is ``http+unix://``.

        The default lets only the Hub's user connect; use 0o660 to let a
        front-end server in the same group connect. A stale socket file left by a
        previous run is removed at start.
        """,
    )

    access_log = Bool(
        False,
        config=True,
        help="""Log every request the proxy answers, at debug level, in the Hub's access-log format.

        Lines look like ``200 GET /user/ann/api/status (ann@10.0.0.5) 1.52ms -> http://127.0.0.1:51234``,
        with tokens in URLs scrubbed as the Hub scrubs its own. They appear only when the
        Hub logs at debug level (``c.JupyterHub.log_level = "DEBUG"``).
        """,
    )

    thread = Bool(
        True,
        config=True,
        help="""Run the data path on a thread and event loop of its own, inside the Hub's process.

        Then the Hub's own work (API replies, spawns, database, garbage
        collection) does not stall users' traffic: with a busy Hub, proxied
        requests keep CHP-like latency. False runs the data path on the Hub's
        event loop, one thread for everything: simpler to debug, and no GIL
        switching between the two.
        """,
    )
    event_loop = Enum(
        ["auto", "uvloop", "asyncio"],
        "auto",
        config=True,
        help="""The event loop of the proxy's thread (with ``thread = True``).

        ``auto`` uses uvloop where it is installed (it is a dependency on
        Linux and macOS; faster, see the performance page) and asyncio's own
        loop otherwise; ``uvloop`` fails at start without it.
        """,
    )
    switch_interval = Float(
        0.0005,
        config=True,
        help="""Python's thread switch interval (``sys.setswitchinterval``) set at start, in seconds; 0 leaves it alone.

        With ``thread = True`` the Hub and the proxy take turns holding the
        GIL: a busy Hub thread keeps it for up to this long before the proxy's
        thread may run, which is what a proxied request then waits. Python's
        default of 5 ms adds up to tens of milliseconds per request under a
        busy Hub. It is process-wide: it applies to every thread of the Hub,
        and is logged when set. Not set with ``thread = False``.
        """,
    )

    freeze_gc = Bool(
        True,
        config=True,
        help="""At start, move every object the Hub has made so far into gc's permanent generation (``gc.freeze()``).

        A full garbage collection walks every object of the process while
        holding the GIL, which stalls the proxy's thread too: 70 to 90 ms with
        a Hub of 2,000 users, the slowest proxied requests of a busy Hub.
        Objects made before the proxy starts (modules, configuration, the
        database's metadata) live as long as the Hub; frozen, later
        collections skip them, and the pauses drop below 10 ms. What the Hub
        does is unchanged; the cost is that cyclic garbage among those
        objects would never be freed, which for start-up objects is nothing.
        Done once per process, at the first start, and only with
        ``thread = True``; logged when done. False leaves the garbage
        collector alone.
        """,
    )

    def __init__(self, *, activity=None, **kwargs):
        """``activity``: an ActivityTracker to use (tests inject one with a clock)."""
        super().__init__(**kwargs)
        self.plane = DataPlane(
            options=self.options(),
            log=self.log,
            host_routing=self.host_routing,
            activity=activity,
            thread=self.thread,
            event_loop=self.event_loop,
        )
        #: the switch interval to restore at stop(), while ours is set
        self._saved_switch_interval = None
        metrics.register(self.plane, metrics_prefix)

    @property
    def routes(self):
        """The RouteTrie requests are matched against."""
        return self.plane.routes.trie

    @property
    def activity(self):
        """The ActivityTracker: last activity per routespec."""
        return self.plane.routes.activity

    @property
    def stats(self):
        """The ProxyStats the data path counts into."""
        return self.plane.stats

    @property
    def server(self):
        """The running ProxyServer, or None before start() and after stop()."""
        return self.plane.server

    @observe("host_routing")
    def _host_routing_changed(self, change):
        plane = getattr(self, "plane", None)
        if plane is not None:
            try:
                plane.routes.host_routing = change.new
            except ValueError as e:
                raise TraitError(str(e)) from None

    @validate("should_start")
    def _validate_should_start(self, proposal):
        if not proposal.value:
            raise TraitError(
                "InProcessProxy runs inside the Hub and only the Hub can start it, so"
                " Proxy.should_start = False is not supported. To run the proxy as its"
                " own process, use ConfigurableHTTPProxy with the inprocess-proxy command"
                " (docs: 'Run it as its own process')."
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
        "switch_interval",
    )
    def _validate_seconds(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"{proposal.trait.name} must be 0 or more seconds, not {proposal.value}")
        return proposal.value

    @validate("event_loop")
    def _validate_event_loop(self, proposal):
        try:
            loop_factory(proposal.value)
        except ValueError as e:
            raise TraitError(f"event_loop: {e}") from None
        return proposal.value

    def options(self):
        """The data path's settings, from the current configuration."""
        return ProxyOptions(
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(ProxyOptions) if self.has_trait(field.name)}
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
        """Listen on ``public_url``, on the proxy's own thread (or the Hub's loop).

        Returns once the listener is bound. Raises OSError naming the address
        when it cannot bind, so the Hub exits instead of running unreachable.
        """
        plane = self.plane
        if plane.server is not None:
            return
        # traits may have changed since __init__
        plane.configure(options=self.options(), thread=self.thread, event_loop=self.event_loop)
        bound_url = await plane.start(
            self.public_url,
            ssl_context=self._public_ssl_context(),
            unix_socket_mode=self.unix_socket_mode,
            upstream_ssl=self._upstream_ssl_context(),
            error_target=self._error_target(),
            access_log=self._access_logger() if self.access_log else None,
        )
        if bound_url != self.public_url:
            self.public_url = bound_url
        where = "the Hub's event loop"
        if plane.thread:
            where = f"its own thread ({type(plane.loop_thread.loop).__module__.split('.')[0]} event loop)"
            self._set_switch_interval()
            if self.freeze_gc:
                self._freeze_gc()
        self.log.info("InProcessProxy listening on %s, on %s", self.public_url, where)

    def _set_switch_interval(self):
        if not self.switch_interval:
            return
        self._saved_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval)
        self.log.info(
            "InProcessProxy set Python's thread switch interval to %gs (was %gs) for the whole process;"
            " c.InProcessProxy.switch_interval = 0 leaves it alone",
            self.switch_interval,
            self._saved_switch_interval,
        )

    def _freeze_gc(self):
        global _gc_frozen
        if _gc_frozen:
            # once per process: what exists when the Hub first starts its proxy
            return
        _gc_frozen = True
        gc.collect()
        gc.freeze()
        self.log.info(
            "InProcessProxy froze %d objects of the Hub's process (gc.freeze()): full garbage collections"
            " skip them from now on; c.InProcessProxy.freeze_gc = False leaves gc alone",
            gc.get_freeze_count(),
        )

    async def stop(self):
        """Stop accepting, let in-flight requests finish (up to stop_timeout), close the rest.

        Idempotent. The route table is kept: the Hub may still call the route
        API after stopping the proxy.
        """
        if self.plane.server is None:
            return
        await self.plane.stop(self.stop_timeout)
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None
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
        await self.plane.add_route(routespec, target, data)
        self.log.debug("Route added %s -> %s", routespec, target)

    async def delete_route(self, routespec):
        """Delete the route stored under exactly this routespec; absent is fine."""
        routespec = self.validate_routespec(routespec)
        if await self.plane.delete_route(routespec) is not None:
            self.log.debug("Route deleted %s", routespec)

    async def get_all_routes(self):
        """All routes as ``{routespec: {routespec, target, data}}``, as fresh copies."""
        return await self.plane.get_all_routes()

    async def get_route(self, routespec):
        """One route as ``{routespec, target, data}``, or None."""
        return await self.plane.get_route(self.validate_routespec(routespec))
