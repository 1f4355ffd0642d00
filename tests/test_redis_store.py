"""The Redis route store: several data planes ("replicas") sharing one route table.

Every test runs a real redis-server (``conftest.redis_server``, or one of its
own where Redis is stopped or restarted) and real DataPlanes listening on
127.0.0.1, each with its own ``RedisRouteStore``. Replicas wait for each
other through ``wait_applied`` (an event per version); what only another
process can tell (Redis's keys, a replica reconnecting) is polled with a bound.
"""

import asyncio
import json
import logging
import random
import secrets
import time

import pytest
import redis.asyncio as redis

from backends import RawClient, address_of, assert_nothing_listening
from inprocess_proxy.activity import isoformat
from inprocess_proxy.options import ProxyOptions
from inprocess_proxy.plane import DataPlane
from inprocess_proxy.redisstore import PASSWORD_ENV, RedisRouteStore
from inprocess_proxy.store import RouteStoreUnavailable
from support.ports import free_port
from support.tls import make_tls_files

#: seconds a replica gets to load the table
READY_TIMEOUT = 10
#: the issue's bound on propagation to every replica, p99
PROPAGATION_P99 = 0.050
#: seconds for a poll of another process's state (Redis, a reconnect)
POLL_TIMEOUT = 10
POLL_INTERVAL = 0.01
#: the ticks of most tests; one test keeps the default 1 s to prove it
FAST_TICK = 0.1


class Replica:
    """A DataPlane serving on 127.0.0.1 and the RedisRouteStore keeping its table."""

    def __init__(self, name, plane, store, public_url):
        self.name = name
        self.plane = plane
        self.store = store
        self.public_url = public_url

    async def get(self, path, client=None):
        """GET ``path`` through this replica's listener; returns the status."""
        own = client is None
        if own:
            client = await RawClient.connect(address_of(self.public_url))
        try:
            return (await client.request("GET", path)).status
        finally:
            if own:
                await client.close()

    async def stop(self):
        await self.store.stop()
        await self.plane.stop(1)
        assert_nothing_listening(self.public_url)


@pytest.fixture
def prefix():
    """Keys of this test's own in the shared Redis."""
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
def make_replica(io_loop, redis_server, prefix):
    """Async factory: ``await make_replica(url=..., thread=..., wait=True, **store_kwargs)``."""
    replicas = []

    async def make(*, url=None, thread=False, wait=True, **store_kwargs):
        name = f"replica-{len(replicas)}"
        log = logging.getLogger(f"test.redis.{name}")
        plane = DataPlane(options=ProxyOptions(stop_timeout=1), log=log, thread=thread)
        public_url = await plane.start("http://127.0.0.1:0/", upstream_ssl=None, error_target=None)
        store_kwargs.setdefault("prefix", prefix)
        store_kwargs.setdefault("activity_interval", FAST_TICK)
        store = RedisRouteStore(plane, url or redis_server.url, log=log, **store_kwargs)
        replica = Replica(name, plane, store, public_url)
        replicas.append(replica)
        await store.start()
        if wait:
            await store.wait_ready(READY_TIMEOUT)
        return replica

    yield make
    for replica in replicas:
        io_loop.run_sync(replica.stop, timeout=30)


@pytest.fixture
def redis_client(io_loop, redis_server):
    """A plain client of the shared Redis, for looking behind the stores' backs."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    io_loop.run_sync(client.aclose)


async def redis_table(client, prefix):
    """``{routespec: (target, data)}`` as stored in Redis."""
    stored = await client.hgetall(f"{prefix}:routes")
    return {spec: (value["target"], value["data"]) for spec, value in ((s, json.loads(v)) for s, v in stored.items())}


async def poll(predicate, what, timeout=POLL_TIMEOUT):
    """Await ``predicate()`` (a coroutine function) until true; returns seconds taken."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(POLL_INTERVAL)
    return time.monotonic() - started


