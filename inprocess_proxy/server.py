"""The listener: binds the public address, tracks connections, enforces deadlines, stops.

One ``ProxyServer`` exists per start of a front-end. It owns the upstream
pool, the error pages, the set of client connections and tunnels, and a
sweeper task that wakes a few times a second to enforce every timeout, record
activity of long transfers and expire idle pooled connections, so that the
per-request path never arms a timer.
"""

import asyncio
import errno
import os
import socket
import stat
import time
from urllib.parse import unquote, urlsplit, urlunsplit

from .errorpages import ErrorPages
from .forward import ClientConnection, ExchangeContext
from .upstream import UpstreamPool
from .websocket import Tunnel

__all__ = ["ProxyServer", "bind", "remove_stale_socket"]

#: seconds between warnings about connections refused at the limit, so a
#: flood does not become a flood of log lines
REFUSED_WARNING_INTERVAL = 10.0


def sweep_interval(options):
    """Seconds between sweeps: a quarter of the shortest timeout, within [0.05, 1]."""
    timeouts = [
        t
        for t in (
            options.connect_timeout,
            options.response_header_timeout,
            options.idle_timeout,
            options.client_header_timeout,
            options.client_keep_alive_timeout,
            options.upstream_keep_alive_timeout,
            options.websocket_idle_timeout,
        )
        if t > 0
    ]
    return min(1.0, max(0.05, min(timeouts, default=4.0) / 4))


class ProxyServer:
    """Serve the proxy on the running event loop.

    Args:
        routes: the RouteTable requests are matched against.
        options: ProxyOptions.
        log: the front-end's logger.
        upstream_ssl: SSLContext for https targets.
        error_target: ``{hub.url}error/`` or None.
        error_files: error pages read from files, instead of an error target
            (see ``errorpages.ErrorPages``), or None.
        access_log: called as ``access_log(exchange, seconds)`` for every
            answered request, or None.
    """

    def __init__(self, *, routes, options, log, upstream_ssl, error_target, error_files=None, access_log=None):
        self.routes = routes
        self.activity = routes.activity
        self.stats = routes.stats
        self.options = options
        self.log = log
        self.access_log = access_log
        self.pool = UpstreamPool(
            connect_timeout=options.connect_timeout,
            keep_alive_timeout=options.upstream_keep_alive_timeout,
            ssl_context=upstream_ssl,
            log=log,
        )
        self.error_pages = ErrorPages(self.pool, error_target, options.error_page_timeout, log, error_files)
        self.clients = set()
        self.tunnels = set()
        #: what client connections work with, set when the listener is bound
        self.context = None
        self.stopping = False
        self.tick = sweep_interval(options)
        self._listener = None
        self._unix_path = None
        self._sweeper = None
        self._drained = None
        #: connections refused at max_client_connections since the last warning
        self._refused = 0
        self._refused_warned_at = None

    def client_count(self):
        return len(self.clients) + len(self.tunnels)

    def refused_connection(self):
        """Count a connection refused at the limit; warn at most every 10 s, not per connection."""
        self._refused += 1
        now = time.monotonic()
        if self._refused_warned_at is None or now - self._refused_warned_at >= REFUSED_WARNING_INTERVAL:
            self.log.warning(
                "Refused %d client connections: max_client_connections=%d reached",
                self._refused,
                self.options.max_client_connections,
            )
            self._refused = 0
            self._refused_warned_at = now

    # --- start --------------------------------------------------------------

    async def listen(self, public_url, *, ssl_context=None, unix_socket_mode=0o600):
        """Bind ``public_url`` (``http``, ``https`` or ``http+unix``) and start serving.

        Returns the URL actually bound (the port filled in when it was 0).

        Raises:
            OSError: naming the address, if it cannot be bound.
        """
        self.context = ExchangeContext(
            trie=self.routes.trie,
            pool=self.pool,
            activity=self.activity,
            error_pages=self.error_pages,
            stats=self.stats,
            options=self.options,
            log=self.log,
            access_log=self.access_log,
            tls=ssl_context is not None,
            start_tunnel=self.start_tunnel,
        )
        self._listener, bound_url, self._unix_path = await bind(
            public_url,
            self._new_client,
            ssl_context=ssl_context,
            unix_socket_mode=unix_socket_mode,
            what="InProcessProxy",
        )
        self._sweeper = asyncio.ensure_future(self._sweep_forever())
        return bound_url

    def _new_client(self):
        return ClientConnection(self, self.context)

    # --- tunnels --------------------------------------------------------------

    def start_tunnel(self, client, upstream_conn, routespec, upstream_rest):
        """Join a client and a target after the target's 101."""
        self.clients.discard(client)
        tunnel = Tunnel(client.transport, upstream_conn.transport, routespec, self._tunnel_closed)
        self.tunnels.add(tunnel)
        tunnel.start(to_client=upstream_rest, to_upstream=bytes(client.upgrade_rest or b""))

    def _count_tunnel_bytes(self, tunnel):
        from_client, from_target = tunnel.take_byte_counts()
        self.stats.bytes_in += from_client
        self.stats.bytes_out += from_target

    def _tunnel_closed(self, tunnel):
        self._count_tunnel_bytes(tunnel)
        self.tunnels.discard(tunnel)
        self._check_drained()

    def client_closed(self, client):
        self.clients.discard(client)
        self._check_drained()

    # --- deadlines ------------------------------------------------------------

    async def _sweep_forever(self):
        while True:
            await asyncio.sleep(self.tick)
            try:
                # time.monotonic(), the clock deadlines are set by: uvloop's
                # loop.time() is libuv's, cached per iteration in milliseconds
                self.sweep(time.monotonic())
            except Exception:
                self.log.exception("InProcessProxy sweep failed")

    def sweep(self, now):
        """Enforce timeouts, record activity of ongoing transfers, expire idle upstreams.

        ``now`` is ``time.monotonic()``.
        """
        for client in list(self.clients):
            client.check_timeouts(now)
        if self.tunnels:
            self._sweep_tunnels()
        self.pool.sweep(now)

    def _sweep_tunnels(self):
        last = self.activity.last
        wall = time.time()
        idle_ticks_allowed = self.options.websocket_idle_timeout / self.tick
        for tunnel in list(self.tunnels):
            self._count_tunnel_bytes(tunnel)
            if tunnel.moved:
                tunnel.moved = False
                tunnel.idle_ticks = 0
                last[tunnel.routespec] = wall
            else:
                tunnel.idle_ticks += 1
                if idle_ticks_allowed and tunnel.idle_ticks > idle_ticks_allowed:
                    self.log.debug("Closing websocket tunnel on %s: idle", tunnel.routespec)
                    tunnel.close()

    # --- stop -----------------------------------------------------------------

    def _check_drained(self):
        if self._drained is not None and not self.clients and not self.tunnels:
            self._drained.set()

    async def stop(self, timeout):
        """Stop accepting, finish in-flight requests up to ``timeout`` seconds, close all."""
        if self.stopping:
            return
        self.stopping = True
        self._drained = asyncio.Event()
        if self._listener is not None:
            self._listener.close()
        for tunnel in list(self.tunnels):
            tunnel.close()
        for client in list(self.clients):
            client.shutdown()
        self._check_drained()
        try:
            if not self._drained.is_set():
                await asyncio.wait_for(self._drained.wait(), timeout)
        except asyncio.TimeoutError:
            self.log.warning(
                "InProcessProxy stop: closing %d connections still busy after %gs",
                len(self.clients) + len(self.tunnels),
                timeout,
            )
            for client in list(self.clients):
                client.transport.abort()
            for tunnel in list(self.tunnels):
                tunnel.abort()
        self.pool.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._unix_path is not None:
            remove_stale_socket(self._unix_path)


