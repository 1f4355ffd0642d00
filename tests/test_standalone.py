"""The ``inprocess-proxy`` command as configurable-http-proxy's drop-in: its command line,
its REST API, and traffic through it.

Every test runs the real command (``python -m inprocess_proxy``, see
``standalone_process.py``) as a child process on free 127.0.0.1 ports or unix
sockets in ``tmp_path``; backends are Tornado (``backends.py``) or the
``websockets`` library, on the test's event loop. JupyterHub's own client
(``ConfigurableHTTPProxy``) is checked against the REST API too, and
JupyterHub's test suite runs against the command in ``test_jupyterhub.py``.
"""

import asyncio
import json
import re
import os
import signal
import socket
import ssl
import subprocess
import sys

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from backends import Echo, RawClient
from support.ports import free_port
from standalone_process import TOKEN, ProxyProcess, child_env, run_command

#: configurable-http-proxy 5.3's flags (bin/configurable-http-proxy), all of which --help must list
CHP_FLAGS = """
    -V --version -h --help --ip --port --socket --ssl-key --ssl-cert --ssl-ca --ssl-request-cert
    --ssl-reject-unauthorized --ssl-protocol --ssl-ciphers --ssl-allow-rc4 --ssl-dhparam --api-ip
    --api-port --api-socket --api-ssl-key --api-ssl-cert --api-ssl-ca --api-ssl-request-cert
    --api-ssl-reject-unauthorized --client-ssl-key --client-ssl-cert --client-ssl-ca
    --client-ssl-request-cert --client-ssl-reject-unauthorized --default-target --error-target
    --error-path --redirect-port --redirect-to --pid-file --no-x-forward --no-prepend-path
    --no-include-prefix --auto-rewrite --change-origin --protocol-rewrite --custom-header --insecure
    --host-routing --metrics-ip --metrics-port --metrics-socket --log-level --timeout --proxy-timeout
    --storage-backend --keep-alive-timeout
""".split()
#: the CHP flags the command refuses, with an argument where they take one
REFUSED = [
    ["--no-x-forward"],
    ["--no-prepend-path"],
    ["--no-include-prefix"],
    ["--auto-rewrite"],
    ["--change-origin"],
    ["--protocol-rewrite", "https"],
    ["--storage-backend", "./redis-store.js"],
]
#: CHP's last_activity: ISO-8601 UTC with milliseconds
CHP_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: seconds any single wait on traffic may take
WAIT = 10


# -- the command line -----------------------------------------------------------------


def test_help_lists_every_chp_flag():
    result = run_command(["--help"])
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", result.stdout))
    assert set(CHP_FLAGS) <= listed, sorted(set(CHP_FLAGS) - listed)


