"""Failing backends and vanishing clients, 1,000 times each: nothing leaks, nothing is left behind.

Kinds of failure (``attack_helpers.FaultBackend`` plays the backend):

- backend closes mid-response (``/close-mid``): the client gets the head and
  the bytes sent, then its connection closes;
- backend resets before answering (``/reset``, SO_LINGER 0): 503;
- backend resets mid-response (``/reset-mid``): head and bytes, then closed;
- backend hangs (``/hang``) with ``response_header_timeout=0.5``: 504;
- backend answers garbage (``/garbage``): 502;
- client closes (FIN) mid-upload, once the backend has seen body bytes: the
  usual way a browser leaves (a tab closed); the proxy must give up the
  request, since the rest of its body can never come;
- client resets (RST, SO_LINGER 0) mid-upload, likewise;
- client disconnects mid-download: once it has the head and a body byte.

Before and after, with the proxy idle, the test compares open file
descriptors, asyncio tasks, the proxy's client connections, tunnels and
upstream pool, and RSS (this process holds the proxy, the backend and the
clients), and checks that nothing reached the loop's exception handler and
that the proxy logged nothing but its one-line warnings per upstream failure.
"""

import asyncio
import collections
import gc
import logging
import time

import pytest

from attack_helpers import (
    FaultBackend,
    LoopProblems,
    abort_with_reset,
    address_of_proxy,
    exchange,
    get,
    snapshot,
)

RUNS = 1000
WARM_UP_RUNS = 50
CONCURRENCY = 20
#: seconds one fault run may take
RUN_TIMEOUT = 5
#: seconds the proxy may take to become idle again (idle pooled connections
#: expire after upstream_keep_alive_timeout, enforced by the sweeper's ticks:
#: there is no event to await, so this polls every POLL_INTERVAL)
QUIESCE_TIMEOUT = 10
POLL_INTERVAL = 0.1
RSS_SLACK_KIB = 5 * 1024


class CountingHandler(logging.Handler):
    """Counts log records by their message template; keeps the unexpected ones."""

    EXPECTED = ("Proxy error on %s -> %s: %s: %s",)

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.counts = collections.Counter()
        self.unexpected = []

    def emit(self, record):
        self.counts[(record.levelname, record.msg)] += 1
        if (
            (record.levelno >= logging.WARNING and record.msg not in self.EXPECTED)
            or record.exc_info
            or record.levelno >= logging.ERROR
        ):
            self.unexpected.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def _request(method, target, extra=b""):
    return b"%s %s HTTP/1.1\r\nHost: proxy.test\r\n%s\r\n" % (method, target, extra)


async def status_of(address, target):
    data, ended = await exchange(address, _request(b"GET", target, b"Connection: close\r\n"), timeout=RUN_TIMEOUT)
    if not data:
        return f"nothing ({ended})"
    return first_line(data)


def first_line(data):
    return data.split(b"\r\n", 1)[0].decode()


async def cut_response(address, target):
    """A response whose head promised 100 bytes: report what arrived before the close."""
    data, ended = await exchange(address, _request(b"GET", target, b"Connection: close\r\n"), timeout=RUN_TIMEOUT)
    _, _, body = data.partition(b"\r\n\r\n")
    return f"{first_line(data)} + {len(body)} of 100 bytes, {ended}"


async def close_mid(ctx, i):
    return await cut_response(ctx.address, b"/close-mid/%d" % i)


async def reset_before_answer(ctx, i):
    return await status_of(ctx.address, b"/reset/%d" % i)


async def reset_mid(ctx, i):
    return await cut_response(ctx.address, b"/reset-mid/%d" % i)


async def hang(ctx, i):
    return await status_of(ctx.address, b"/hang/%d" % i)


async def garbage(ctx, i):
    return await status_of(ctx.address, b"/garbage/%d" % i)


async def _upload_then_leave(ctx, i, leave):
    url = b"/upload/%d" % i
    started = ctx.backend.upload_started[url] = asyncio.get_running_loop().create_future()
    reader, writer = await asyncio.open_connection(*ctx.address)
    try:
        writer.write(_request(b"POST", url, b"Content-Length: %d\r\n" % (1 << 20)) + b"u" * 65536)
        await asyncio.wait_for(started, RUN_TIMEOUT)
    finally:
        leave(writer.transport)
        del ctx.backend.upload_started[url]
    return "backend had body bytes, client left"


async def client_closes_mid_upload(ctx, i):
    # a plain close: nothing unread on our side, so the proxy gets a FIN (a tab closed)
    return await _upload_then_leave(ctx, i, lambda transport: transport.close())


async def client_resets_mid_upload(ctx, i):
    return await _upload_then_leave(ctx, i, abort_with_reset)


async def client_gone_mid_download(ctx, i):
    reader, writer = await asyncio.open_connection(*ctx.address)
    try:
        writer.write(_request(b"GET", b"/download/%d" % i))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RUN_TIMEOUT)
        await asyncio.wait_for(reader.readexactly(1), RUN_TIMEOUT)
    finally:
        writer.transport.abort()
    return f"{first_line(head)} + body bytes, client aborted"


