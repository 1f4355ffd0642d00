"""Forwarding: what reaches the backend and the client, target kinds, keep-alive and the upstream pool.

Black-box: a real InProcessProxy between real backends on 127.0.0.1 (or unix
sockets) and raw clients that send exactly the bytes a test gives.
"""


import pytest
from tornado.httpclient import AsyncHTTPClient

from backends import (
    GZIP_BODY,
    AnswerOncePerConnection,
    BigResponseHeaderHandler,
    Echo,
    RedirectHandler,
    bare_response_script,
    build_request,
)

#: requests sent over one client connection in the keep-alive tests
KEEP_ALIVE_REQUESTS = 5


def _split_list(value):
    """The elements of a comma-separated header value, however they are spaced."""
    return [part.strip() for part in value.split(",")]


# -- keep-alive and the upstream pool ---------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_sequential_requests_share_one_client_and_one_upstream_connection(proxy, backend, open_client):
    client = await open_client(proxy)
    for i in range(KEEP_ALIVE_REQUESTS):
        echo = Echo.of(await client.request("GET", f"/seq/{i}"))
        assert echo.uri == f"/seq/{i}"
    assert backend.accepted == 1


@pytest.mark.gen_test(timeout=20)
async def test_separate_clients_reuse_the_pooled_upstream_connection(proxy, backend, open_client):
    for i in range(KEEP_ALIVE_REQUESTS):
        client = await open_client(proxy)
        assert (await client.request("GET", "/one-at-a-time")).status == 200
        await client.close()
    assert backend.accepted == 1


@pytest.mark.gen_test(timeout=20)
async def test_pooled_connection_closed_by_backend_is_replaced_for_get(routed_proxy, make_backend, open_client):
    backend = make_backend(idle_connection_timeout=0.2)
    proxy = await routed_proxy({"/": backend.url})
    client = await open_client(proxy)
    assert (await client.request("GET", "/first")).status == 200
    backend.connection_closed.clear()
    await backend.connection_closed.wait()  # the backend dropped the idle pooled connection

    response = await client.request("GET", "/after-backend-closed")

    assert response.status == 200
    assert backend.accepted == 2


@pytest.mark.gen_test(timeout=20)
async def test_pooled_connection_dropped_as_it_is_reused_is_retried_for_get(
    routed_proxy, make_raw_backend, open_client
):
    script = AnswerOncePerConnection()
    url = await make_raw_backend(script)
    proxy = await routed_proxy({"/": url})
    client = await open_client(proxy)
    assert (await client.request("GET", "/first")).status == 200

    # goes out on the pooled connection, which the backend drops unanswered
    response = await client.request("GET", "/second")

    assert (response.status, response.body) == (200, b"ok")
    assert script.dropped == 1  # the pool did reuse the connection, and retried on a new one


@pytest.mark.gen_test(timeout=20)
async def test_pooled_connection_dropped_under_a_post_is_an_error_not_a_retry(
    routed_proxy, make_raw_backend, open_client
):
    script = AnswerOncePerConnection()
    url = await make_raw_backend(script)
    proxy = await routed_proxy({"/": url})
    client = await open_client(proxy)
    assert (await client.request("GET", "/first")).status == 200

    response = await client.request("POST", "/not-idempotent", body=b"once")

    assert response.status in (502, 503), response
    assert script.dropped == 1


@pytest.mark.gen_test(timeout=20)
async def test_idle_upstream_connection_is_closed_after_upstream_keep_alive_timeout(
    routed_proxy, backend, open_client
):
    proxy = await routed_proxy({"/": backend.url}, upstream_keep_alive_timeout=0.3)
    client = await open_client(proxy)
    assert (await client.request("GET", "/pooled")).status == 200
    backend.connection_closed.clear()
    # the backend keeps idle connections for an hour: only the proxy can close this one
    await backend.connection_closed.wait()
    assert backend.closed == 1


@pytest.mark.gen_test(timeout=20)
async def test_upstream_connection_close_is_not_reused_and_client_connection_stays(
    proxy, backend, open_client
):
    client = await open_client(proxy)
    first = await client.request("GET", "/connection-close")
    assert first.status == 200 and first.body == b"closing"
    assert "close" not in (first.get("Connection") or "").lower()

    second = await client.request("GET", "/next")

    assert second.status == 200
    assert backend.accepted == 2


# -- what reaches the backend ----------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_request_target_reaches_backend_byte_for_byte(proxy, open_client):
    target = "/user/has%40x/a%2Fb?x=%20y&z"
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", target))
    assert echo.uri == target