async def bind(url, protocol_factory, *, ssl_context=None, unix_socket_mode=0o600, what="InProcessProxy"):
    """Listen on ``url`` (``http``, ``https`` or ``http+unix``) with ``protocol_factory``.

    A stale socket file left by a previous run is removed first. Returns
    ``(server, bound_url, unix_path)``: the asyncio server, the URL actually
    bound (the port filled in when it was 0) and the socket path (or None).

    Raises:
        OSError: naming ``what`` and the address, if it cannot be bound.
    """
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    try:
        if parts.scheme == "http+unix":
            path = unquote(parts.netloc)
            remove_stale_socket(path)
            server = await loop.create_unix_server(protocol_factory, path, ssl=ssl_context)
            os.chmod(path, unix_socket_mode)
            return server, url, path
        host = parts.hostname or None
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port if parts.port is not None else default_port
        server = await loop.create_server(
            protocol_factory, host, port, ssl=ssl_context, reuse_address=True, backlog=1024
        )
    except OSError as e:
        raise OSError(e.errno, f"{what} cannot listen on {url}: {e.strerror or e}") from e
    bound_url = url
    if port == 0:
        port = server.sockets[0].getsockname()[1]
        netloc = f"{parts.hostname}:{port}" if parts.hostname else f":{port}"
        if parts.hostname and ":" in parts.hostname:
            netloc = f"[{parts.hostname}]:{port}"
        bound_url = urlunsplit(parts._replace(netloc=netloc))
    return server, bound_url, None


def remove_stale_socket(path):
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except FileNotFoundError:
        return
    else:
        raise OSError(errno.EADDRINUSE, f"{path} is in use by another process")
    finally:
        probe.close()