@pytest.mark.parametrize("args", REFUSED, ids=lambda args: args[0])
def test_unsupported_chp_flag_exits_naming_it(args):
    result = run_command(["--port", "0", *args])
    assert result.returncode != 0
    assert f"{args[0]} is a configurable-http-proxy flag inprocess-proxy does not support" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--custom-header", "invalid"], "A colon was expected in custom header: invalid"),
        (["--custom-header", "Content-Length: 5"], "Content-Length cannot be set"),
        (["--custom-header", "X-Bad\x01: v"], "not a header name"),
        (["--socket", "/tmp/x.sock", "--port", "8000"], "--socket cannot be used with --port"),
        (["--api-socket", "/tmp/x.sock", "--api-ip", "::1"], "--api-socket cannot be used with --api-ip"),
        (["--redirect-port", "8080"], "HTTPS redirection specified but certificates not provided."),
        (["--error-target", "http://x/", "--error-path", "."], "Cannot specify both error-target and error-path"),
        (["--ssl-key", "k.pem"], "--ssl-key and --ssl-cert must be given together"),
        (["--timeout", "soon"], "not a whole number of milliseconds"),
        (["--port", "70000"], "not a port number"),
        (["--log-level", "loud"], "choose one of debug, info, warn, error"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--ip"], "--ip: expected one argument"),
    ],
)
def test_bad_command_line_exits_with_a_message(args, message):
    result = run_command(args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("which", ["--port", "--api-port"])
def test_bind_failure_exits_naming_the_address(which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = free_port()
        ports = {"--port": other, "--api-port": other, which: port}
        args = ["--ip", "127.0.0.1", "--api-ip", "127.0.0.1"]
        args += [f"--port={ports['--port']}", f"--api-port={ports['--api-port']}"]
        result = run_command(args)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on http://127.0.0.1:{port}" in result.stderr, result.stderr


def test_command_never_imports_jupyterhub_traitlets_or_tornado():
    # python -X importtime lists every module imported, one per line, on stderr
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "inprocess_proxy", "--version"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert traced.returncode == 0, traced.stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")}
    assert "inprocess_proxy.standalone.main" in modules
    assert not {m.split(".")[0] for m in modules} & {"jupyterhub", "traitlets", "tornado"}


def test_missing_token_is_generated_logged_and_required(tmp_path):
    with ProxyProcess(tmp_path, token=None) as proxy:
        match = re.search(r"generated a token: Authorization: token ([0-9a-f]{64})", proxy.log())
        assert match, proxy.log()
        assert proxy.api("GET", token="")[0] == 403
        assert proxy.api("GET", token=match.group(1))[0] == 200


# -- signals ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.gen_test(timeout=60)
async def test_signal_drains_in_flight_request_then_exits_0(signum, tmp_path, backend):
    pid_file = tmp_path / "proxy.pid"
    proxy = ProxyProcess(tmp_path, ["--default-target", backend.url, "--pid-file", str(pid_file)])
    with proxy:
        assert pid_file.read_text() == str(proxy.pid)
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            request = asyncio.ensure_future(client.request("GET", "/gated"))
            await asyncio.wait_for(backend.entered.wait(), WAIT)
            proxy.process.send_signal(signum)
            # the signal arrived and the drain began: the listener is closed
            await _until(lambda: "stopping; in-flight requests" in proxy.log(), "the drain to start")
            with pytest.raises(ConnectionRefusedError):
                await RawClient.connect(("127.0.0.1", proxy.port))
            backend.gate.set()
            response = await asyncio.wait_for(request, WAIT)
            assert (response.status, response.body) == (200, b"released")
        finally:
            await client.close()
        assert await asyncio.get_running_loop().run_in_executor(None, proxy.process.wait, WAIT) == 0
    assert not pid_file.exists()
    assert f"{signal.Signals(signum).name}: stopping" in proxy.log()


@pytest.mark.gen_test(timeout=60)
async def test_second_signal_during_the_drain_exits_at_once(tmp_path, backend):
    pid_file = tmp_path / "proxy.pid"
    proxy = ProxyProcess(tmp_path, ["--default-target", backend.url, "--pid-file", str(pid_file)])
    with proxy:
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            request = asyncio.ensure_future(client.request("GET", "/gated"))
            await asyncio.wait_for(backend.entered.wait(), WAIT)
            proxy.process.send_signal(signal.SIGTERM)
            await _until(lambda: "stopping; in-flight requests" in proxy.log(), "the drain to start")
            proxy.process.send_signal(signal.SIGTERM)
            returncode = await asyncio.get_running_loop().run_in_executor(None, proxy.process.wait, WAIT)
            # the request was cut: its connection ends without an answer
            with pytest.raises(asyncio.IncompleteReadError):
                await asyncio.wait_for(request, WAIT)
        finally:
            await client.close()
            backend.gate.set()
    assert returncode == 1
    assert not pid_file.exists()
    assert "SIGTERM during the drain: exiting at once" in proxy.log()


async def _until(predicate, what, timeout=WAIT):
    """Poll another process's state (its log) until ``predicate()``; bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what}: not seen in {timeout} s")
        await asyncio.sleep(0.05)


# -- the REST API -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_proxy(tmp_path_factory):
    """One process for the REST API table; every bad call must leave its routes as they were."""
    with ProxyProcess(tmp_path_factory.mktemp("api")) as proxy:
        status, _, _ = proxy.api("POST", "/user/existing", {"target": "http://127.0.0.1:9", "jupyterhub": True})
        assert status == 201
        yield proxy


OK_TARGET = {"target": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    "method, path, kwargs, status, message",
    [
        ("GET", "", {"token": ""}, 403, "token"),
        ("GET", "", {"token": "wrong"}, 403, "token"),
        ("POST", "/user/x", {"token": "", "body": OK_TARGET}, 403, "token"),
        ("GET", "", {"token": "", "headers": {"Authorization": f"Bearer {TOKEN}"}}, 403, "token"),
        ("POST", "/user/x", {"raw_body": b"{not json"}, 400, "Body not valid JSON"),
        ("POST", "/user/x", {"raw_body": b""}, 400, "Body not valid JSON"),
        ("POST", "/user/x", {"raw_body": b"\xff\xfe"}, 400, "Body not valid JSON"),
        ("POST", "/user/x", {"body": ["http://127.0.0.1:9"]}, 400, "JSON object"),
        ("POST", "/user/x", {"raw_body": b"null"}, 400, "Must specify 'target' as string"),
        ("POST", "/user/x", {"body": {"user": "x"}}, 400, "Must specify 'target' as string"),
        ("POST", "/user/x", {"body": {"target": 8080}}, 400, "Must specify 'target' as string"),
        ("POST", "/user/x", {"body": {"target": "not a url"}}, 400, "must be an http://, https:// or http+unix:// URL"),
        ("POST", "/user/x", {"body": {"target": "ftp://127.0.0.1:21"}}, 400, "http://, https:// or http+unix://"),
        ("POST", "/user/x", {"body": {"target": "http://:80"}}, 400, "has no host"),
        ("POST", "/user/x", {"body": {"target": "http://127.0.0.1:99999"}}, 400, "invalid port"),
        ("POST", "/user/x", {"body": {"target": "http://127.0.0.1:9/?a=b"}}, 400, "query"),
        ("POST", "/user/x", {"raw_body": json.dumps({**OK_TARGET, "pad": "x" * 70000}).encode()}, 413, "larger than"),
        ("POST", "/user/%2e%2e/x", {"body": OK_TARGET}, 400, "dot segment"),
        ("POST", "/user/./x", {"body": OK_TARGET}, 400, "dot segment"),
        ("POST", "/user/%zz", {"body": OK_TARGET}, 400, "a % must start an escape"),
        ("POST", "/user/%ff", {"body": OK_TARGET}, 400, "not UTF-8"),
        ("POST", "/user/a%00b", {"body": OK_TARGET}, 400, "control characters"),
        ("PUT", "/user/existing", {"body": OK_TARGET}, 405, "Method not supported"),
        ("PATCH", "/user/existing", {"body": OK_TARGET}, 405, "Method not supported"),
        ("DELETE", "", {}, 400, "DELETE needs a route path"),
        ("DELETE", "/user/nobody", {}, 404, "No route /user/nobody"),
        ("GET", "/user/nobody", {}, 404, "No route /user/nobody"),
        ("GET", "X", {}, 404, "Not Found"),
        ("GET", "?inactive_since=endoftheuniverse", {}, 400, "Invalid datestamp 'endoftheuniverse' must be ISO8601."),
    ],
)
def test_rest_api_refuses_bad_calls_and_changes_nothing(api_proxy, method, path, kwargs, status, message):
    before = api_proxy.routes()
    got, headers, body = api_proxy.api(method, path, **kwargs)
    assert got == status, body
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["status"] == status and message in answer["message"], answer
    if status == 405:
        assert headers["Allow"] == "GET, POST, DELETE"
    assert api_proxy.routes() == before


def test_rest_api_chunked_oversized_body_is_413(api_proxy):
    before = api_proxy.routes()
    with socket.create_connection(api_proxy.api_address, timeout=WAIT) as sock:
        sock.sendall(
            b"POST /api/routes/user/big HTTP/1.1\r\nHost: x\r\nAuthorization: token " + TOKEN.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
            + b"10\r\n" + b"a" * 0x10 + b"\r\n"
        )  # fmt: skip
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert api_proxy.routes() == before


def test_malformed_api_request_disturbs_no_other_connection(api_proxy):
    with socket.create_connection(api_proxy.api_address, timeout=WAIT) as good:
        request = b"GET /api/routes HTTP/1.1\r\nHost: x\r\nAuthorization: token " + TOKEN.encode() + b"\r\n\r\n"
        good.sendall(request)
        assert good.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(api_proxy.api_address, timeout=WAIT) as bad:
            bad.sendall(b"GET /api/routes HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
            assert _read_all(bad).startswith(b"HTTP/1.1 400 ")
        good.sendall(request)  # the same keep-alive connection, after the bad one
        assert good.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_pipelined_api_requests_are_answered_in_order_before_eof(api_proxy):
    request = b"GET /api/routes%s HTTP/1.1\r\nHost: x\r\nAuthorization: token " + TOKEN.encode() + b"\r\n\r\n"
    with socket.create_connection(api_proxy.api_address, timeout=WAIT) as sock:
        sock.sendall(request % b"" + request % b"/user/nobody")
        sock.shutdown(socket.SHUT_WR)
        answers = _read_all(sock)
    assert answers.startswith(b"HTTP/1.1 200 ")
    assert answers.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 404 " in answers


def test_endless_api_request_head_is_431(api_proxy):
    with socket.create_connection(api_proxy.api_address, timeout=WAIT) as sock:
        sock.sendall(b"GET /api/routes HTTP/1.1\r\nHost: x\r\nX-Long: ")
        for _ in range(40):
            try:
                sock.sendall(b"a" * 4096)  # a header line that never ends
            except (BrokenPipeError, ConnectionResetError):
                break  # answered and closed already
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def _read_all(sock):
    parts = []
    try:
        while data := sock.recv(65536):
            parts.append(data)
    except ConnectionResetError:
        pass  # what came before the reset is the answer
    return b"".join(parts)


def test_rest_api_add_get_list_delete(api_proxy):
    data = {"user": "foo@bar", "server_name": "", "jupyterhub": True}
    status, _, body = api_proxy.api("POST", "/user/foo%40bar/", {**data, "target": "http://127.0.0.1:9"})
    assert (status, body) == (201, b"")
    # keys are the decoded path without its trailing slash, data is echoed back
    route = api_proxy.routes()["/user/foo@bar"]
    assert CHP_TIMESTAMP.match(route.pop("last_activity")), route
    assert route == {**data, "target": "http://127.0.0.1:9"}
    status, _, body = api_proxy.api("GET", "/user/foo@bar")
    assert status == 200 and json.loads(body)["target"] == "http://127.0.0.1:9"
    # re-adding replaces
    assert api_proxy.api("POST", "/user/foo%40bar", {"target": "http://127.0.0.1:10"})[0] == 201
    assert api_proxy.routes()["/user/foo@bar"]["target"] == "http://127.0.0.1:10"
    assert "user" not in api_proxy.routes()["/user/foo@bar"]
    status, _, body = api_proxy.api("DELETE", "/user/foo%40bar")
    assert (status, body) == (204, b"")
    assert "/user/foo@bar" not in api_proxy.routes()
    assert api_proxy.api("DELETE", "/user/foo%40bar")[0] == 404


def test_rest_api_inactive_since(api_proxy):
    assert api_proxy.api("POST", "/recent", OK_TARGET)[0] == 201
    try:
        for query, present in [
            ("?inactive_since=1970-01-02T00:00:00.000Z", False),
            ("?inactiveSince=2999-01-01T00:00:00.000Z", True),
            ("?inactive_since=2999-01-01", True),
        ]:
            status, _, body = api_proxy.api("GET", query)
            assert status == 200
            assert ("/recent" in json.loads(body)) is present, query
    finally:
        api_proxy.api("DELETE", "/recent")


def test_default_target_is_listed_like_chp(tmp_path):
    with ProxyProcess(tmp_path, ["--default-target", "http://127.0.0.1:9"]) as proxy:
        route = proxy.routes()["/"]
        assert route["target"] == "http://127.0.0.1:9" and CHP_TIMESTAMP.match(route["last_activity"])
        status, _, body = proxy.api("GET", "?inactive_since=2999-01-01T00:00:00Z")
        assert (status, list(json.loads(body))) == (200, ["/"])


def test_rest_api_host_routing_keys(tmp_path):
    with ProxyProcess(tmp_path, ["--host-routing"]) as proxy:
        assert proxy.api("POST", "/alice.hub.test/user/alice", OK_TARGET)[0] == 201
        route = proxy.routes()["/alice.hub.test/user/alice"]
        assert route["host"] == "alice.hub.test" and route["target"] == OK_TARGET["target"]


@pytest.mark.parametrize("host_routing", [False, True])
def test_jupyterhub_client_round_trips_routespecs(tmp_path, io_loop, host_routing):
    """JupyterHub's own ConfigurableHTTPProxy, as a Hub with should_start = False uses it."""
    from jupyterhub.httpclient import JupyterHubHTTPClient
    from jupyterhub.proxy import ConfigurableHTTPProxy

    host = "alice.hub.test" if host_routing else ""
    specs = [f"{host}/user/a%20b/", f"{host}/user/has@at/", f"{host}/user/~tilde/", f"{host}/user/100%25/"]
    specs += [f"{host}/user/%C3%A9l%C3%A8ve/named/"]
    args = ["--host-routing"] if host_routing else []

    async def exercise(proxy):
        chp = ConfigurableHTTPProxy(
            should_start=False, api_url=f"http://127.0.0.1:{proxy.api_port}", auth_token=TOKEN, host_routing=host_routing
        )
        try:
            for i, spec in enumerate(specs):
                await chp.add_route(spec, f"http://127.0.0.1:{9000 + i}", {"user": spec, "server_name": ""})
            routes = await chp.get_all_routes()
            assert sorted(routes) == sorted(specs)
            for i, spec in enumerate(specs):
                assert routes[spec]["target"] == f"http://127.0.0.1:{9000 + i}"
                assert routes[spec]["data"]["user"] == spec
                assert (await chp.get_route(spec))["routespec"] == spec
                await chp.delete_route(spec)
            assert await chp.get_all_routes() == {}
        finally:
            await JupyterHubHTTPClient.loop_instance().close()

    with ProxyProcess(tmp_path, args) as proxy:
        io_loop.run_sync(lambda: exercise(proxy), timeout=60)


# -- traffic through the process ---------------------------------------------------------


@pytest.fixture
def echo_ws_server(io_loop):
    """A websockets echo server on a free port: its ``ws`` target URL."""
    servers = []

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    async def start():
        server = await ws_serve(echo, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield io_loop.run_sync(start)

    async def close_all():
        for server in servers:
            server.close()
            await server.wait_closed()

    io_loop.run_sync(close_all)


@pytest.mark.gen_test(timeout=60)
async def test_http_and_websocket_through_the_process(tmp_path, backend, echo_ws_server):
    with ProxyProcess(tmp_path, ["--default-target", backend.url]) as proxy:
        assert proxy.api("POST", "/ws", {"target": echo_ws_server})[0] == 201
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            echo = Echo.of(await client.request("GET", "/user/x/api?y=1"))
            assert echo.uri == "/user/x/api?y=1"
            assert echo.get("X-Forwarded-For") == "127.0.0.1" and echo.get("X-Forwarded-Proto") == "http"
            health = await client.request("GET", "/_chp_healthz")
            assert (health.status, health.json()) == (200, {"status": "OK"})
        finally:
            await client.close()
        async with ws_connect(f"ws://127.0.0.1:{proxy.port}/ws/echo", open_timeout=WAIT) as ws:
            for message in ("hello", b"\x00binary" * 1000):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), WAIT) == message
        # activity was recorded and is listed in CHP's format
        assert CHP_TIMESTAMP.match(proxy.routes()["/ws"]["last_activity"])


@pytest.mark.gen_test(timeout=60)
async def test_error_target_renders_404_and_503(tmp_path, backend):
    args = ["--error-target", backend.url + "/hub/error"]
    with ProxyProcess(tmp_path, args) as proxy:
        assert proxy.api("POST", "/user/down", {"target": f"http://127.0.0.1:{free_port()}"})[0] == 201
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            missing = await client.request("GET", "/nope?x=1")
            assert missing.status == 404
            assert Echo.of_json(missing.body).uri == "/hub/error/404?url=%2Fnope%3Fx%3D1"
            down = await client.request("GET", "/user/down/lab")
            assert down.status == 503
            assert Echo.of_json(down.body).uri == "/hub/error/503?url=%2Fuser%2Fdown%2Flab"
        finally:
            await client.close()


@pytest.mark.gen_test(timeout=60)
async def test_error_path_pages(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "404.html").write_text("<h1>no such page</h1>")
    (pages / "error.html").write_text("<h1>something else</h1>")
    with ProxyProcess(tmp_path, ["--error-path", str(pages)]) as proxy:
        assert proxy.api("POST", "/down", {"target": f"http://127.0.0.1:{free_port()}"})[0] == 201
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            missing = await client.request("GET", "/nope")
            assert (missing.status, missing.body) == (404, b"<h1>no such page</h1>")
            assert missing.get("Content-Type").startswith("text/html")
            down = await client.request("GET", "/down/x")
            assert (down.status, down.body) == (503, b"<h1>something else</h1>")
        finally:
            await client.close()


@pytest.mark.gen_test(timeout=60)
async def test_tls_listener_and_https_redirect(tmp_path, backend, tls_files):
    redirect_port = free_port()
    args = ["--default-target", backend.url, "--ssl-key", tls_files.key, "--ssl-cert", tls_files.cert]
    args += ["--redirect-port", str(redirect_port)]
    with ProxyProcess(tmp_path, args) as proxy:
        context = ssl.create_default_context(cafile=tls_files.ca)
        client = await RawClient.connect(("127.0.0.1", proxy.port), ssl=context, server_hostname="127.0.0.1")
        try:
            echo = Echo.of(await client.request("GET", "/over/tls"))
            assert echo.get("X-Forwarded-Proto") == "https"
        finally:
            await client.close()
        plain = await RawClient.connect(("127.0.0.1", redirect_port))
        try:
            moved = await plain.request("GET", "/user/x?y=1", host=f"127.0.0.1:{redirect_port}")
            assert moved.status == 301
            assert moved.get("Location") == f"https://127.0.0.1:{proxy.port}/user/x?y=1"
        finally:
            await plain.close()


@pytest.mark.gen_test(timeout=60)
async def test_unix_sockets_for_proxy_and_api(tmp_path, backend):
    public, api = str(tmp_path / "proxy.sock"), str(tmp_path / "api.sock")
    proxy = ProxyProcess(tmp_path, ["--socket", public, "--api-socket", api], listen=False)
    proxy.api_address = api
    with proxy:
        assert (tmp_path / "proxy.sock").stat().st_mode & 0o777 == 0o777 & ~_umask()
        assert proxy.api("POST", "/user/x", {"target": backend.url})[0] == 201
        client = await RawClient.connect(public)
        try:
            assert Echo.of(await client.request("GET", "/user/x/y")).uri == "/user/x/y"
        finally:
            await client.close()
        assert proxy.stop() == 0
    # socket files are removed at exit
    assert not (tmp_path / "proxy.sock").exists() and not (tmp_path / "api.sock").exists()


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


@pytest.mark.gen_test(timeout=60)
async def test_custom_headers_reach_the_target(tmp_path, backend):
    # configurable-http-proxy's cli_spec: names and values trimmed, split at the first colon
    args = ["--default-target", backend.url, "--custom-header", "k1: v1", "--custom-header", " k2 : host:123 "]
    with ProxyProcess(tmp_path, args) as proxy:
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            echo = Echo.of(await client.request("GET", "/", headers=[("k1", "from-client")]))
        finally:
            await client.close()
    assert echo.get_all("k1") == ["v1"] and echo.get_all("k2") == ["host:123"]


@pytest.mark.gen_test(timeout=60)
async def test_proxy_timeout_answers_504(tmp_path, backend):
    with ProxyProcess(tmp_path, ["--default-target", backend.url, "--proxy-timeout", "300"]) as proxy:
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            response = await asyncio.wait_for(client.request("GET", "/gated"), WAIT)
        finally:
            await client.close()
            backend.gate.set()
    assert response.status == 504


@pytest.mark.gen_test(timeout=60)
async def test_metrics_in_prometheus_format(tmp_path, backend):
    from prometheus_client.parser import text_string_to_metric_families

    metrics_port = free_port()
    args = ["--default-target", backend.url, "--metrics-ip", "127.0.0.1", "--metrics-port", str(metrics_port)]
    with ProxyProcess(tmp_path, args) as proxy:
        client = await RawClient.connect(("127.0.0.1", proxy.port))
        try:
            assert (await client.request("GET", "/x")).status == 200
        finally:
            await client.close()
        scraper = await RawClient.connect(("127.0.0.1", metrics_port))
        try:
            response = await scraper.request("GET", "/metrics")
        finally:
            await scraper.close()
    assert response.status == 200 and response.get("Content-Type").startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.body.decode())}
    requests = {
        (sample.labels["kind"], sample.labels["status_class"]): sample.value
        for sample in families["jupyterhub_proxy_requests"].samples
        if sample.name.endswith("_total")
    }
    assert requests[("http", "2xx")] == 1
    assert families["jupyterhub_proxy_routes"].samples[0].value == 1
    assert "process_resident_memory_bytes" in families


@pytest.mark.gen_test(timeout=60)
async def test_https_targets_verified_unless_insecure(tmp_path, make_backend, tls_files, self_signed_tls_files):
    """--client-ssl-ca is the trust for https targets; --insecure trusts any (CHP 5.1+ ignores it)."""

    def serving(files):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(files.cert, files.key)
        return make_backend(ssl_options=context)

    signed, self_signed = serving(tls_files), serving(self_signed_tls_files)
    for args, expected in [
        (["--client-ssl-ca", tls_files.ca], {"/signed": 200, "/self-signed": 503}),
        (["--insecure"], {"/signed": 200, "/self-signed": 200}),
    ]:
        with ProxyProcess(tmp_path, args) as proxy:
            assert proxy.api("POST", "/signed", {"target": signed.url})[0] == 201
            assert proxy.api("POST", "/self-signed", {"target": self_signed.url})[0] == 201
            client = await RawClient.connect(("127.0.0.1", proxy.port))
            try:
                for path, status in expected.items():
                    assert (await client.request("GET", path + "/x")).status == status, (args, path)
            finally:
                await client.close()