@pytest.mark.gen_test(timeout=10)
async def test_percent_encoded_username_matches_route_and_stays_encoded(
    make_proxy, make_backend, open_client
):
    hub, user = make_backend(), make_backend()
    proxy = await make_proxy()
    await proxy.add_route("/", hub.url, {"hub": True})
    await proxy.add_route("/user/has@x/", user.url, {"user": "has@x", "server_name": ""})
    target = "/user/has%40x/a%2Fb?x=%20y&z"
    client = await open_client(proxy)

    echo = Echo.of(await client.request("GET", target))

    assert echo.uri == target
    assert [r[1] for r in user.requests] == [target]
    assert hub.requests == []


@pytest.mark.gen_test(timeout=10)
async def test_host_header_is_kept(proxy, open_client):
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", "/host", host="hub.example.org:8443"))
    assert echo.get_all("Host") == ["hub.example.org:8443"]


@pytest.mark.gen_test(timeout=10)
async def test_hop_by_hop_request_headers_are_removed(proxy, open_client):
    client = await open_client(proxy)
    headers = [
        ("Connection", "keep-alive, X-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Secret", "hidden"),
        ("X-Visible", "shown"),
    ]
    echo = Echo.of(await client.request("GET", "/hop", headers))
    names = echo.names()
    for hop in ("keep-alive", "te", "upgrade", "proxy-connection", "x-secret"):
        assert hop not in names, f"{hop} forwarded: {echo.headers}"
    # the proxy may say keep-alive to its own upstream, but not pass the client's list on
    assert all("x-secret" not in v.lower() for v in echo.get_all("Connection")), echo.headers
    assert echo.get("X-Visible") == "shown"


@pytest.mark.gen_test(timeout=10)
async def test_hop_by_hop_response_headers_are_removed(proxy, open_client):
    client = await open_client(proxy)
    response = await client.request("GET", "/hop-by-hop")
    assert response.status == 200 and response.body == b"hop"
    names = response.names()
    assert "keep-alive" not in names and "x-backend-secret" not in names, response.headers
    assert all("x-backend-secret" not in v.lower() for v in response.get_all("Connection"))
    assert response.get("X-Kept") == "kept"
    assert (await client.request("GET", "/still-open")).status == 200


@pytest.mark.gen_test(timeout=10)
async def test_x_forwarded_headers_are_added_when_absent(proxy, open_client):
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", "/xf", host="hub.example.org:8123"))
    assert echo.get_all("X-Forwarded-For") == ["127.0.0.1"]
    assert echo.get_all("X-Forwarded-Proto") == ["http"]
    assert echo.get_all("X-Forwarded-Port") == ["8123"]
    assert echo.get_all("X-Forwarded-Host") == ["hub.example.org:8123"]


@pytest.mark.gen_test(timeout=10)
async def test_x_forwarded_port_defaults_to_scheme_port(proxy, open_client):
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", "/xf", host="hub.example.org"))
    assert echo.get_all("X-Forwarded-Port") == ["80"]


@pytest.mark.gen_test(timeout=10)
async def test_x_forwarded_headers_append_to_client_values_like_chp(proxy, open_client):
    client = await open_client(proxy)
    headers = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Host", "outer.example.org"),
    ]
    echo = Echo.of(await client.request("GET", "/xf", headers, host="inner:8000"))
    assert _split_list(echo.get("X-Forwarded-For")) == ["203.0.113.7", "127.0.0.1"]
    assert _split_list(echo.get("X-Forwarded-Proto")) == ["https", "http"]
    assert _split_list(echo.get("X-Forwarded-Port")) == ["443", "8000"]
    assert echo.get_all("X-Forwarded-Host") == ["outer.example.org"]


@pytest.mark.gen_test(timeout=10)
async def test_nothing_is_added_to_a_request_the_client_did_not_send(proxy, open_client):
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", "/bare", host="bare.example"))
    added = {name for name in echo.names() if not name.startswith("x-forwarded-")}
    # the proxy may mark its own upstream connection keep-alive; nothing else is allowed
    assert added - {"connection"} == {"host"}, echo.headers
    assert all(v.lower() == "keep-alive" for v in echo.get_all("Connection")), echo.headers


