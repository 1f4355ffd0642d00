"""Errors, timeouts and limits: what the client gets when a route, a target or the client itself fails.

Without a Hub (``proxy.hub is None``) error bodies are short plain text; the
Hub's error pages are tested in ``tests/hub/``.
"""

import asyncio
import functools

import pytest

from backends import (
    build_request,
    close_after_partial_body_script,
    close_mid_chunked_script,
    garbage_script,
    parse_head,
)
from support.ports import free_port


def _status_of(data):
    """The status code of the response at the start of ``data``."""
    assert b"\r\n\r\n" in data, f"no complete response head in {data[:200]!r}"
    return parse_head(data[: data.index(b"\r\n\r\n") + 4]).status


async def _assert_serves(client):
    """The connection (or the proxy, for a new one) still answers a normal request."""
    response = await client.request("GET", "/still-serving")
    assert response.status == 200, response


# -- routing and targets --------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_no_route_is_404_plain_text(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/user/alice/": (backend.url, {"user": "alice", "server_name": ""})})
    client = await open_client(proxy)

    response = await client.request("GET", "/user/bob/tree")

    assert response.status == 404
    assert response.get("Content-Type", "").startswith("text/plain")
    assert backend.requests == []


@pytest.mark.gen_test(timeout=10)
async def test_refused_target_of_old_route_is_503_at_once(routed_proxy, open_client):
    proxy = await routed_proxy({"/": f"http://127.0.0.1:{free_port()}"}, new_route_retry_period=0)
    client = await open_client(proxy)

    # bounded well below the default 5 s retry period: no retrying for old routes
    response = await asyncio.wait_for(client.request("GET", "/refused"), 2)

    assert response.status == 503
    assert response.get("Content-Type", "").startswith("text/plain")


@pytest.mark.gen_test(timeout=15)
async def test_new_route_retries_until_its_backend_listens(make_proxy, make_backend, open_client, io_loop):
    port = free_port()
    proxy = await make_proxy(new_route_retry_period=5)
    await proxy.add_route("/user/late/", f"http://127.0.0.1:{port}", {"user": "late", "server_name": ""})
    # the server binds its port a moment after the Hub added its route
    io_loop.call_later(0.5, functools.partial(make_backend, port=port))
    client = await open_client(proxy)

    response = await client.request("GET", "/user/late/lab")

    assert response.status == 200


@pytest.mark.gen_test(timeout=15)
async def test_silent_backend_is_504_after_response_header_timeout(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, response_header_timeout=1)
    client = await open_client(proxy)

    response = await client.request("GET", "/gated")  # never released

    assert response.status == 504
    assert backend.entered.is_set()


@pytest.mark.gen_test(timeout=10)
async def test_garbage_from_backend_is_502(routed_proxy, make_raw_backend, open_client):
    url = await make_raw_backend(garbage_script)
    proxy = await routed_proxy({"/": url})
    client = await open_client(proxy)

    response = await client.request("GET", "/garbage")

    assert response.status == 502
    assert b"HELLO" not in response.body


@pytest.mark.parametrize(
    "script", [close_after_partial_body_script, close_mid_chunked_script], ids=["content-length", "chunked"]
)
@pytest.mark.gen_test(timeout=10)
async def test_backend_closing_mid_body_closes_client_connection(routed_proxy, make_raw_backend, open_client, script):
    url = await make_raw_backend(script)
    proxy = await routed_proxy({"/": url})
    client = await open_client(proxy)
    await client.send(build_request("GET", "/cut"))
    head = await client.read_head()
    assert head.status == 200

    with pytest.raises(asyncio.IncompleteReadError):
        async for chunk in client.body_chunks(head):
            assert chunk == b"abc"
    # the client sees the truncation, never a complete body or a second response
    assert await client.read_until_eof() == b""


@pytest.mark.gen_test(timeout=15)
async def test_stalled_response_body_is_cut_after_idle_timeout(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, idle_timeout=1)
    client = await open_client(proxy)
    await client.send(build_request("GET", "/stall"))
    head = await client.read_head()
    assert head.status == 200

    received = b""
    with pytest.raises(asyncio.IncompleteReadError):
        async for chunk in client.body_chunks(head):
            received += chunk
    assert received == b"first"


