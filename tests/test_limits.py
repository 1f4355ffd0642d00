"""Size limits on request heads: answered quickly, without buffering, and the proxy keeps serving.

The proxy runs with its default limits (``max_url_size`` 16 KiB -> 414,
``max_header_size`` 64 KiB and ``max_header_count`` 256 -> 431). Each case
streams its bytes in 64 KiB writes while a reader waits for the answer, so a
proxy that buffered everything would show up as a late answer and as RSS
growth of this process (the proxy runs in it). Each test prints how long the
answer took and how many bytes had been written by then.
"""

import asyncio
import gc
import time

import pytest

from attack_helpers import RecordingBackend, address_of_proxy, get
from support.procfs import rss_kib

#: the proxy's defaults (docs/configuration.md)
MAX_URL = 16384
MAX_HEAD = 65536
MAX_HEADERS = 256
#: seconds within which a limit must be answered (measured: milliseconds)
ANSWER_WITHIN = 1.0
#: the never-ending header line and request target of the streaming cases
ENDLESS_BYTES = 2 * 1024 * 1024
WRITE_SIZE = 64 * 1024
#: RSS growth allowed while 2 MB of endless head are thrown at the proxy
RSS_SLACK_KIB = 4 * 1024


async def stream_until_answered(address, prefix, filler=b"", total=0):
    """Write ``prefix``, then ``filler`` repeated up to ``total`` bytes, until the proxy answers.

    Returns ``(status, seconds until the status line arrived, bytes written by then)``.
    """
    reader, writer = await asyncio.open_connection(*address)
    written = 0
    started = time.perf_counter()

    async def write_all():
        nonlocal written
        writer.write(prefix)
        written += len(prefix)
        await writer.drain()
        while written < total and not answered.is_set():
            writer.write(filler)
            written += len(filler)
            await writer.drain()
            # one loop turn (not a timed wait) so that the proxy, on this
            # loop, reads each write before the next: "written by then" is
            # then close to what the proxy read before it answered
            await asyncio.sleep(0)

    answered = asyncio.Event()
    writing = asyncio.ensure_future(write_all())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        elapsed = time.perf_counter() - started
        answered.set()
        status = int(head.split(b" ", 2)[1])
        # then the proxy closes; while we are still writing, closing with
        # unread bytes makes the kernel send a reset after the answer
        try:
            rest = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            rest = b""
        assert len(rest) < 100, rest
        return status, elapsed, written
    finally:
        writing.cancel()
        try:
            await writing
        except (asyncio.CancelledError, ConnectionError):
            pass  # the proxy closed while we were still writing: expected
        writer.transport.abort()


@pytest.fixture
def limited_proxy(io_loop, routed_proxy):
    """A proxy with default limits, ``/`` routed to a recording backend."""
    backends = []

    async def start():
        backend = await RecordingBackend("H").start()
        backends.append(backend)
        proxy = await routed_proxy({"/": backend.url}, new_route_retry_period=0)
        proxy.test_backend = backend
        return proxy

    yield io_loop.run_sync(start, timeout=30)
    for backend in backends:
        io_loop.run_sync(backend.close, timeout=30)


async def assert_still_serving(proxy):
    responses, problem, _ = await get(address_of_proxy(proxy), "/still-serving")
    assert problem is None and [r.status for r in responses] == [200], (responses, problem)


CASES = {
    # name: (prefix, filler, total, expected status)
    "request_line_20k": (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"", 0, 414),
    "request_target_2mb_no_end": (b"GET /", b"a" * WRITE_SIZE, ENDLESS_BYTES, 414),
    "one_header_100k": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n", b"", 0, 431),
    "headers_300": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
        b"",
        0,
        431,
    ),
    "headers_250_of_300b": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 300) for i in range(250)) + b"\r\n",
        b"",
        0,
        431,
    ),
    "header_value_2mb_no_end": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ", b"c" * WRITE_SIZE, ENDLESS_BYTES, 431),
    "header_name_2mb_no_end": (b"GET / HTTP/1.1\r\nHost: x\r\nX-", b"n" * WRITE_SIZE, ENDLESS_BYTES, 431),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.gen_test(timeout=30)
async def test_limit_answered_quickly_and_proxy_keeps_serving(limited_proxy, case):
    prefix, filler, total, expected = CASES[case]
    address = address_of_proxy(limited_proxy)
    gc.collect()
    rss_before = rss_kib()

    status, elapsed, written = await stream_until_answered(address, prefix, filler, total)

    gc.collect()
    rss_growth = rss_kib() - rss_before
    print(
        f"\n{case}: {status} after {elapsed * 1000:.1f} ms, {written / 1024:.0f} KiB written by then"
        f" (of {max(total, len(prefix)) / 1024:.0f} KiB), RSS growth {rss_growth} KiB"
    )
    assert status == expected
    assert elapsed < ANSWER_WITHIN
    assert limited_proxy.test_backend.requests == [], "an over-limit request reached the backend"
    if total:
        assert rss_growth < RSS_SLACK_KIB, f"RSS grew {rss_growth} KiB while streaming {total} bytes of head"
    await assert_still_serving(limited_proxy)


@pytest.mark.gen_test(timeout=30)
async def test_heads_just_under_the_limits_are_served(limited_proxy):
    """The limits are where the documentation says: just under them is fine."""
    address = address_of_proxy(limited_proxy)
    target = b"/" + b"a" * (MAX_URL - 1)
    responses, problem, _ = await get(address, target)
    assert problem is None and [r.status for r in responses] == [200]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS - 2))
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /many HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:100]


HEAD_CASES = {
    "head_target_20k": (b"HEAD /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "head_header_100k": (b"HEAD / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("case", list(HEAD_CASES))
@pytest.mark.gen_test(timeout=30)
async def test_head_request_over_a_limit_gets_no_body(limited_proxy, case):
    """RFC 9110 9.3.2 / RFC 9112 6.3: a response to HEAD ends with its header
    section; bytes after it would be read as the start of another response."""
    data, expected = HEAD_CASES[case]
    reader, writer = await asyncio.open_connection(*address_of_proxy(limited_proxy))
    writer.write(data)
    received = bytearray()
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our bytes unread; what arrived before counts
    finally:
        writer.transport.abort()
    head, _, after_head = bytes(received).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].decode()
    print(f"\n{case}: {status_line}, {len(after_head)} bytes after the head: {after_head!r}")
    assert head.startswith(b"HTTP/1.1 %d " % expected)
    assert after_head == b""