@pytest.mark.gen_test(timeout=10)
async def test_repeated_request_headers_are_all_forwarded(proxy, open_client):
    client = await open_client(proxy)
    headers = [("X-Repeat", "one"), ("x-repeat", "two"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    echo = Echo.of(await client.request("GET", "/repeats", headers))
    assert echo.get_all("X-Repeat") == ["one", "two"] or echo.get_all("X-Repeat") == ["one,two"]
    cookies = echo.get_all("Cookie")
    assert cookies in (["a=1", "b=2"], ["a=1,b=2"], ["a=1; b=2"]), cookies


@pytest.mark.gen_test(timeout=10)
async def test_large_request_header_within_limit_is_forwarded_intact(proxy, open_client):
    value = "c" * (32 * 1024)
    client = await open_client(proxy)
    echo = Echo.of(await client.request("GET", "/big-cookie", [("Cookie", value)]))
    assert echo.get("Cookie") == value


@pytest.mark.gen_test(timeout=10)
async def test_pipelined_requests_are_answered_in_order(proxy, open_client):
    client = await open_client(proxy)
    await client.send(b"".join(build_request("GET", f"/pipelined/{i}") for i in range(3)))
    for i in range(3):
        assert Echo.of(await client.read_response()).uri == f"/pipelined/{i}"


# -- what reaches the client ------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_large_response_header_reaches_client_intact(proxy, open_client):
    client = await open_client(proxy)
    response = await client.request("GET", "/big-response-header")
    assert response.status == 200
    assert response.get("X-Big") == BigResponseHeaderHandler.VALUE


@pytest.mark.gen_test(timeout=10)
async def test_repeated_set_cookie_headers_reach_client_in_order(proxy, open_client):
    client = await open_client(proxy)
    response = await client.request("GET", "/cookies")
    assert response.status == 200
    assert response.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/", "c=3; Path=/"]


@pytest.mark.gen_test(timeout=10)
async def test_redirect_is_passed_to_client_not_followed(proxy, backend, open_client):
    client = await open_client(proxy)
    response = await client.request("GET", "/redirect")
    assert response.status == 302
    assert response.get("Location") == RedirectHandler.LOCATION
    assert len(backend.requests) == 0  # the echo handler was never asked for /next


@pytest.mark.gen_test(timeout=10)
async def test_gzip_body_passes_through_compressed(proxy, open_client):
    client = await open_client(proxy)
    response = await client.request("GET", "/gzip", [("Accept-Encoding", "gzip")])
    assert response.status == 200
    assert response.get("Content-Encoding") == "gzip"
    assert response.body == GZIP_BODY


@pytest.mark.gen_test(timeout=10)
async def test_no_content_type_server_or_etag_injected_into_response(routed_proxy, make_raw_backend, open_client):
    url = await make_raw_backend(bare_response_script)
    proxy = await routed_proxy({"/": url})
    client = await open_client(proxy)

    response = await client.request("GET", "/bare")

    assert response.status == 200 and response.body == b"ok"
    for injected in ("content-type", "server", "etag"):
        assert injected not in response.names(), response.headers


# -- target kinds --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_http_target_serves_a_tornado_client(proxy):
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(proxy.public_url.rstrip("/") + "/via/tornado", raise_error=False)
    finally:
        client.close()
    assert response.code == 200
    assert Echo.of_json(response.body).uri == "/via/tornado"


@pytest.mark.gen_test(timeout=10)
async def test_https_target_trusted_through_ssl_cert_file(
    routed_proxy, make_backend, open_client, tls_files, monkeypatch
):
    # Without internal_ssl the proxy verifies https targets with the default
    # context; SSL_CERT_FILE is how an operator makes it trust a private CA.
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca)
    backend = make_backend(ssl_options=tls_files.server_context())
    proxy = await routed_proxy({"/": backend.url})
    client = await open_client(proxy)

    echo = Echo.of(await client.request("GET", "/over/tls"))

    assert echo.uri == "/over/tls"


@pytest.mark.gen_test(timeout=10)
async def test_https_target_with_untrusted_certificate_is_503(
    routed_proxy, make_backend, open_client, tls_files
):
    backend = make_backend(ssl_options=tls_files.server_context())
    proxy = await routed_proxy({"/": backend.url}, new_route_retry_period=0)
    client = await open_client(proxy)
    response = await client.request("GET", "/over/untrusted/tls")
    assert response.status == 503
    assert backend.requests == []


@pytest.mark.gen_test(timeout=10)
async def test_unix_socket_target(routed_proxy, make_backend, open_client, tmp_path):
    backend = make_backend(unix_socket=str(tmp_path / "backend.sock"))
    proxy = await routed_proxy({"/user/unix/": backend.url})
    client = await open_client(proxy)

    for i in range(2):
        echo = Echo.of(await client.request("GET", f"/user/unix/{i}"))
        assert echo.uri == f"/user/unix/{i}"
