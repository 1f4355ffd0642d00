"""The ``inprocess-proxy`` process: start, serve until SIGTERM or SIGINT, drain, exit.

One thread and one event loop (uvloop where installed) run everything: the
data plane (``DataPlane`` with ``thread=False``), the REST API, the metrics
and redirect endpoints. Routes change only through the REST API, which talks
to a ``RouteStore``; the in-memory store is the data plane itself.

Exit status: 0 after a signal and a drain; 1 when something cannot start (a
bind failure names the address, a bad certificate its file); 2 for a bad
command line (argparse). A second SIGTERM or SIGINT during the drain exits at
once with 1.
"""

import asyncio
import ctypes
import logging
import os
import re
import secrets
import signal
import ssl
import sys
from urllib.parse import urlsplit

from .. import metrics
from ..loopthread import loop_factory
from ..plane import DataPlane
from ..routes import split_host
from ..store import RouteStoreUnavailable
from .api import RoutesAPI
from .cli import parse_args
from .control import ControlServer, Response, error_response

__all__ = ["main"]

#: one line per record: "[I 2026-11-23 08:49:40.177 inprocess-proxy] Route added / -> http://..."
LOG_FORMAT = "[%(levelname)1.1s %(asctime)s.%(msecs)03d inprocess-proxy] %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: the metric families' namespace, as the Hub names its own (jupyterhub_proxy_*)
METRICS_PREFIX = os.environ.get("JUPYTERHUB_METRICS_PREFIX", "jupyterhub")
#: --ssl-protocol values (CHP passes them to node as "<value>_method")
_TLS_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}
#: seconds between attempts to store --default-target while a shared store is away
DEFAULT_TARGET_RETRY = 2.0
#: error page files in --error-path
_ERROR_FILE = re.compile(r"^([1-5][0-9][0-9])\.html$")


class StartupError(Exception):
    """Something the command line names cannot be used; the message says what."""


def make_logger(level):
    """The process's logger: one line per record on stderr, at ``level``."""
    log = logging.getLogger("inprocess_proxy.standalone")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return log


def _tls_options(context, settings):
    """--ssl-protocol, --ssl-ciphers and --ssl-dhparam, which CHP applies to every TLS context."""
    if settings.ssl_protocol and settings.ssl_protocol not in ("SSLv23", "TLS"):
        version = _TLS_VERSIONS.get(settings.ssl_protocol)
        if version is None:
            raise StartupError(f"--ssl-protocol {settings.ssl_protocol}: choose one of {', '.join(_TLS_VERSIONS)}")
        context.minimum_version = context.maximum_version = version
    if settings.ssl_ciphers:
        context.set_ciphers(settings.ssl_ciphers)
    if settings.ssl_dhparam and context.protocol == ssl.PROTOCOL_TLS_SERVER:
        context.load_dh_params(settings.ssl_dhparam)


def server_ssl_context(files, settings, passphrase_variable):
    """The TLS context of a listener (public or API), or None without a key and certificate."""
    if not files.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key, password=os.environ.get(passphrase_variable))
    if files.ca:
        context.load_verify_locations(files.ca)
    if files.request_cert:
        # node's requestCert without rejectUnauthorized asks for a certificate
        # but lets clients without one in; one that is sent must verify
        context.verify_mode = ssl.CERT_REQUIRED if files.reject_unauthorized else ssl.CERT_OPTIONAL
    _tls_options(context, settings)
    return context


def upstream_ssl_context(settings):
    """TLS towards https targets: --client-ssl-* as identity and trust, --insecure to trust anything."""
    files = settings.client_ssl
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
    if files.cert:
        context.load_cert_chain(files.cert, files.key)
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    _tls_options(context, settings)
    return context


def read_error_files(directory):
    """--error-path: ``{status: html}`` from ``<code>.html`` files, ``None: html`` from ``error.html``."""
    files = {}
    for name in os.listdir(directory):
        match = _ERROR_FILE.match(name)
        if match or name == "error.html":
            with open(os.path.join(directory, name), "rb") as f:
                files[int(match.group(1)) if match else None] = f.read()
    return files


def socket_mode():
    """The mode of socket files: what the umask allows (as node's listen() leaves them)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


class MetricsHandler:
    """``GET /metrics``: every metric family of the process's Prometheus registry."""

    max_body = 0

    def __init__(self, registry):
        self.registry = registry

    def head_received(self, request):
        if request.path != "/metrics":
            return error_response(404, "Not Found: metrics are at /metrics")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, f"Method not supported: {request.method}")._replace(headers=((b"Allow", b"GET"),))
        return None

    async def handle(self, request):
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())


