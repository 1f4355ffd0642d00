"""WebSocket tunnels end to end: a real client, the proxy, a real Tornado WebSocket backend.

The client is the ``websockets`` library, the backend is ``ws_backends``
(Tornado), both on 127.0.0.1 or a unix socket in ``tmp_path``. The proxy does
not parse frames, so everything the ends negotiate (subprotocol,
permessage-deflate, close codes, message sizes) must arrive unchanged.

Activity during a tunnel is recorded by the proxy's sweeper (at most 1 s
apart) from a flag set per chunk, so there is no event to await for it: the
activity tests poll ``get_all_routes()`` every 0.1 s up to
``ACTIVITY_WAIT`` seconds.
"""

import asyncio
import time
from datetime import datetime
from urllib.parse import quote

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket
from tornado.testing import bind_unused_port
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from support.ports import free_port
from ws_backends import (
    CHOSEN_SUBPROTOCOL,
    GREETING,
    PUSHED,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    Close,
    WsBackend,
    abort_open_websockets,
    ws_backend_app,
)

#: seconds a fixture's set-up or teardown may take on the loop
FIXTURE_TIMEOUT = 30
#: seconds any single wait of a test (handshake, message, close) may take
WAIT = 5
#: seconds an activity record may take to show in get_all_routes (sweeper ticks <= 1 s)
ACTIVITY_WAIT = 5
#: seconds between polls of get_all_routes
POLL_INTERVAL = 0.1
#: the large-message test's message
LARGE_MESSAGE_SIZE = 50 * 1024 * 1024
#: simultaneous tunnels in the concurrency test
CONCURRENT_TUNNELS = 200


# -- fixtures and helpers ---------------------------------------------------------------


def ws_url(proxy, path):
    """The ``ws://`` URL of ``path`` on the proxy's public address."""
    return "ws://" + proxy.public_url.split("://", 1)[1].rstrip("/") + path


@pytest.fixture
def make_ws_backend(io_loop):
    """Factory: start a Tornado WebSocket backend; returns its ``WsBackend``.

    Args (all keyword):
        unix_socket: listen on this socket path instead of a free TCP port.
        ssl_options: serve TLS (``wss``) with this SSLContext.
        compression: the handlers' ``get_compression_options()`` (``{}`` for
            permessage-deflate).
    """
    started = []

    def make(*, unix_socket=None, ssl_options=None, compression=None):
        backend = WsBackend()
        server = HTTPServer(ws_backend_app(backend, compression=compression), ssl_options=ssl_options)
        if unix_socket is not None:
            server.add_socket(bind_unix_socket(unix_socket))
            backend.url = "http+unix://" + quote(unix_socket, safe="")
        else:
            sock, port = bind_unused_port()
            server.add_socket(sock)
            backend.url = f"{'https' if ssl_options else 'http'}://127.0.0.1:{port}"
        backend.server = server
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.server.stop()
        abort_open_websockets(backend)
        io_loop.run_sync(backend.server.close_all_connections, timeout=FIXTURE_TIMEOUT)


@pytest.fixture
def ws_backend(make_ws_backend):
    """A WebSocket backend on a free port."""
    return make_ws_backend()


@pytest.fixture
def ws_proxy(io_loop, routed_proxy, ws_backend):
    """A started proxy whose only route, ``/``, goes to ``ws_backend``."""
    return io_loop.run_sync(lambda: routed_proxy({"/": ws_backend.url}), timeout=FIXTURE_TIMEOUT)


@pytest.fixture
def ws_connect(io_loop):
    """Async factory: ``ws = await ws_connect(proxy, path, **kwargs)`` opens a websocket
    through the proxy with the ``websockets`` client; closed at teardown.

    Defaults: no keepalive pings (they would count as activity), no
    compression, no HTTP proxy from the environment, bounded handshake and
    close.
    """
    clients = []

    async def open_ws(proxy, path="/echo", **kwargs):
        ws = await connect(ws_url(proxy, path), **_client_options(kwargs))
        clients.append(ws)
        return ws

    yield open_ws

    async def close_all():
        for ws in clients:
            await ws.close()

    io_loop.run_sync(close_all, timeout=FIXTURE_TIMEOUT)


def _client_options(kwargs):
    options = dict(proxy=None, ping_interval=None, compression=None, open_timeout=WAIT, close_timeout=WAIT)
    options.update(kwargs)
    return options


