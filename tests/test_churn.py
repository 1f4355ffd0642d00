"""Route churn: 10,000 adds and 10,000 deletes of other routes never disturb live traffic.

Fixed routes ``/user/fixed/`` (an HTTP backend) and ``/user/wsfixed/`` (a
Tornado WebSocket echo backend) carry a steady load: a few keep-alive HTTP
clients making sequential requests, and 20 websockets each echoing a message
every 50 ms (the echo *period* is the load, so those waits are on a clock on
purpose). Meanwhile the test adds and deletes other routes, the way the Hub
does when servers start and stop: siblings ``/user/u<N>/`` and routes nested
under the fixed ones (``/user/fixed/api/kernels/k<N>/``,
``/user/wsfixed/other<N>/``), so pruning the trie after a delete must never
take a fixed route with it. A sliding window keeps 50 churned routes alive.

The test prints request and echo counts, failures, dropped websockets and the
route-operation rate, and asserts zero failures and zero drops.
"""

import asyncio
import time

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from websockets.asyncio.client import connect

from attack_helpers import RecordingBackend, address_of_proxy
from ws_backends import WsBackend, abort_open_websockets, ws_backend_app

ROUTE_ADDS = 10_000
WINDOW = 50
HTTP_CLIENTS = 4
WEBSOCKETS = 20
ECHO_EVERY = 0.05
WAIT = 5


@pytest.fixture
def ws_backend(io_loop):
    backend = WsBackend()
    server = HTTPServer(ws_backend_app(backend))
    sock, port = bind_unused_port()
    server.add_socket(sock)
    backend.url = f"http://127.0.0.1:{port}"
    backend.server = server
    yield backend
    server.stop()
    abort_open_websockets(backend)
    io_loop.run_sync(server.close_all_connections, timeout=30)


@pytest.fixture
def recording_backends(io_loop):
    """``(fixed, churn)``: the fixed route's HTTP backend and the churned routes' backend."""

    async def start():
        return (
            await RecordingBackend("fixed", record=False).start(),
            await RecordingBackend("churn", record=False).start(),
        )

    backends = io_loop.run_sync(start, timeout=WAIT)
    yield backends

    async def close():
        for backend in backends:
            await backend.close()

    io_loop.run_sync(close, timeout=WAIT)


class Load:
    """Counts of what the steady load did."""

    def __init__(self):
        self.requests = 0
        self.failed = []
        self.echoes = 0
        self.dropped = []
        self.stop = asyncio.Event()


async def http_client(address, n, load):
    reader, writer = await asyncio.open_connection(*address)
    i = 0
    try:
        while not load.stop.is_set():
            target = b"/user/fixed/lab/%d/%d" % (n, i)
            writer.write(b"GET %s HTTP/1.1\r\nHost: proxy.test\r\n\r\n" % target)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await asyncio.wait_for(reader.readexactly(length), WAIT)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                load.failed.append(f"{target}: {type(e).__name__}")
                return
            if not head.startswith(b"HTTP/1.1 200 ") or body != b"fixed GET " + target:
                load.failed.append(f"{target}: {head[:40]!r} {body[:60]!r}")
            load.requests += 1
            i += 1
    finally:
        writer.close()


async def websocket_client(url, n, load):
    ws = await connect(url, proxy=None, ping_interval=None, compression=None, open_timeout=WAIT, close_timeout=WAIT)
    try:
        i = 0
        while not load.stop.is_set():
            message = f"ws {n} message {i}"
            try:
                await ws.send(message)
                reply = await asyncio.wait_for(ws.recv(), WAIT)
            except Exception as e:  # any failure is a dropped websocket, reported by the test
                load.dropped.append(f"websocket {n} at message {i}: {type(e).__name__}: {e}")
                return
            if reply != message:
                load.dropped.append(f"websocket {n}: sent {message!r}, got {reply!r}")
                return
            load.echoes += 1
            i += 1
            # the load is periodic: one echo per websocket every ECHO_EVERY seconds
            await asyncio.sleep(ECHO_EVERY)
    finally:
        await ws.close()


def churned_routespec(k):
    kind = k % 3
    if kind == 0:
        return f"/user/u{k}/"
    if kind == 1:
        return f"/user/fixed/api/kernels/k{k}/"
    return f"/user/wsfixed/other{k}/"