KINDS = {
    "backend closes mid-response": (close_mid, "HTTP/1.1 200 OK + 3 of 100 bytes, closed"),
    "backend resets before answering": (reset_before_answer, "HTTP/1.1 503 Service Unavailable"),
    "backend resets mid-response": (reset_mid, "HTTP/1.1 200 OK + 3 of 100 bytes, closed"),
    "backend hangs (504 at 0.5 s)": (hang, "HTTP/1.1 504 Gateway Timeout"),
    "backend answers garbage": (garbage, "HTTP/1.1 502 Bad Gateway"),
    "client closes (FIN) mid-upload": (client_closes_mid_upload, "backend had body bytes, client left"),
    "client resets (RST) mid-upload": (client_resets_mid_upload, "backend had body bytes, client left"),
    "client gone mid-download": (client_gone_mid_download, "HTTP/1.1 200 OK + body bytes, client aborted"),
}


class Context:
    def __init__(self, address, backend):
        self.address = address
        self.backend = backend


async def run_kind(ctx, run, n):
    """Run ``run(ctx, i)`` for i in range(n), CONCURRENCY at a time; count outcomes."""
    outcomes = collections.Counter()
    numbers = iter(range(n))

    async def worker():
        for i in numbers:
            try:
                outcome = await run(ctx, i)
            except Exception as e:  # counted and reported by the test
                outcome = f"error {type(e).__name__}: {e}"
            outcomes[outcome] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


async def quiesce(proxy, backend, baseline=None):
    """Wait until the proxy is idle again: no connection at all, or (given a
    baseline) no more connections, fds and tasks than the baseline had."""
    deadline = time.monotonic() + QUIESCE_TIMEOUT
    while True:
        now = snapshot(proxy)
        now["backend_open"] = len(backend.open)
        if baseline is None:
            done = not (now["clients"] or now["tunnels"] or now["pool"] or now["backend_open"])
        else:
            done = all(now[g] <= baseline[g] for g in ("fds", "tasks", "clients", "tunnels", "pool", "backend_open"))
        if done or time.monotonic() > deadline:
            return now
        await asyncio.sleep(POLL_INTERVAL)


@pytest.mark.slow
@pytest.mark.gen_test(timeout=600)
async def test_thousand_faults_of_each_kind_leave_nothing_behind(routed_proxy):
    log = logging.getLogger("test_faults.proxy")
    log.propagate = False  # thousands of expected warnings: count them, don't store them
    log.setLevel(logging.DEBUG)
    handler = CountingHandler()
    log.addHandler(handler)
    backend = await FaultBackend().start()
    try:
        with LoopProblems() as problems:
            proxy = await routed_proxy(
                {"/": backend.url},
                log=log,
                response_header_timeout=0.5,
                upstream_keep_alive_timeout=1,
                new_route_retry_period=0,
            )
            ctx = Context(address_of_proxy(proxy), backend)

            for run, _ in KINDS.values():  # warm up allocators, pools and code paths
                await run_kind(ctx, run, WARM_UP_RUNS)
            first = before = await quiesce(proxy, backend)

            results = {}
            started = time.perf_counter()
            for kind, (run, _) in KINDS.items():
                kind_started = time.perf_counter()
                outcomes = await run_kind(ctx, run, RUNS)
                seconds = time.perf_counter() - kind_started
                after = await quiesce(proxy, backend, before)
                results[kind] = (outcomes, seconds, before, after)
                before = after
            total = time.perf_counter() - started

            responses, problem, _ = await get(ctx.address, "/still-serving")
            serving = problem is None and [r.status for r in responses] == [200]
            gc.collect()  # "Task exception was never retrieved" is reported at collection
            await asyncio.sleep(0)
    finally:
        log.removeHandler(handler)
        await backend.close()

    gauges = list(first)
    print(f"\n{'kind':34} {'runs':>5} {'seconds':>7}  outcomes")
    for kind, (outcomes, seconds, _, _) in results.items():
        print(f"{kind:34} {sum(outcomes.values()):>5} {seconds:>7.1f}  {dict(outcomes)}")
    print(f"total {sum(sum(r[0].values()) for r in results.values())} runs in {total:.1f} s (concurrency {CONCURRENCY})")
    print(f"\nchange of each gauge over each kind's {RUNS} runs, once the proxy is idle again:")
    print(f"{'kind':34} " + " ".join(f"{g:>12}" for g in gauges))
    for kind, (_, _, b, a) in results.items():
        print(f"{kind:34} " + " ".join(f"{a[g] - b[g]:>12}" for g in gauges))
    print(f"{'start (after warm-up)':34} " + " ".join(f"{first[g]:>12}" for g in gauges))
    print(f"{'end':34} " + " ".join(f"{after[g]:>12}" for g in gauges))
    print(f"proxy log: {dict(handler.counts)}")
    print(f"loop exception handler calls: {len(problems.contexts)}; unexpected log records: {len(handler.unexpected)}")
    print(f"proxy still serving afterwards: {serving}")

    for kind, (outcomes, _, _, _) in results.items():
        expected = KINDS[kind][1]
        assert outcomes == {expected: RUNS}, f"{kind}: {dict(outcomes)}"
    leaks = [
        f"{kind}: {g} {b[g]} -> {a[g]}"
        for kind, (_, _, b, a) in results.items()
        for g in ("fds", "tasks", "clients", "tunnels", "pool", "backend_open")
        if a[g] != b[g]
    ]
    assert not leaks, leaks
    assert after["rss_kib"] - first["rss_kib"] < RSS_SLACK_KIB
    assert not problems.contexts, problems.describe()
    assert not handler.unexpected, handler.unexpected[:20]
    assert serving