async def refused_upgrade(proxy, path, **kwargs):
    """The HTTP response to an upgrade that did not get a 101 (a websockets ``Response``)."""
    with pytest.raises(InvalidStatus) as refused:
        ws = await connect(ws_url(proxy, path), **_client_options(kwargs))
        await ws.close()
    return refused.value.response


async def echo(ws, message):
    """Send ``message`` and return the reply (bounded)."""
    await ws.send(message)
    return await asyncio.wait_for(ws.recv(), WAIT)


async def assert_echoes(ws, message="ping"):
    assert await echo(ws, message) == message


async def closed_within(ws, timeout=WAIT):
    """Wait for the client to see its connection closed; returns the seconds it took."""
    started = time.monotonic()
    await asyncio.wait_for(ws.wait_closed(), timeout)
    return time.monotonic() - started


def _parse_activity(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def last_activity(proxy, routespec):
    """``last_activity`` of ``routespec`` from get_all_routes, as a datetime (or None)."""
    routes = await proxy.get_all_routes()
    text = routes[routespec]["data"].get("last_activity")
    return None if text is None else _parse_activity(text)


async def poll(condition, timeout, what):
    """Await ``condition()`` (a coroutine function) until true, every POLL_INTERVAL s.

    Only for proxy state that has no event to await: the sweeper's activity
    records and the proxy's set of tunnels.
    """
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(POLL_INTERVAL)


async def quiet_activity(proxy, routespec):
    """``last_activity`` once the sweeper has recorded the tunnels' opening.

    A new tunnel counts as active at the sweeper's next tick; after that,
    with no traffic, the record stays put, so a later advance can only come
    from the traffic a test sends. ``Tunnel.moved`` is the per-chunk flag the
    sweeper clears: the one tunnel internal these tests read.
    """

    async def opening_recorded():
        return not any(tunnel.moved for tunnel in proxy.server.tunnels)

    await poll(opening_recorded, ACTIVITY_WAIT, "the sweeper recorded the tunnel's opening")
    baseline = await last_activity(proxy, routespec)
    assert baseline is not None, "an upgraded request leaves no activity record"
    return baseline


async def assert_activity_advances(proxy, routespec, baseline):
    async def advanced():
        return await last_activity(proxy, routespec) > baseline

    await poll(advanced, ACTIVITY_WAIT, f"last_activity of {routespec} advanced past {baseline}")


# -- messages ------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["text: ünïcode ✓", b"\x00binary\xff" * 100], ids=["text", "binary"])
@pytest.mark.gen_test(timeout=10)
async def test_echo(ws_proxy, ws_connect, message):
    ws = await ws_connect(ws_proxy)

    reply = await echo(ws, message)

    assert reply == message
    assert type(reply) is type(message)


@pytest.mark.gen_test(timeout=10)
async def test_many_messages_on_one_tunnel(ws_proxy, ws_connect, ws_backend):
    ws = await ws_connect(ws_proxy)

    for i in range(100):
        await assert_echoes(ws, f"message {i}")

    assert len(ws_backend.handshakes) == 1
    assert len(ws_proxy.server.tunnels) == 1


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_50_mib_message_echoes_whole(ws_proxy, ws_connect):
    message = bytes(range(256)) * (LARGE_MESSAGE_SIZE // 256)
    ws = await ws_connect(ws_proxy, max_size=None)

    await ws.send(message)
    reply = await asyncio.wait_for(ws.recv(), 60)

    assert len(reply) == LARGE_MESSAGE_SIZE
    assert reply == message


@pytest.mark.gen_test(timeout=10)
async def test_backend_message_sent_with_the_101_reaches_client(ws_proxy, ws_connect):
    # the backend writes from open(), so its first frame may share a read with the 101
    ws = await ws_connect(ws_proxy, "/greet")

    assert await asyncio.wait_for(ws.recv(), WAIT) == GREETING
    await assert_echoes(ws)


@pytest.mark.gen_test(timeout=10)
async def test_client_ping_gets_backend_pong(ws_proxy, ws_connect):
    ws = await ws_connect(ws_proxy)

    pong = await ws.ping(b"are you there")

    await asyncio.wait_for(pong, WAIT)


# -- handshake -------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_subprotocol_chosen_by_backend_reaches_client(ws_proxy, ws_connect):
    ws = await ws_connect(ws_proxy, subprotocols=["a", "b"])

    assert ws.subprotocol == CHOSEN_SUBPROTOCOL
    assert ws.response.headers["Sec-WebSocket-Protocol"] == CHOSEN_SUBPROTOCOL
    await assert_echoes(ws)


@pytest.mark.gen_test(timeout=10)
async def test_permessage_deflate_negotiated_end_to_end(routed_proxy, make_ws_backend, ws_connect):
    backend = make_ws_backend(compression={})
    proxy = await routed_proxy({"/": backend.url})
    ws = await ws_connect(proxy, compression="deflate")

    assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
    # compressible messages, small and large, come back intact
    for size in (10, 50_000):
        await assert_echoes(ws, "deflate me " * size)


@pytest.mark.gen_test(timeout=10)
async def test_handshake_headers_reach_backend_unchanged(ws_proxy, ws_connect, ws_backend):
    # a browser's Origin is the proxy's own address; Tornado's same-origin
    # check compares it with the Host header, which must arrive intact too
    origin = ws_proxy.public_url.rstrip("/")
    ws = await ws_connect(
        ws_proxy,
        "/user/alice/api/kernels/k1/channels?session_id=s1",
        origin=origin,
        additional_headers={"Cookie": "jupyterhub-session-id=abc; _xsrf=2|de4d|0a1b; q=\"x y\""},
        subprotocols=["a", "b"],
    )

    sent = ws.request.headers
    (seen,) = ws_backend.handshakes
    assert seen.path == "/user/alice/api/kernels/k1/channels"
    unchanged = ("Host", "Origin", "Cookie", "Sec-WebSocket-Protocol", "Sec-WebSocket-Key", "Sec-WebSocket-Version")
    for name in unchanged:
        assert sent.get_all(name), f"the client did not send {name}"
        assert seen.headers.get_list(name) == sent.get_all(name), name


@pytest.mark.parametrize(
    "path, body",
    [
        ("/forbidden-origin", b"Cross origin websockets not allowed"),
        ("/forbidden", b"403: Forbidden"),
    ],
    ids=["check_origin", "get_raises"],
)
@pytest.mark.gen_test(timeout=10)
async def test_backend_403_on_upgrade_reaches_client(ws_proxy, ws_backend, path, body):
    response = await refused_upgrade(ws_proxy, path, origin="http://elsewhere.example")

    assert response.status_code == 403
    assert body in response.body
    assert ws_backend.handshakes == []
    assert not ws_proxy.server.tunnels


@pytest.mark.gen_test(timeout=10)
async def test_no_route_is_404_on_upgrade(routed_proxy, ws_backend):
    proxy = await routed_proxy({"/user/alice/": ws_backend.url})

    response = await refused_upgrade(proxy, "/user/bob/echo")

    assert response.status_code == 404
    assert ws_backend.handshakes == []


@pytest.mark.gen_test(timeout=10)
async def test_dead_target_is_503_on_upgrade(routed_proxy):
    proxy = await routed_proxy({"/": f"http://127.0.0.1:{free_port()}"}, new_route_retry_period=0)

    response = await refused_upgrade(proxy, "/echo")

    assert response.status_code == 503
    assert not proxy.server.tunnels


# -- close -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_backend_close_code_and_reason_reach_client(ws_proxy, ws_connect):
    ws = await ws_connect(ws_proxy, "/server-close")

    await ws.send("please close")
    await closed_within(ws)

    assert (ws.close_code, ws.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)


@pytest.mark.gen_test(timeout=10)
async def test_client_close_code_and_reason_reach_backend(ws_proxy, ws_connect, ws_backend):
    ws = await ws_connect(ws_proxy)

    await ws.close(4002, "client bye")
    await asyncio.wait_for(ws_backend.wait_closes(1), WAIT)

    assert ws_backend.closes == [Close(4002, "client bye")]


@pytest.mark.gen_test(timeout=10)
async def test_closed_tunnel_leaves_the_server(ws_proxy, ws_connect, ws_backend):
    ws = await ws_connect(ws_proxy)
    await assert_echoes(ws)
    assert len(ws_proxy.server.tunnels) == 1

    await ws.close()
    await asyncio.wait_for(ws_backend.wait_closes(1), WAIT)

    async def tunnel_gone():
        return not ws_proxy.server.tunnels

    # the proxy sees the last close a moment after the backend; no event to await
    await poll(tunnel_gone, WAIT, "the tunnel left proxy.server.tunnels")


# -- load ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.gen_test(timeout=90)
async def test_200_concurrent_tunnels_each_echo(ws_proxy, ws_connect, ws_backend):
    async def round_trip(i):
        ws = await ws_connect(ws_proxy, f"/echo/{i}", open_timeout=30)
        return await echo(ws, f"from client {i}")

    replies = await asyncio.wait_for(
        asyncio.gather(*(round_trip(i) for i in range(CONCURRENT_TUNNELS))), 60
    )

    assert replies == [f"from client {i}" for i in range(CONCURRENT_TUNNELS)]
    assert len(ws_backend.handshakes) == CONCURRENT_TUNNELS
    assert len(ws_proxy.server.tunnels) == CONCURRENT_TUNNELS


# -- routes changing under open tunnels ---------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_tunnel_survives_its_route_deleted_and_readded(routed_proxy, make_ws_backend, ws_connect):
    first, second = make_ws_backend(), make_ws_backend()
    proxy = await routed_proxy({"/user/alice/": first.url})
    ws = await ws_connect(proxy, "/user/alice/echo")
    await assert_echoes(ws, "before")

    await proxy.delete_route("/user/alice/")
    await assert_echoes(ws, "while deleted")
    await proxy.add_route("/user/alice/", second.url, {})
    await assert_echoes(ws, "after re-add")

    # the open tunnel stays with its first target; new upgrades take the new route
    await assert_echoes(await ws_connect(proxy, "/user/alice/echo"), "new tunnel")
    assert [h.path for h in first.handshakes] == ["/user/alice/echo"]
    assert [h.path for h in second.handshakes] == ["/user/alice/echo"]


@pytest.mark.gen_test(timeout=10)
async def test_deleted_route_keeps_tunnel_and_new_upgrades_fall_through(
    routed_proxy, make_ws_backend, ws_connect
):
    user, default = make_ws_backend(), make_ws_backend()
    proxy = await routed_proxy({"/": default.url})
    await proxy.add_route("/user/alice/", user.url, {})
    ws = await ws_connect(proxy, "/user/alice/echo")

    await proxy.delete_route("/user/alice/")

    await assert_echoes(ws, "still here")
    await assert_echoes(await ws_connect(proxy, "/user/alice/echo"), "fell through")
    assert [h.path for h in user.handshakes] == ["/user/alice/echo"]
    assert [h.path for h in default.handshakes] == ["/user/alice/echo"]


@pytest.mark.gen_test(timeout=10)
async def test_deleted_only_route_keeps_tunnel_and_new_upgrades_get_404(routed_proxy, ws_backend, ws_connect):
    proxy = await routed_proxy({"/user/alice/": ws_backend.url})
    ws = await ws_connect(proxy, "/user/alice/echo")

    await proxy.delete_route("/user/alice/")

    await assert_echoes(ws, "still here")
    assert (await refused_upgrade(proxy, "/user/alice/echo")).status_code == 404
    assert len(ws_backend.handshakes) == 1


# -- activity ----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_client_to_server_traffic_advances_last_activity(ws_proxy, ws_connect, ws_backend):
    ws = await ws_connect(ws_proxy, "/one-way")
    baseline = await quiet_activity(ws_proxy, "/")

    await ws.send("only upstream")
    await asyncio.wait_for(ws_backend.message_received.wait(), WAIT)

    await assert_activity_advances(ws_proxy, "/", baseline)
    assert ws_backend.received == ["only upstream"]


@pytest.mark.gen_test(timeout=20)
async def test_server_to_client_traffic_advances_last_activity(ws_proxy, ws_connect, ws_backend):
    ws = await ws_connect(ws_proxy, "/one-way")
    baseline = await quiet_activity(ws_proxy, "/")

    ws_backend.push.set()
    assert await asyncio.wait_for(ws.recv(), WAIT) == PUSHED

    await assert_activity_advances(ws_proxy, "/", baseline)
    assert ws_backend.received == []


@pytest.mark.gen_test(timeout=20)
async def test_tunnel_traffic_after_route_replaced_counts_for_the_new_route(
    routed_proxy, make_ws_backend, ws_connect
):
    # JupyterHub's check_routes re-adds a route whose target changed; the
    # server behind an old tunnel must still look active
    first, second = make_ws_backend(), make_ws_backend()
    proxy = await routed_proxy({"/user/alice/": first.url})
    ws = await ws_connect(proxy, "/user/alice/echo")
    baseline = await quiet_activity(proxy, "/user/alice/")

    await proxy.add_route("/user/alice/", second.url, {})
    await assert_echoes(ws, "old tunnel")

    await assert_activity_advances(proxy, "/user/alice/", baseline)


# -- timeouts and stop -------------------------------------------------------------------


@pytest.mark.gen_test(timeout=15)
async def test_idle_timeout_closes_silent_tunnel(routed_proxy, ws_backend, ws_connect):
    proxy = await routed_proxy({"/": ws_backend.url}, websocket_idle_timeout=1)
    ws = await ws_connect(proxy)

    silent_for = await closed_within(ws, timeout=10)

    assert silent_for >= 0.9, f"closed after {silent_for:.2f}s of silence, before the 1 s timeout"
    await asyncio.wait_for(ws_backend.wait_closes(1), WAIT)
    assert not proxy.server.tunnels


@pytest.mark.gen_test(timeout=20)
async def test_idle_timeout_spares_tunnel_with_traffic(routed_proxy, ws_backend, ws_connect):
    proxy = await routed_proxy({"/": ws_backend.url}, websocket_idle_timeout=1)
    ws = await ws_connect(proxy)

    # 3.6 s of traffic every 0.3 s: over three idle timeouts' worth
    for i in range(12):
        await asyncio.sleep(0.3)  # pacing the traffic, not synchronising
        await assert_echoes(ws, f"tick {i}")

    assert ws.state is State.OPEN
    assert len(proxy.server.tunnels) == 1
    assert ws_backend.closes == []


@pytest.mark.gen_test(timeout=20)
async def test_stop_closes_open_tunnels(routed_proxy, ws_backend, ws_connect):
    proxy = await routed_proxy({"/": ws_backend.url}, stop_timeout=5)
    sockets = [await ws_connect(proxy, f"/echo/{i}") for i in range(3)]
    for ws in sockets:
        await assert_echoes(ws)
    server = proxy.server
    assert len(server.tunnels) == 3

    started = time.monotonic()
    await proxy.stop()
    stopped_in = time.monotonic() - started
    for ws in sockets:
        await closed_within(ws)

    assert proxy.server is None
    assert not server.tunnels
    # tunnels are closed at once, not cut at the stop_timeout deadline
    assert stopped_in < 5, f"stop() took {stopped_in:.2f}s"
    await asyncio.wait_for(ws_backend.wait_closes(3), WAIT)


# -- target kinds ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_unix_socket_target(routed_proxy, make_ws_backend, ws_connect, tmp_path):
    backend = make_ws_backend(unix_socket=str(tmp_path / "ws.sock"))
    proxy = await routed_proxy({"/user/unix/": backend.url})
    ws = await ws_connect(proxy, "/user/unix/echo")

    await assert_echoes(ws, "over a unix socket")
    assert await echo(ws, b"\x00\x01") == b"\x00\x01"
    assert [h.path for h in backend.handshakes] == ["/user/unix/echo"]


@pytest.mark.gen_test(timeout=10)
async def test_wss_target_trusted_through_ssl_cert_file(
    routed_proxy, make_ws_backend, ws_connect, tls_files, monkeypatch
):
    # Without internal_ssl the proxy verifies https targets against the
    # system CAs; SSL_CERT_FILE is how an operator adds a private CA.
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca)
    backend = make_ws_backend(ssl_options=tls_files.server_context())
    proxy = await routed_proxy({"/": backend.url})
    ws = await ws_connect(proxy)

    await assert_echoes(ws, "over tls")
    assert len(backend.handshakes) == 1


@pytest.mark.gen_test(timeout=10)
async def test_wss_target_with_self_signed_certificate_is_503(
    routed_proxy, make_ws_backend, self_signed_tls_files
):
    # a certificate the proxy cannot verify makes the target unreachable:
    # 503 at once, not a hang and not an unverified tunnel
    backend = make_ws_backend(ssl_options=self_signed_tls_files.server_context())
    proxy = await routed_proxy({"/": backend.url}, new_route_retry_period=0)

    response = await refused_upgrade(proxy, "/echo")

    assert response.status_code == 503
    assert backend.handshakes == []
    assert not proxy.server.tunnels