async def converged(replicas, client, prefix):
    """True when every replica is connected and serves exactly Redis's table."""
    expected = await redis_table(client, prefix)
    for replica in replicas:
        if not replica.store.connected or await replica.plane.export_routes() != expected:
            return False
    return True


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------
# Writes and propagation
# --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_change_is_in_redis_and_served_everywhere(make_replica, redis_client, prefix, backend):
    """A change is in Redis (route, version) and served locally when the call returns,
    and every other replica applies it within 50 ms (p99 of 150 changes)."""
    replicas = [await make_replica(), await make_replica(thread=True), await make_replica()]
    delays = []
    for i in range(150):
        writer = replicas[i % 3]
        spec = f"/user/u{i}/"
        if i % 5 == 4:
            op = writer.store.delete_route(f"/user/u{i - 1}/")
        else:
            op = writer.store.add_route(spec, backend.url, {"user": f"u{i}"})
        await op
        answered = time.perf_counter()
        version = writer.store.version
        assert int(await redis_client.get(f"{prefix}:version")) == version
        for other in replicas:
            if other is not writer:
                await other.store.wait_applied(version, 1.0)
                delays.append(time.perf_counter() - answered)
        if i % 5 != 4:
            assert json.loads(await redis_client.hget(f"{prefix}:routes", spec)) == {
                "target": backend.url, "data": {"user": f"u{i}"}
            }
            assert writer.plane.routes.trie.get(spec).target == backend.url
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    print(f"\npropagation to the other replicas over {len(delays)} changes: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    assert p99 < PROPAGATION_P99

    expected = await redis_table(redis_client, prefix)
    assert len(expected) == 90
    for replica in replicas:
        assert await replica.plane.export_routes() == expected
        # served through each replica's own listener, as routed there
        assert await replica.get("/user/u0/x") == 200
        assert await replica.get("/user/u3/x") == 404  # deleted by /user/u4/'s turn
    assert backend.requests[-1][1] == "/user/u0/x"


@pytest.mark.gen_test(timeout=30)
async def test_bad_input_changes_nothing(make_replica, redis_client, prefix, backend):
    replica = await make_replica()
    await replica.store.add_route("/a/", backend.url, {})
    version = await redis_client.get(f"{prefix}:version")
    for routespec, target, data in [
        ("/b/", "not a url", {}),
        ("b/", backend.url, {}),
        ("/b/", backend.url, "not a dict"),
        ("/b/", backend.url, {"x": object()}),
    ]:
        with pytest.raises(ValueError):
            await replica.store.add_route(routespec, target, data)
    with pytest.raises(ValueError):
        await replica.store.delete_route("no-slash/")
    assert await redis_client.get(f"{prefix}:version") == version
    assert await redis_table(redis_client, prefix) == {"/a/": (backend.url, {})}
    assert await replica.plane.export_routes() == {"/a/": (backend.url, {})}


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_writers_converge(make_replica, redis_client, prefix, backend):
    """Three replicas writing at once, the same routespecs included: each write is
    served where it was made when it returns, and all end with Redis's table."""
    replicas = [await make_replica(), await make_replica(thread=True), await make_replica()]
    rng = random.Random(14)

    async def churn(replica, n):
        for i in range(60):
            spec = f"/shared/{rng.randrange(10)}/"
            if rng.random() < 0.3:
                await replica.store.delete_route(spec)
            else:
                await replica.store.add_route(spec, backend.url, {"by": n})
            own = f"/own/{n}/{i}/"
            await replica.store.add_route(own, backend.url, {})
            assert own in replica.plane.routes.trie

    await asyncio.gather(*(churn(r, n) for n, r in enumerate(replicas)))
    version = int(await redis_client.get(f"{prefix}:version"))
    for replica in replicas:
        await replica.store.wait_applied(version, 5)
    expected = await redis_table(redis_client, prefix)
    assert len([s for s in expected if s.startswith("/own/")]) == 180
    for replica in replicas:
        assert replica.store.version == version
        assert await replica.plane.export_routes() == expected


# --------------------------------------------------------------------------
# Start, snapshot, missed changes
# --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_start_loads_the_whole_table_before_ready(make_replica, backend):
    first = await make_replica()
    for i in range(50):
        await first.store.add_route(f"/r{i}/", backend.url, {"i": i})
    await first.store.delete_route("/r7/")
    late = await make_replica(wait=False)
    # a route only this replica had is not served once it has loaded Redis's table
    await late.plane.add_route("/local-only/", backend.url, {})
    assert not late.store.ready
    with pytest.raises(RouteStoreUnavailable, match="^route store unavailable: the route table is not loaded"):
        await late.store.add_route("/x/", backend.url, {})
    await late.store.wait_ready(READY_TIMEOUT)
    assert late.store.ready and late.store.connected
    assert late.store.version == first.store.version
    assert await late.plane.export_routes() == await first.plane.export_routes()
    assert "/local-only/" not in late.plane.routes.trie
    assert await late.get("/r3/") == 200


@pytest.mark.gen_test(timeout=30)
async def test_health_check_503_until_loaded_then_200_even_with_redis_down(make_redis_server, make_replica):
    server = make_redis_server()
    port = server.port
    server.kill()
    replica = await make_replica(url=f"redis://127.0.0.1:{port}/0", wait=False)
    # a 503 closes its connection, so each check gets a connection of its own
    client = await RawClient.connect(address_of(replica.public_url))
    try:
        response = await client.request("GET", "/_chp_healthz")
        assert (response.status, response.json()) == (503, {"status": "route table not loaded"})
    finally:
        await client.close()
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    await replica.store.wait_ready(READY_TIMEOUT)
    assert await replica.get("/_chp_healthz") == 200
    # loaded once: a replica serving its table stays healthy while Redis is away
    server.kill()
    await poll(lambda: _all_disconnected([replica]), "the replica notices Redis is gone")
    assert await replica.get("/_chp_healthz") == 200


@pytest.mark.gen_test(timeout=30)
async def test_not_ready_while_redis_unreachable(make_replica, backend):
    replica = await make_replica(url=f"redis://127.0.0.1:{free_port()}/0", wait=False)
    with pytest.raises(TimeoutError, match="route table not loaded from Redis at redis://127.0.0.1:.*Connect"):
        await replica.store.wait_ready(0.5)
    assert not replica.store.ready and not replica.store.connected
    with pytest.raises(RouteStoreUnavailable):
        await replica.store.add_route("/a/", backend.url, {})
    assert await replica.store.get_all_routes() == {}


@pytest.mark.gen_test(timeout=30)
async def test_a_skipped_version_reloads_the_table(make_replica, redis_client, prefix, backend):
    """A change whose message never came is noticed by the next message's version."""
    a, b = await make_replica(activity_interval=60), await make_replica(activity_interval=60)
    await a.store.add_route("/first/", backend.url, {})
    # behind the stores' backs: a change with no message
    await redis_client.hset(f"{prefix}:routes", "/silent/", json.dumps({"target": backend.url, "data": {}}))
    await redis_client.incr(f"{prefix}:version")
    await a.store.add_route("/third/", backend.url, {})
    version = int(await redis_client.get(f"{prefix}:version"))
    await b.store.wait_applied(version, 5)
    assert set(await b.plane.export_routes()) == {"/first/", "/silent/", "/third/"}
    assert await a.plane.export_routes() == await b.plane.export_routes()


@pytest.mark.gen_test(timeout=30)
async def test_a_lost_message_is_caught_by_the_tick(make_replica, redis_client, prefix, backend):
    """A change with no message and none after it: the version check of the tick reloads."""
    replicas = [await make_replica(), await make_replica()]
    await replicas[0].store.add_route("/first/", backend.url, {})
    await redis_client.hset(f"{prefix}:routes", "/silent/", json.dumps({"target": backend.url, "data": {}}))
    await redis_client.incr(f"{prefix}:version")
    took = await poll(lambda: converged(replicas, redis_client, prefix), "replicas load the silent change")
    assert took < 2.0
    assert "/silent/" in replicas[1].plane.routes.trie


@pytest.mark.gen_test(timeout=30)
async def test_a_table_lost_without_a_disconnect_is_reseeded(make_replica, redis_client, prefix, backend):
    """Redis loses the keys (as after FLUSHALL): the next write re-creates the table
    from the writer's routes, under a new epoch every replica loads."""
    replicas = [await make_replica(), await make_replica()]
    for i in range(5):
        await replicas[i % 2].store.add_route(f"/r{i}/", backend.url, {})
    old_epoch = replicas[0].store.epoch
    await redis_client.delete(*(f"{prefix}:{key}" for key in ("routes", "version", "epoch", "activity")))
    await replicas[1].store.add_route("/after/", backend.url, {})
    assert replicas[1].store.epoch != old_epoch
    await poll(lambda: converged(replicas, redis_client, prefix), "replicas load the new table")
    assert set(await redis_table(redis_client, prefix)) == {"/r0/", "/r1/", "/r2/", "/r3/", "/r4/", "/after/"}


# --------------------------------------------------------------------------
# Activity
# --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_activity_from_every_replica_newest_wins(make_replica, redis_client, prefix, backend):
    """Traffic through one replica is merged into Redis within a second (the default
    interval) and listed by every replica; the newest time wins."""
    a, b, c = [await make_replica(activity_interval=1.0) for _ in range(3)]
    await a.store.add_route("/a/", backend.url, {"user": "a"})
    await a.store.add_route("/quiet/", backend.url, {})
    await b.store.wait_applied(a.store.version, 1)

    before = time.time()
    assert await b.get("/a/x") == 200
    seen_at_b = b.plane.routes.activity.last["/a/"]
    assert seen_at_b >= before
    took = await poll(lambda: redis_client.zscore(f"{prefix}:activity", "/a/"), "activity reaches Redis")
    assert took <= 1.0 + 0.5
    assert await redis_client.zscore(f"{prefix}:activity", "/a/") == seen_at_b

    # c carried no traffic, yet lists b's activity; so does a
    for replica in (a, c):
        listed = await replica.store.get_all_routes()
        assert listed["/a/"]["data"] == {"user": "a", "last_activity": isoformat(seen_at_b)}
        assert "last_activity" not in listed["/quiet/"]["data"]
        assert (await replica.store.get_route("/a/"))["data"]["last_activity"] == isoformat(seen_at_b)
    # the Hub's culler filter sees it too
    assert set(await c.store.get_all_routes(inactive_since=before)) == {"/quiet/"}

    # an older time from another replica does not win
    a.plane.routes.activity.last["/a/"] = seen_at_b - 100
    await poll(lambda: _merged(a, "/a/", seen_at_b - 100), "a merges its older time")
    assert await redis_client.zscore(f"{prefix}:activity", "/a/") == seen_at_b
    # a newer one does
    later = seen_at_b + 10
    c.plane.routes.activity.last["/a/"] = later
    await poll(lambda: _merged(c, "/a/", later), "c merges its newer time")
    assert (await b.store.get_route("/a/"))["data"]["last_activity"] == isoformat(later)

    # a deleted route's activity is gone and stays gone when a replica merges a late time
    await b.store.delete_route("/a/")
    assert await redis_client.zscore(f"{prefix}:activity", "/a/") is None
    a.plane.routes.activity.last["/a/"] = later + 1
    await poll(lambda: _merged(a, "/a/", later + 1), "a merges a deleted route's time")
    assert await redis_client.zscore(f"{prefix}:activity", "/a/") is None


async def _merged(replica, routespec, timestamp):
    """True once ``replica``'s tick has merged ``timestamp`` for ``routespec`` into Redis."""
    return replica.store._merged.get(routespec) == timestamp


# --------------------------------------------------------------------------
# Redis down, restarted, lost
# --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_redis_down_serves_refuses_writes_and_converges(make_redis_server, make_replica, backend, prefix):
    server = make_redis_server()
    replicas = [await make_replica(url=server.url), await make_replica(url=server.url, thread=True)]
    for i in range(10):
        await replicas[i % 2].store.add_route(f"/r{i}/", backend.url, {})
    await replicas[0].store.wait_applied(replicas[1].store.version, 1)
    before = [await r.plane.export_routes() for r in replicas]
    assert before[0] == before[1]

    server.kill()
    for replica in replicas:
        # reads answer from the local table, requests are served
        assert set(await replica.store.get_all_routes()) == set(before[0])
        assert await replica.get("/r1/x") == 200
        with pytest.raises(RouteStoreUnavailable, match="^route store unavailable: Redis at redis://127.0.0.1:"):
            await replica.store.add_route("/new/", backend.url, {})
        with pytest.raises(RouteStoreUnavailable):
            await replica.store.delete_route("/r1/")
        assert await replica.plane.export_routes() == before[0]
    await poll(lambda: _all_disconnected(replicas), "replicas notice Redis is gone")

    # back, empty (it was killed, nothing saved): the replicas' table is seeded again
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        await poll(lambda: converged(replicas, client, prefix), "replicas resync")
        assert await redis_table(client, prefix) == before[0]
        await replicas[1].store.add_route("/new/", backend.url, {})
        await replicas[0].store.wait_applied(replicas[1].store.version, 1)
        assert "/new/" in replicas[0].plane.routes.trie
    finally:
        await client.aclose()


async def _all_disconnected(replicas):
    return not any(r.store.connected for r in replicas)


@pytest.mark.parametrize("save", [True, False], ids=["restart-with-data", "restart-without-data"])
@pytest.mark.gen_test(timeout=120)
async def test_redis_restart_under_load(make_redis_server, make_replica, make_backend, prefix, save):
    """Requests flow through three replicas (data planes on their own threads) and
    routes change, while Redis stops and starts again (with its saved table, or
    empty); no request to a stable route fails, writes are refused while it is
    away, and afterwards every replica serves exactly Redis's table."""
    server = make_redis_server()
    backend = make_backend()
    replicas = [await make_replica(url=server.url, thread=True) for _ in range(3)]
    stable = [f"/stable/{i}/" for i in range(6)]
    for spec in stable:
        await replicas[0].store.add_route(spec, backend.url, {})
    for replica in replicas:
        await replica.store.wait_applied(replicas[0].store.version, 1)

    stop = asyncio.Event()
    statuses = []
    writes = {"ok": 0, "unavailable": 0}

    async def load(replica, n):
        client = await RawClient.connect(address_of(replica.public_url))
        try:
            while not stop.is_set():
                statuses.append(await replica.get(f"{stable[n % len(stable)]}x", client))
        finally:
            await client.close()

    async def churn():
        rng = random.Random(13)
        while not stop.is_set():
            replica = rng.choice(replicas)
            spec = f"/churn/{rng.randrange(20)}/"
            try:
                if rng.random() < 0.4:
                    await replica.store.delete_route(spec)
                else:
                    await replica.store.add_route(spec, backend.url, {"n": rng.randrange(100)})
                writes["ok"] += 1
            except RouteStoreUnavailable:
                writes["unavailable"] += 1
                # Redis is away; retry at a human pace, not in a tight loop
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(load(r, n)) for n, r in enumerate(replicas * 2)] + [asyncio.create_task(churn())]
    loop = asyncio.get_running_loop()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        await poll(lambda: _at_least(statuses, 200), "load is flowing")
        await loop.run_in_executor(None, lambda: server.stop(save=save))
        noticed = await poll(lambda: _all_disconnected(replicas), "replicas notice Redis is gone")
        served_before, refused_before = len(statuses), writes["unavailable"]
        await poll(lambda: _at_least(statuses, served_before + 300), "load flows while Redis is away")
        await poll(lambda: _at_least_value(writes, "unavailable", refused_before + 1), "a write is refused")
        served_while_away = len(statuses) - served_before
        await loop.run_in_executor(None, server.start)
        reconnected = await poll(lambda: _all_connected(replicas), "replicas reconnect")
        served_after = len(statuses)
        await poll(lambda: _at_least(statuses, served_after + 300), "load keeps flowing")
        writes_after = writes["ok"] + 20
        await poll(lambda: _at_least_value(writes, "ok", writes_after), "writes succeed again")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    try:
        await poll(lambda: converged(replicas, client, prefix), "every replica serves Redis's table")
        table = await redis_table(client, prefix)
    finally:
        await client.aclose()
    print(
        f"\n{len(statuses)} requests through 3 replicas ({served_while_away} while Redis was away), "
        f"{writes['ok']} writes ok, {writes['unavailable']} refused while Redis was away; all replicas"
        f" noticed in {noticed * 1e3:.0f} ms, reloaded {reconnected * 1e3:.0f} ms after Redis was back"
    )
    assert set(statuses) == {200}
    assert set(stable) <= set(table)


