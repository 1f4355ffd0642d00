"""Fixtures for the black-box tests of the HTTP data path.

Async tests use pytest-tornado: ``@pytest.mark.gen_test(timeout=...)`` runs
the test coroutine on the per-test ``io_loop`` (an asyncio loop underneath),
which is also the loop the proxy, the backends and the clients run on, as in
the Hub. Fixtures that need the loop running use ``io_loop.run_sync``.

MockHub tests live in ``tests/hub/`` with their own conftest and
pytest-asyncio; nothing here is named like a JupyterHub fixture.
"""

import asyncio
import gc
import json
import os
from urllib.parse import quote

import pytest
from tornado.netutil import bind_unix_socket
from tornado.testing import bind_unused_port

from backends import (
    BACKEND_MAX_BODY,
    Backend,
    CountingHTTPServer,
    RawClient,
    address_of,
    assert_nothing_listening,
    backend_app,
)
from support.debian import PackageMissing, debian_executable
from support.redisserver import REDIS_SERVER, RedisServer
from support.tls import make_tls_files

#: seconds a fixture's teardown may take on the loop
TEARDOWN_TIMEOUT = 30

#: traits every test proxy gets unless its test sets them: ``test_thread.py``
#: runs data-path test modules again with e.g. ``{"thread": false}`` here
MODE_TRAITS = json.loads(os.environ.get("INPROCESS_PROXY_TEST_TRAITS") or "{}")


@pytest.fixture(scope="session", autouse=True)
def _freeze_imported_objects():
    """Import the proxy (and JupyterHub) once, then move every object that exists
    to gc's permanent generation: the per-test collection below then only walks
    objects the tests made (0.01 s instead of 0.2-0.4 s per test)."""
    try:
        import inprocess_proxy  # noqa: F401
    except ImportError:
        pass  # make_proxy reports it in each test that needs the proxy
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _collect_garbage_after_test(_freeze_imported_objects):
    """Collect garbage at teardown, so an unclosed socket warns in the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 it signed."""
    return make_tls_files(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="session")
def self_signed_tls_files(tmp_path_factory):
    """A self-signed server certificate for 127.0.0.1 (its own trust anchor)."""
    return make_tls_files(tmp_path_factory.mktemp("tls-self"), self_signed=True)