class RedirectHandler:
    """--redirect-port: every request gets a 301 to the same URL on https."""

    max_body = 65536

    def __init__(self, port):
        self.port = port

    def head_received(self, request):
        host = request.headers.get("host")
        if not host:
            return Response(
                400,
                f"This server is HTTPS-only on port {self.port}, but an HTTP request was made"
                " and the host could not be determined from the request.".encode(),
                b"text/plain; charset=utf-8",
            )
        netloc = split_host(host) + ("" if self.port == 443 else f":{self.port}")
        location = f"https://{netloc}{request.target}"
        return Response(301, headers=((b"Location", location.encode("latin-1")),))

    async def handle(self, request):  # pragma: no cover - head_received answers every request
        return self.head_received(request)


class StandaloneProxy:
    """One run of the process: what ``settings`` asks for, started, served and stopped."""

    def __init__(self, settings, log):
        self.settings = settings
        self.log = log
        self.plane = None
        #: the shared route store (--route-store), or None: routes in memory
        self.store = None
        self._default_target_task = None
        self.servers = []
        self.pid_file = None
        self.signalled = None
        self._stop = asyncio.Event()

    async def run(self):
        """Start, serve until a signal, drain; returns the exit status."""
        try:
            await self.start()
        except (StartupError, OSError, ssl.SSLError, ValueError) as e:
            self.log.error("Cannot start: %s", e)
            await self.stop(0)
            return 1
        await self._stop.wait()
        timeout = self.settings.options.stop_timeout
        self.log.info("%s: stopping; in-flight requests have %g s to finish", self.signalled, timeout)
        await self.stop(timeout)
        self.log.info("Stopped")
        return 0

    async def start(self):
        settings = self.settings
        log = self.log
        loop = asyncio.get_running_loop()
        token = os.environ.get("CONFIGPROXY_AUTH_TOKEN", "")
        if not token:
            token = secrets.token_hex(32)
            log.warning(
                "CONFIGPROXY_AUTH_TOKEN is not set; configurable-http-proxy would run its REST API"
                " unauthenticated, so this run generated a token: Authorization: token %s",
                token,
            )
        public_ssl = server_ssl_context(settings.ssl, settings, "CONFIGPROXY_SSL_KEY_PASSPHRASE")
        api_ssl = server_ssl_context(settings.api_ssl, settings, "CONFIGPROXY_API_SSL_KEY_PASSPHRASE")
        error_files = read_error_files(settings.error_path) if settings.error_path else None
        mode = socket_mode()

        self.plane = plane = DataPlane(
            options=settings.options, log=log, host_routing=settings.host_routing, thread=False
        )
        store = plane
        if settings.route_store:
            # imported here: redis-py is needed only with the flag
            from ..redisstore import RedisRouteStore

            # logs the URL with its password masked; the health check answers 503 until loaded
            self.store = store = RedisRouteStore(plane, settings.route_store, log=log)
        routes_api = RoutesAPI(store, host_routing=settings.host_routing, auth_token=token, log=log)
        if settings.default_target:
            # checked here, so a bad one fails the start with or without a shared store
            try:
                plane.routes.check("/", settings.default_target, {})
            except ValueError as e:
                raise StartupError(f"--default-target: {e}") from None
            if self.store is None:
                await routes_api.add_route("/", settings.default_target, {})
        if self.store is not None:
            await self.store.start()
            if settings.default_target:
                self._default_target_task = loop.create_task(self._add_default_target(routes_api))
        public_url = await plane.start(
            settings.public_url,
            ssl_context=public_ssl,
            unix_socket_mode=mode,
            upstream_ssl=upstream_ssl_context(settings),
            error_target=settings.error_target,
            error_files=error_files,
            access_log=self._access_logger() if log.isEnabledFor(logging.DEBUG) else None,
        )
        log.info("Proxying %s to %s", public_url, settings.default_target or "(no default)")

        api = ControlServer(routes_api, name="REST API", log=log)
        self.servers.append(api)
        api_url = await api.listen(settings.api_url, ssl_context=api_ssl, unix_socket_mode=mode)
        log.info("Proxy API at %s/api/routes", api_url)

        if settings.metrics_url:
            from prometheus_client import REGISTRY

            metrics.register(plane, METRICS_PREFIX, REGISTRY)
            server = ControlServer(MetricsHandler(REGISTRY), name="metrics", log=log)
            self.servers.append(server)
            metrics_url = await server.listen(settings.metrics_url, unix_socket_mode=mode)
            log.info("Serve metrics at %s/metrics", metrics_url)

        if settings.redirect_port is not None:
            redirect_to = settings.redirect_to or urlsplit(public_url).port
            server = ControlServer(RedirectHandler(redirect_to), name="HTTPS redirect", log=log)
            self.servers.append(server)
            redirect_url = await server.listen(f"http://:{settings.redirect_port}")
            log.info("Added HTTP to HTTPS redirection from %s to %s", redirect_url, redirect_to)

        if settings.pid_file:
            with open(settings.pid_file, "w") as f:
                f.write(str(os.getpid()))
            self.pid_file = settings.pid_file
            log.info("Writing pid %s to %s", os.getpid(), settings.pid_file)

        loop.set_exception_handler(self._log_loop_error)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signal.Signals(signum).name)

    async def _add_default_target(self, routes_api):
        """--default-target with a shared store: added once the table is loaded (and retried while Redis is away)."""
        target = self.settings.default_target
        while True:
            try:
                await self.store.wait_ready(DEFAULT_TARGET_RETRY)
                await routes_api.add_route("/", target, {})
                return
            except (TimeoutError, RouteStoreUnavailable) as e:
                self.log.warning("--default-target %s not stored yet (retrying): %s", target, e)
            # a retry period while Redis is away, not a synchronisation
            await asyncio.sleep(DEFAULT_TARGET_RETRY)

    def _on_signal(self, name):
        if self.signalled is None:
            self.signalled = name
            self._stop.set()
            return
        self.log.warning("%s during the drain: exiting at once", name)
        self._remove_pid_file()
        logging.shutdown()
        os._exit(1)

    def _log_loop_error(self, loop, context):
        exception = context.get("exception")
        self.log.error(
            "%s",
            context.get("message") or exception,
            exc_info=(type(exception), exception, exception.__traceback__) if exception is not None else None,
        )

    async def stop(self, timeout):
        """Close the control endpoints, drain the data plane up to ``timeout`` seconds, remove the pid file."""
        for server in self.servers:
            server.close()
        if self._default_target_task is not None:
            self._default_target_task.cancel()
        if self.store is not None:
            await self.store.stop()
        if self.plane is not None:
            await self.plane.stop(timeout)
        self._remove_pid_file()

    def _remove_pid_file(self):
        path, self.pid_file = self.pid_file, None
        if path is None:
            return
        try:
            with open(path) as f:
                ours = f.read().strip() == str(os.getpid())
            if ours:
                os.remove(path)
        except OSError:
            pass  # gone already, or replaced by someone else's: theirs to remove

    def _access_logger(self):
        log = self.log

        def log_access(exchange, seconds):
            route = exchange.route
            log.debug(
                "%d %s %s %.2fms -> %s",
                exchange.status,
                exchange.method.decode("ascii"),
                # without the query, which may hold a token (as CHP logs it)
                exchange.target.partition(b"?")[0].decode("utf-8", "replace"),
                seconds * 1000,
                route.target if route is not None else "proxy",
            )

        return log_access


#: glibc's mallopt() parameters (<malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_heap_for_large_reads():
    """Stop glibc from giving heap memory back to the system after every large read.

    uvloop hands each read of a socket over as a new bytes object of up to
    256 KiB. In this small process those sit at the top of the heap, and
    freeing them shrank the heap below glibc's trim threshold every time: two
    ``brk`` calls and fresh zeroed pages per read, which made 1 MiB responses
    cost 2.5 times the CPU they cost InProcessProxy inside a Hub (whose big,
    fragmented heap never shrinks). Allocations up to 1 MiB come from the heap
    and up to 4 MiB of free heap is kept; idle RSS is unchanged and a loaded
    process keeps about 2 MB more (``docs/design.md``, "Standalone process").
    A no-op where the C library has no ``mallopt`` (musl ignores it, macOS lacks it).
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    mallopt(_M_TRIM_THRESHOLD, 4 << 20)


def main(argv=None):
    """The console script ``inprocess-proxy``; returns the exit status."""
    settings = parse_args(argv)
    keep_heap_for_large_reads()
    log = make_logger(settings.log_level)
    for warning in settings.warnings:
        log.warning("%s", warning)
    loop = loop_factory("auto")()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(StandaloneProxy(settings, log).run())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
