"""The public listener: TCP port 0, unix sockets, TLS, bind errors, health check, and stop()."""

import asyncio
import os
import socket
import stat
from urllib.parse import quote, urlsplit

import pytest
from tornado.testing import bind_unused_port

from backends import Echo, assert_nothing_listening, build_request


def _unix_url(path):
    return "http+unix://" + quote(str(path), safe="")


# -- binding ----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_port_zero_binds_a_free_port_and_serves(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, public_url="http://127.0.0.1:0/")

    port = urlsplit(proxy.public_url).port
    assert port not in (None, 0), proxy.public_url
    client = await open_client(proxy)
    assert (await client.request("GET", "/on-free-port")).status == 200


@pytest.mark.gen_test(timeout=10)
async def test_unix_socket_listener_serves_with_configured_mode(routed_proxy, backend, open_client, tmp_path):
    path = tmp_path / "proxy.sock"
    proxy = await routed_proxy({"/": backend.url}, public_url=_unix_url(path), unix_socket_mode=0o660)

    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", "/over/unix"))
    assert echo.uri == "/over/unix"


@pytest.mark.gen_test(timeout=10)
async def test_unix_socket_listener_default_mode_is_owner_only(make_proxy, tmp_path):
    path = tmp_path / "proxy.sock"
    await make_proxy(public_url=_unix_url(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.gen_test(timeout=10)
async def test_unix_socket_listener_replaces_stale_socket_file(routed_proxy, backend, open_client, tmp_path):
    path = tmp_path / "proxy.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # closing leaves the file behind, as a crashed Hub would
    assert path.exists()

    proxy = await routed_proxy({"/": backend.url}, public_url=_unix_url(path))

    client = await open_client(proxy)
    assert (await client.request("GET", "/after-stale")).status == 200


@pytest.mark.gen_test(timeout=10)
async def test_tls_listener_serves_with_ssl_cert_and_key(routed_proxy, backend, open_client, self_signed_tls_files):
    tls = self_signed_tls_files
    proxy = await routed_proxy(
        {"/": backend.url}, public_url="https://127.0.0.1:0/", ssl_cert=tls.cert, ssl_key=tls.key
    )
    assert proxy.public_url.startswith("https://127.0.0.1:")

    client = await open_client(proxy, ssl=tls.client_context())
    echo = Echo.of(await client.request("GET", "/over/tls", host="hub.example.org"))

    assert echo.uri == "/over/tls"
    assert echo.get("X-Forwarded-Proto") == "https"
    assert echo.get("X-Forwarded-Port") == "443"


@pytest.mark.gen_test(timeout=10)
async def test_port_in_use_raises_oserror_naming_the_address():
    from inprocess_proxy import InProcessProxy

    taken, port = bind_unused_port()
    try:
        proxy = InProcessProxy(public_url=f"http://127.0.0.1:{port}/")
        with pytest.raises(OSError) as raised:
            await proxy.start()
        assert "127.0.0.1" in str(raised.value) and str(port) in str(raised.value), str(raised.value)
        assert proxy.server is None
        await proxy.stop()
    finally:
        taken.close()


# -- health check ----------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_health_check_answers_ok_with_empty_route_table(make_proxy, open_client):
    proxy = await make_proxy()
    client = await open_client(proxy)

    response = await client.request("GET", "/_chp_healthz")

    assert response.status == 200
    assert response.get("Content-Type", "").startswith("application/json")
    assert response.json() == {"status": "OK"}


# -- stop() ----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=15)
async def test_stop_lets_in_flight_request_finish(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, stop_timeout=5)
    client = await open_client(proxy)
    await client.send(build_request("GET", "/gated"))
    await backend.entered.wait()

    stopping = asyncio.ensure_future(proxy.stop())
    done, _ = await asyncio.wait([stopping], timeout=0.3)
    assert not done, "stop() returned while a request was in flight"
    backend.gate.set()

    response = await client.read_response()
    await stopping
    assert (response.status, response.body) == (200, b"released")
    assert await client.read_until_eof() == b""


@pytest.mark.gen_test(timeout=15)
async def test_stop_cuts_request_running_past_stop_timeout(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, stop_timeout=0.5)
    client = await open_client(proxy)
    await client.send(build_request("GET", "/gated"))  # never released
    await backend.entered.wait()
    backend.connection_closed.clear()

    await asyncio.wait_for(proxy.stop(), 3)

    data = await client.read_until_eof()
    assert not data.startswith(b"HTTP/1.1 200"), data
    await backend.connection_closed.wait()  # and the upstream connection is closed too


@pytest.mark.gen_test(timeout=15)
async def test_stop_closes_idle_keep_alive_connections_at_once(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, stop_timeout=5)
    client = await open_client(proxy)
    assert (await client.request("GET", "/then-idle")).status == 200

    # idle connections do not hold stop() for stop_timeout
    await asyncio.wait_for(proxy.stop(), 2)

    assert await client.read_until_eof() == b""


@pytest.mark.gen_test(timeout=10)
async def test_stop_twice_is_fine(proxy):
    await proxy.stop()
    await proxy.stop()
    assert proxy.server is None


@pytest.mark.gen_test(timeout=10)
async def test_nothing_listens_after_stop(proxy):
    await proxy.stop()
    assert_nothing_listening(proxy.public_url)


@pytest.mark.gen_test(timeout=10)
async def test_route_api_works_after_stop(proxy, backend):
    await proxy.stop()

    await proxy.add_route("/user/after/", backend.url, {"user": "after", "server_name": ""})
    routes = await proxy.get_all_routes()
    assert routes["/user/after/"]["target"] == backend.url
    assert routes["/user/after/"]["data"]["user"] == "after"
    await proxy.delete_route("/user/after/")
    assert "/user/after/" not in await proxy.get_all_routes()