@pytest.fixture(scope="session")
def redis_server_executable():
    """Debian's redis-server, installed with apt-get if missing (as root); tests needing it skip otherwise."""
    try:
        return debian_executable(REDIS_SERVER, "redis-server")
    except PackageMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def redis_server(redis_server_executable, tmp_path_factory):
    """A redis-server the session's tests share; each test uses keys of its own."""
    server = RedisServer(redis_server_executable, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def make_redis_server(redis_server_executable, tmp_path):
    """Factory: ``make_redis_server(password=..., tls=...)`` starts a redis-server of the test's
    own (for tests that stop or restart it); stopped at teardown."""
    servers = []

    def make(**kwargs):
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(redis_server_executable, directory, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def make_backend(io_loop):
    """Factory: start a Tornado backend; returns a ``backends.Backend``.

    Args (all keyword):
        unix_socket: listen on this socket path instead of a free TCP port.
        ssl_options: serve https with these options (an SSLContext).
        **server_kwargs: HTTPServer options, e.g. ``idle_connection_timeout``.
    """
    started = []

    def make(*, unix_socket=None, ssl_options=None, port=None, **server_kwargs):
        backend = Backend()
        server_kwargs.setdefault("max_body_size", BACKEND_MAX_BODY)
        server = CountingHTTPServer(backend_app(backend), ssl_options=ssl_options, **server_kwargs)
        server.backend = backend
        backend.server = server
        if unix_socket is not None:
            server.add_socket(bind_unix_socket(unix_socket))
            backend.url = "http+unix://" + quote(unix_socket, safe="")
        else:
            if port is None:
                sock, port = bind_unused_port()
                server.add_socket(sock)
            else:
                server.listen(port, "127.0.0.1")
            backend.url = f"{'https' if ssl_options else 'http'}://127.0.0.1:{port}"
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.gate.set()
        backend.server.stop()
        io_loop.run_sync(backend.server.close_all_connections, timeout=TEARDOWN_TIMEOUT)


@pytest.fixture
def backend(make_backend):
    """A plain http backend on a free port."""
    return make_backend()


@pytest.fixture
def make_raw_backend(io_loop):
    """Async factory: ``url = await make_raw_backend(script)`` serves ``script(reader, writer)``
    per connection on a free port (scripts are in ``backends``)."""
    servers = []
    writers = set()

    async def make(script):
        async def handle(reader, writer):
            writers.add(writer)
            try:
                await script(reader, writer)
            except ConnectionError:
                pass  # the proxy hung up first; nothing left to serve
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield make

    async def close_all():
        for server in servers:
            server.close()
        for writer in writers:
            writer.close()
        for server in servers:
            await server.wait_closed()
        # let the closed transports run their connection_lost callbacks
        await asyncio.sleep(0)

    io_loop.run_sync(close_all, timeout=TEARDOWN_TIMEOUT)


def _leftovers(server):
    """What a stopped server still holds, for the collections it exposes:
    idle upstream connections (``pool``), client connections, tunnels."""
    held = {}
    for name in ("pool", "clients", "tunnels"):
        things = getattr(server, name, None)
        if things is not None and len(things):
            held[name] = len(things)
    return held


@pytest.fixture
def make_proxy(io_loop):
    """Async factory: ``proxy = await make_proxy(**traits)`` starts an InProcessProxy.

    ``public_url`` defaults to ``http://127.0.0.1:0/`` (a free port) and
    ``stop_timeout`` to 1 s so that teardown stays short. At teardown each
    proxy is stopped and checked: nothing listens at its address any more and
    it holds no connections (upstream pool, clients, tunnels, where exposed).
    """
    from inprocess_proxy import InProcessProxy

    started = []

    async def make(**traits):
        traits.setdefault("public_url", "http://127.0.0.1:0/")
        traits.setdefault("stop_timeout", 1)
        # the test process is not a Hub: a freeze would keep the cyclic garbage
        # of every later test (and hide its unclosed sockets); test_thread.py
        # checks freeze_gc in a process of its own
        traits.setdefault("freeze_gc", False)
        for name, value in MODE_TRAITS.items():
            traits.setdefault(name, value)
        proxy = InProcessProxy(**traits)
        await proxy.start()
        started.append((proxy, proxy.server))
        return proxy

    yield make
    for proxy, server in started:
        io_loop.run_sync(proxy.stop, timeout=TEARDOWN_TIMEOUT)
        assert proxy.server is None
        assert_nothing_listening(proxy.public_url)
        assert _leftovers(server) == {}, "connections left after stop()"


@pytest.fixture
def routed_proxy(make_proxy):
    """Async factory: ``proxy = await routed_proxy({"/": backend.url}, **traits)``, a started proxy with routes.

    ``routes`` maps each routespec to its target URL, or to ``(target, data)``;
    without data, ``/`` gets the Hub's ``{"hub": True}`` and other routes
    ``{}``. ``traits`` go to ``make_proxy``, which also stops the proxy.
    """

    async def make(routes, **traits):
        proxy = await make_proxy(**traits)
        for routespec, target in routes.items():
            data = {"hub": True} if routespec == "/" else {}
            if isinstance(target, tuple):
                target, data = target
            await proxy.add_route(routespec, target, data)
        return proxy

    return make


@pytest.fixture
def proxy(io_loop, routed_proxy, backend):
    """A started proxy whose only route, ``/``, goes to ``backend``."""
    return io_loop.run_sync(lambda: routed_proxy({"/": backend.url}), timeout=TEARDOWN_TIMEOUT)


@pytest.fixture
def open_client(io_loop):
    """Async factory: ``client = await open_client(proxy_or_url)`` opens a RawClient
    to a proxy's public_url (or any URL); closed at teardown."""
    clients = []

    async def connect(target, **kwargs):
        url = target if isinstance(target, str) else target.public_url
        client = await RawClient.connect(address_of(url), **kwargs)
        clients.append(client)
        return client

    yield connect

    async def close_all():
        for client in clients:
            await client.close()

    io_loop.run_sync(close_all, timeout=TEARDOWN_TIMEOUT)
