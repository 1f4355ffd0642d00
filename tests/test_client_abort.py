"""A client that leaves costs the target nothing: its upstream connection closes at once.

A user closing a tab on a slow request, or a client timing out, closes (FIN)
or resets (RST) its connection while its request waits for the response or
while the response is arriving. The proxy then aborts the target connection
carrying that request (it cannot be reused mid-response), as
configurable-http-proxy and nginx do, instead of holding it until
``response_header_timeout``. The backend here records when it sees its
connection close; the proxy runs on its own thread as in a Hub.
"""

import asyncio
import time

import pytest

from attack_helpers import abort_with_reset, address_of_proxy, open_fds

#: the backend must see its connection closed within this many seconds of the client leaving
CLOSE_WITHIN = 1.0
ABORTS = 100
CONCURRENT = 20
#: seconds to wait for the process's file descriptors to return to their baseline;
#: the closes happen on the proxy's thread, so the test thread polls
FD_SETTLE_TIMEOUT = 5.0
POLL_INTERVAL = 0.02


class SilentBackend:
    """Reads each request head and never answers (or answers with a head and one body byte).

    ``closed`` gets, per connection, the monotonic time the proxy closed it.
    """

    def __init__(self, *, partial_response=False):
        self.partial_response = partial_response
        self.heads = asyncio.Queue()
        self.closed = asyncio.Queue()

    async def script(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        if self.partial_response:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx")
        await self.heads.put(head)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        await self.closed.put(time.monotonic())


async def leave(writer, how):
    if how == "fin":
        writer.close()
    else:
        abort_with_reset(writer.transport)


async def request_then_leave(address, backend, request, how, *, read_head=False):
    """Send ``request``, wait until the backend has it, leave; returns when the client left."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await asyncio.wait_for(backend.heads.get(), CLOSE_WITHIN * 5)
    if read_head:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_WITHIN * 5)
    left_at = time.monotonic()
    await leave(writer, how)
    return left_at


GET = b"GET /user/slow/ HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
UPGRADE = (
    b"GET /user/slow/ws HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize(
    "case",
    [
        pytest.param((GET, False), id="waiting-for-response"),
        pytest.param((UPGRADE, False), id="websocket-before-101"),
        pytest.param((GET, True), id="mid-response"),
    ],
)
@pytest.mark.gen_test(timeout=30)
async def test_backend_sees_its_connection_closed_when_the_client_leaves(make_proxy, make_raw_backend, how, case):
    request, mid_response = case
    backend = SilentBackend(partial_response=mid_response)
    proxy = await make_proxy()
    await proxy.add_route("/user/slow/", await make_raw_backend(backend.script), {})
    aborts_before = proxy.stats.client_aborts

    left_at = await request_then_leave(address_of_proxy(proxy), backend, request, how, read_head=mid_response)

    closed_at = await asyncio.wait_for(backend.closed.get(), CLOSE_WITHIN * 5)
    assert closed_at - left_at < CLOSE_WITHIN
    assert proxy.stats.client_aborts == aborts_before + 1


async def settled_fd_count(baseline):
    """The process's open fds once they are back to ``baseline`` (or the count at the deadline)."""
    deadline = time.monotonic() + FD_SETTLE_TIMEOUT
    while (count := open_fds()) > baseline and time.monotonic() < deadline:
        await asyncio.sleep(POLL_INTERVAL)
    return count


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.gen_test(timeout=60)
async def test_a_hundred_aborted_requests_leave_no_descriptor_behind(make_proxy, make_raw_backend, how):
    backend = SilentBackend()
    proxy = await make_proxy()
    await proxy.add_route("/user/slow/", await make_raw_backend(backend.script), {})
    address = address_of_proxy(proxy)
    # one round first, so lazily opened descriptors (epoll, self-pipes) exist
    await request_then_leave(address, backend, GET, how)
    await asyncio.wait_for(backend.closed.get(), CLOSE_WITHIN * 5)
    baseline = await settled_fd_count(open_fds())

    for _ in range(ABORTS // CONCURRENT):
        await asyncio.gather(*(request_then_leave(address, backend, GET, how) for _ in range(CONCURRENT)))
    for _ in range(ABORTS):
        await asyncio.wait_for(backend.closed.get(), CLOSE_WITHIN * 5)

    assert await settled_fd_count(baseline) <= baseline
    assert len(proxy.server.pool) == 0
    assert proxy.stats.client_aborts == ABORTS + 1