async def _at_least(items, n):
    return len(items) >= n


async def _at_least_value(counts, key, n):
    return counts[key] >= n


async def _all_connected(replicas):
    return all(r.store.connected for r in replicas)


# --------------------------------------------------------------------------
# Password and TLS
# --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_password_from_url_or_environment_never_logged(make_redis_server, make_replica, backend, monkeypatch, caplog):
    password = "pw-" + secrets.token_hex(8)
    server = make_redis_server(password=password)
    caplog.set_level(logging.DEBUG)
    from_url = await make_replica(url=f"redis://:{password}@127.0.0.1:{server.port}/0")
    assert from_url.store.display_url == f"redis://:***@127.0.0.1:{server.port}/0"
    monkeypatch.setenv(PASSWORD_ENV, password)
    from_env = await make_replica(url=server.url)
    await from_url.store.add_route("/a/", backend.url, {})
    await from_env.store.wait_applied(from_url.store.version, 1)
    assert "/a/" in from_env.plane.routes.trie

    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + password)
    refused = await make_replica(url=server.url, wait=False)
    with pytest.raises(TimeoutError, match="(?i)auth|password"):
        await refused.store.wait_ready(1)
    with pytest.raises(RouteStoreUnavailable) as failure:
        await refused.store.add_route("/b/", backend.url, {})
    assert password not in str(failure.value)
    assert "redis://127.0.0.1" in caplog.text
    assert password not in caplog.text


@pytest.mark.gen_test(timeout=30)
async def test_tls(make_redis_server, make_replica, backend, tmp_path):
    """``rediss://`` with the CA from the URL (redis-py's ``ssl_ca_certs`` option)."""
    server = make_redis_server(tls=make_tls_files(tmp_path))
    assert server.url.startswith("rediss://")
    a, b = await make_replica(url=server.url), await make_replica(url=server.url)
    await a.store.add_route("/a/", backend.url, {})
    await b.store.wait_applied(a.store.version, 1)
    assert await b.get("/a/") == 200