@pytest.mark.slow
@pytest.mark.gen_test(timeout=180)
async def test_route_churn_beside_steady_http_and_websockets(make_proxy, ws_backend, recording_backends):
    http_backend, churn_backend = recording_backends
    tasks = []
    try:
        proxy = await make_proxy(new_route_retry_period=0)
        await proxy.add_route("/user/fixed/", http_backend.url, {"user": "fixed"})
        await proxy.add_route("/user/wsfixed/", ws_backend.url, {"user": "wsfixed"})
        address = address_of_proxy(proxy)
        ws_base = f"ws://{address[0]}:{address[1]}/user/wsfixed/api/kernels"

        load = Load()
        tasks = [asyncio.ensure_future(http_client(address, n, load)) for n in range(HTTP_CLIENTS)]
        tasks += [asyncio.ensure_future(websocket_client(f"{ws_base}/{n}/channels", n, load)) for n in range(WEBSOCKETS)]
        # the churn starts once every websocket is open
        while len(ws_backend.open_handlers) < WEBSOCKETS:
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)
        assert len(ws_backend.open_handlers) == WEBSOCKETS, [t.exception() for t in tasks if t.done()]
        requests_before, echoes_before = load.requests, load.echoes

        started = time.perf_counter()
        op_seconds = 0.0
        ops = 0
        for k in range(ROUTE_ADDS + WINDOW):
            op_started = time.perf_counter()
            if k < ROUTE_ADDS:
                await proxy.add_route(churned_routespec(k), f"{churn_backend.url}/churn/{k}", {"user": f"u{k}"})
                ops += 1
            if k >= WINDOW:
                await proxy.delete_route(churned_routespec(k - WINDOW))
                ops += 1
            op_seconds += time.perf_counter() - op_started
            # route operations arrive one at a time between other work, as from the Hub
            await asyncio.sleep(0)
        churn_seconds = time.perf_counter() - started
        requests_during = load.requests - requests_before
        echoes_during = load.echoes - echoes_before

        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2 * WAIT)
        routes = await proxy.get_all_routes()
    finally:
        for task in tasks:
            task.cancel()

    print(
        f"\nroute ops: {ops} ({ROUTE_ADDS} adds, {ops - ROUTE_ADDS} deletes) in {churn_seconds:.2f} s wall"
        f" = {ops / churn_seconds:.0f} ops/s interleaved with the load"
        f" ({op_seconds * 1e6 / ops:.1f} us per op inside add_route/delete_route)"
        f"\nHTTP: {requests_during} requests during the churn ({load.requests} in all), {len(load.failed)} failed"
        f"\nwebsockets: {WEBSOCKETS} open, {echoes_during} echoes during the churn ({load.echoes} in all),"
        f" {len(load.dropped)} dropped"
        f"\nroutes left: {sorted(routes)}"
    )
    assert ops == 2 * ROUTE_ADDS
    assert not load.failed, load.failed[:10]
    assert not load.dropped, load.dropped[:10]
    assert requests_during > 0 and echoes_during > 0
    assert sorted(routes) == ["/user/fixed/", "/user/wsfixed/"]


WRITERS = 8
ROUTES_PER_WRITER = 400
#: every this many adds, a writer requests its new route at once
CHECK_EVERY = 20


async def fetch(address, target):
    """One request on a new connection: ``(status line, body)``."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n" % target)
        response = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


@pytest.mark.slow
@pytest.mark.gen_test(timeout=180)
async def test_concurrent_route_changes_across_threads_lose_nothing(make_proxy, recording_backends):
    """Route calls from many Hub coroutines at once, handed to the proxy's thread under load.

    Each writer adds its routes and deletes every other one, all writers at
    once; every CHECK_EVERY adds a writer requests the route it just added
    (add_route is effective when it returns). Meanwhile a lister reads the
    table and the metrics from the Hub's thread, and HTTP clients keep a
    fixed route busy. At the end the table holds exactly what the writers
    kept, and every kept route is matched.
    """
    from prometheus_client import REGISTRY

    http_backend, churn_backend = recording_backends
    tasks = []
    try:
        proxy = await make_proxy(new_route_retry_period=0)
        await proxy.add_route("/user/fixed/", http_backend.url, {"user": "fixed"})
        address = address_of_proxy(proxy)
        load = Load()
        tasks = [asyncio.ensure_future(http_client(address, n, load)) for n in range(HTTP_CLIENTS)]
        misrouted = []
        listings = 0

        async def writer(w):
            for i in range(ROUTES_PER_WRITER):
                spec = f"/user/w{w}-{i}/"
                await proxy.add_route(spec, f"{churn_backend.url}/churn/{w}-{i}", {"user": f"w{w}-{i}"})
                if i % CHECK_EVERY == 0:
                    status, body = await fetch(address, spec.encode() + b"lab")
                    expected = b"churn GET /churn/%d-%d/user/w%d-%d/lab" % (w, i, w, i)
                    if not status.startswith(b"HTTP/1.1 200 ") or body != expected:
                        misrouted.append((spec, status, body[:80]))
                if i % 2:
                    await proxy.delete_route(spec)

        async def lister(done):
            nonlocal listings
            while not done.is_set():
                routes = await proxy.get_all_routes()
                for spec, route in routes.items():
                    if spec != "/user/fixed/" and route["target"] != f"{churn_backend.url}/churn/{spec[7:-1]}":
                        misrouted.append((spec, "listed with", route["target"]))
                # the collector reads a snapshot taken on the proxy's thread
                families = {metric.name: metric for metric in REGISTRY.collect()}
                assert families["jupyterhub_proxy_routes"].samples[0].value >= 1
                listings += 1
                await asyncio.sleep(0)

        done = asyncio.Event()
        listing = asyncio.ensure_future(lister(done))
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        done.set()
        await listing
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2 * WAIT)
        routes = await proxy.get_all_routes()
    finally:
        for task in tasks:
            task.cancel()

    kept = {f"/user/w{w}-{i}/" for w in range(WRITERS) for i in range(0, ROUTES_PER_WRITER, 2)}
    print(
        f"\n{WRITERS} writers x {ROUTES_PER_WRITER} adds (half deleted) with {listings} listings beside;"
        f" {load.requests} HTTP requests, {len(load.failed)} failed; {len(misrouted)} misrouted"
    )
    assert not misrouted, misrouted[:10]
    assert not load.failed, load.failed[:10]
    assert set(routes) == kept | {"/user/fixed/"}
    for spec in kept:
        assert proxy.routes.match_request(spec + "x").routespec == spec
