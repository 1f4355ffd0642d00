"""The data plane as front-ends drive it: one route table, one listener, one owner thread.

Front-ends (the Hub plugin in ``proxy.py``, the CHP-compatible process in
``standalone``) turn their configuration into ``ProxyOptions`` and drive a
``DataPlane``: start and stop the listener, change and list routes, read
metrics. It imports neither JupyterHub nor traitlets.

The cross-thread rule, in one place: the data plane's objects belong to the
thread running its event loop. With ``thread=True`` that is a ``LoopThread``
of its own from ``start()`` to ``stop()``, and every route call is handed to
it and awaited (so ``add_route`` is effective when it returns, and a lookup
never sees a half-changed table); otherwise, and before ``start()`` and after
``stop()`` (the Hub changes routes then too), it is the caller's thread.
"""

from typing import NamedTuple

from .loopthread import LoopThread, loop_factory
from .metrics import ProxyStats
from .routetable import RouteTable
from .server import ProxyServer

__all__ = ["DataPlane", "MetricsSnapshot"]

#: seconds the metrics collector waits for the proxy thread to take a snapshot
SNAPSHOT_TIMEOUT = 5.0
#: seconds to join the proxy thread once its server has stopped (its loop
#: then only has to run what was handed to it before)
THREAD_JOIN_TIMEOUT = 5.0


class MetricsSnapshot(NamedTuple):
    """What the metrics collector exports, read at one moment on the owner thread."""

    stats: ProxyStats
    routes: int
    clients: int
    tunnels: int
    idle_upstreams: int
    busy_upstreams: int


class DataPlane:
    """A route table and, while started, a ProxyServer serving it.

    Args:
        options: ProxyOptions.
        log: the front-end's logger.
        host_routing: routespecs start with a host.
        activity: an ActivityTracker (tests inject one with a clock).
        thread: serve on a thread and event loop of its own.
        event_loop: the thread's loop, "auto" (uvloop where installed),
            "uvloop" or "asyncio" (see ``loopthread.loop_factory``).
    """

    def __init__(self, *, options, log, host_routing=False, activity=None, thread=False, event_loop="auto"):
        self.log = log
        self.stats = ProxyStats()
        self.routes = RouteTable(host_routing=host_routing, activity=activity, stats=self.stats)
        self.configure(options=options, thread=thread, event_loop=event_loop)
        #: the running ProxyServer, or None
        self.server = None
        self._loop_thread = None

    def configure(self, *, options, thread, event_loop):
        """Change the settings the next ``start()`` uses."""
        self.options = options
        self.thread = thread
        self.new_loop = loop_factory(event_loop) if thread else None

    # --- lifecycle ------------------------------------------------------------

    async def start(
        self,
        public_url,
        *,
        ssl_context=None,
        unix_socket_mode=0o600,
        upstream_ssl,
        error_target,
        error_files=None,
        access_log=None,
    ):
        """Bind ``public_url`` and serve it; returns the bound URL (its port filled in).

        ``error_target`` is where error pages are fetched (``{hub.url}error/``),
        ``error_files`` pages read from files instead (``errorpages.ErrorPages``).

        Raises:
            OSError: naming the address, when it cannot be bound.
        """
        server = ProxyServer(
            routes=self.routes,
            options=self.options,
            log=self.log,
            upstream_ssl=upstream_ssl,
            error_target=error_target,
            error_files=error_files,
            access_log=access_log,
        )
        listening = server.listen(public_url, ssl_context=ssl_context, unix_socket_mode=unix_socket_mode)
        if not self.thread:
            bound_url = await listening
        else:
            loop_thread = LoopThread(name="inprocess-proxy", new_loop=self.new_loop, log=self.log)
            loop_thread.start()
            try:
                bound_url = await loop_thread.run(listening)
            except BaseException:
                loop_thread.stop(THREAD_JOIN_TIMEOUT)
                raise
            self._loop_thread = loop_thread
        self.server = server
        return bound_url

    async def stop(self, timeout):
        """Stop accepting, let in-flight requests finish up to ``timeout`` seconds, close the rest.

        With a thread, joins it; the route table stays, owned by the caller again.
        """
        server, self.server = self.server, None
        if server is None:
            return
        loop_thread = self._loop_thread
        if loop_thread is None:
            await server.stop(timeout)
            return
        try:
            await loop_thread.run(server.stop(timeout))
        finally:
            # route calls handed over before this run first; the caller's
            # thread is blocked meanwhile, so none can be handed over after
            loop_thread.stop(THREAD_JOIN_TIMEOUT)
            self._loop_thread = None

    @property
    def loop_thread(self):
        """The LoopThread serving, or None."""
        return self._loop_thread

    # --- routes (see the module docstring for which thread runs them) --------

    async def _call(self, fn, *args):
        loop_thread = self._loop_thread
        if loop_thread is None:
            return fn(*args)
        return await loop_thread.call(fn, *args)

    async def add_route(self, routespec, target, data):
        """Add or replace a route; effective when it returns. ValueError for bad input."""
        return await self._call(self.routes.add, routespec, target, data)

    async def delete_route(self, routespec):
        """Delete a route; absent is fine. Returns the removed Route or None."""
        return await self._call(self.routes.delete, routespec)

    async def get_route(self, routespec):
        """``{routespec, target, data}`` or None."""
        return await self._call(self.routes.get, routespec)

    async def get_all_routes(self, inactive_since=None):
        """``{routespec: {routespec, target, data}}``, fresh copies."""
        return await self._call(self.routes.list, inactive_since)

    async def replace_routes(self, routes):
        """Make the table hold exactly ``{routespec: (target, data)}`` in one step on the owner
        thread (a request never sees it half-replaced); ``{routespec: ValueError}`` of those refused."""
        return await self._call(self.routes.replace, routes)

    async def export_routes(self):
        """``{routespec: (target, data)}`` as added, without activity."""
        return await self._call(self.routes.export)

    async def activity_times(self):
        """A copy of ``{routespec: time of last traffic}`` as recorded here."""
        return await self._call(dict, self.routes.activity.last)

    async def merge_activity(self, times):
        """Take the newer of each ``{routespec: time}`` and the time recorded here; returns what was taken."""
        return await self._call(self.routes.merge_activity, times)

    # --- metrics --------------------------------------------------------------

    def metrics_snapshot(self):
        """A MetricsSnapshot, taken on the thread that owns the data plane."""
        loop_thread = self._loop_thread
        if loop_thread is None or loop_thread.is_current():
            return self._snapshot()
        return loop_thread.call_blocking(self._snapshot, timeout=SNAPSHOT_TIMEOUT)

    def _snapshot(self):
        server = self.server
        if server is None:
            return MetricsSnapshot(self.stats.copy(), len(self.routes), 0, 0, 0, 0)
        idle = server.pool.idle_count()
        return MetricsSnapshot(
            self.stats.copy(),
            len(self.routes),
            len(server.clients),
            len(server.tunnels),
            idle,
            len(server.pool) - idle,
        )