# -- bad clients ----------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_malformed_request_is_400_and_others_are_served(proxy, open_client):
    bad = await open_client(proxy)
    await bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    data = await bad.read_until_eof()
    assert _status_of(data) == 400

    await _assert_serves(await open_client(proxy))


@pytest.mark.parametrize(
    "limit, target, headers, status",
    [
        pytest.param({"max_url_size": 1024}, "/" + "a" * 2048, [], 414, id="oversized-request-line-414"),
        pytest.param({"max_header_size": 4096}, "/big-header", [("X-Big", "b" * 8192)], 431, id="oversized-header-431"),
        pytest.param(
            {"max_header_count": 10},
            "/many-headers",
            [(f"X-H{i}", str(i)) for i in range(20)],
            431,
            id="too-many-headers-431",
        ),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_request_over_a_limit_is_refused_and_others_are_served(
    routed_proxy, backend, open_client, limit, target, headers, status
):
    proxy = await routed_proxy({"/": backend.url}, **limit)
    client = await open_client(proxy)

    response = await client.request("GET", target, headers)

    assert response.status == status
    assert backend.requests == []
    await _assert_serves(await open_client(proxy))


@pytest.mark.gen_test(timeout=15)
async def test_stalled_request_head_is_dropped_after_client_header_timeout(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, client_header_timeout=1)
    slow = await open_client(proxy)
    await slow.send(b"GET /hal")  # and nothing more

    await _assert_serves(await open_client(proxy))
    data = await slow.read_until_eof()

    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


@pytest.mark.gen_test(timeout=15)
async def test_idle_keep_alive_client_connection_is_closed_after_timeout(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url}, client_keep_alive_timeout=0.5)
    client = await open_client(proxy)
    await _assert_serves(client)

    assert await client.read_until_eof() == b""


@pytest.mark.parametrize(
    "target", ["/%3Cscript%3Ealert(1)%3C/script%3E", "/<script>alert(1)</script>"], ids=["encoded", "raw"]
)
@pytest.mark.gen_test(timeout=10)
async def test_error_body_does_not_echo_request_target(make_proxy, open_client, target):
    proxy = await make_proxy()  # no routes: every request is a 404
    client = await open_client(proxy)
    await client.send(build_request("GET", target))

    response = await client.read_response()

    assert 400 <= response.status < 500
    assert b"<script" not in response.body.lower()
    assert b"alert(1)" not in response.body


# -- limits ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_connection_beyond_max_client_connections_gets_503_and_is_closed(
    routed_proxy, backend, open_client
):
    proxy = await routed_proxy({"/": backend.url}, max_client_connections=2)
    first, second = await open_client(proxy), await open_client(proxy)
    await _assert_serves(first)
    await _assert_serves(second)

    third = await open_client(proxy)
    await third.send(build_request("GET", "/third"))
    data = await third.read_until_eof()

    assert _status_of(data) == 503
    await _assert_serves(first)
    await _assert_serves(second)


# -- error pages from files (the standalone command's --error-path) ------------------


@pytest.mark.parametrize(
    "files, status, expected",
    [
        ({404: b"<p>gone</p>", None: b"<p>other</p>"}, 404, (b"text/html; charset=utf-8", b"<p>gone</p>")),
        ({404: b"<p>gone</p>", None: b"<p>other</p>"}, 503, (b"text/html; charset=utf-8", b"<p>other</p>")),
        # no page for the status and no error.html: the plain-text fallback
        ({404: b"<p>gone</p>"}, 503, (b"text/plain; charset=utf-8", b"503 Service Unavailable\n")),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_error_pages_from_files(files, status, expected):
    import logging

    from inprocess_proxy.errorpages import ErrorPages

    pages = ErrorPages(None, None, 1.0, logging.getLogger("test"), files)
    assert await pages.render(status, b"/user/x?token=secret") == expected
