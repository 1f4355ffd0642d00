"""``last_activity`` from HTTP traffic, as JupyterHub reads it from ``get_all_routes()``.

InProcessProxy records wall-clock ``time.time()``; these tests compare the
parsed ISO-8601 strings with wall-clock times taken around the traffic.
"""

import asyncio
import re
from datetime import datetime, timezone

import pytest

from backends import build_request
from support.ports import free_port

#: JupyterHub parses this: UTC, ``Z`` suffix, fractional seconds optional
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
#: how long activity may take to show up while a response is still streaming
#: (a periodic sweeper may record it about once a second)
STREAMING_ACTIVITY_BOUND = 5


def _now():
    """Wall-clock now, truncated to milliseconds (the coarsest format allowed)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def _last_activity(proxy, routespec):
    """The route's last_activity as an aware datetime, or None; checks the format."""
    data = (await proxy.get_all_routes())[routespec]["data"]
    text = data.get("last_activity")
    if text is None:
        return None
    assert isinstance(text, str) and ISO_Z.match(text), text
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)


#: the route data the Hub gives alice's default server
ALICE = {"user": "alice", "server_name": ""}


@pytest.mark.gen_test(timeout=10)
async def test_proxied_request_records_iso_activity_ending_in_z(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url, "/user/alice/": (backend.url, ALICE)})
    before = _now()
    client = await open_client(proxy)

    assert (await client.request("GET", "/user/alice/api/status")).status == 200

    activity = await _last_activity(proxy, "/user/alice/")
    assert activity is not None
    assert before <= activity <= datetime.now(timezone.utc)


@pytest.mark.gen_test(timeout=10)
async def test_activity_is_recorded_on_the_matched_route_only(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url, "/user/alice/": (backend.url, ALICE)})
    client = await open_client(proxy)

    assert (await client.request("GET", "/user/alice/tree")).status == 200

    assert await _last_activity(proxy, "/user/alice/") is not None
    assert await _last_activity(proxy, "/") is None


@pytest.mark.gen_test(timeout=10)
async def test_activity_advances_with_later_traffic(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url, "/user/alice/": (backend.url, ALICE)})
    client = await open_client(proxy)
    assert (await client.request("GET", "/user/alice/first")).status == 200
    first = await _last_activity(proxy, "/user/alice/")
    before_second = _now()

    assert (await client.request("GET", "/user/alice/second")).status == 200

    second = await _last_activity(proxy, "/user/alice/")
    assert second >= before_second
    assert second > first


@pytest.mark.gen_test(timeout=15)
async def test_activity_advances_while_a_long_response_streams(routed_proxy, backend, open_client):
    proxy = await routed_proxy({"/": backend.url, "/user/alice/": (backend.url, ALICE)})
    client = await open_client(proxy)
    await client.send(build_request("GET", "/user/alice/trickle"))
    head = await client.read_head()
    assert head.status == 200
    chunks = client.body_chunks(head)
    await anext(chunks)
    reader = asyncio.ensure_future(_drain(chunks))
    try:
        await backend.entered.wait()
        mid_stream = _now()

        # Nothing signals "activity recorded", so poll get_all_routes (what the
        # Hub does), bounded, while the backend keeps streaming.
        for _ in range(STREAMING_ACTIVITY_BOUND * 10):
            activity = await _last_activity(proxy, "/user/alice/")
            if activity is not None and activity >= mid_stream:
                break
            await asyncio.sleep(0.1)
        assert not reader.done(), "the response ended before activity was checked"
        assert activity is not None and activity >= mid_stream, (activity, mid_stream)
    finally:
        backend.gate.set()
        await reader
    assert reader.result().endswith(b"end\n")


async def _drain(chunks):
    received = b""
    async for chunk in chunks:
        received += chunk
    return received


@pytest.mark.gen_test(timeout=10)
async def test_proxy_generated_503_is_not_activity(routed_proxy, open_client):
    proxy = await routed_proxy({"/user/alice/": (f"http://127.0.0.1:{free_port()}", ALICE)}, new_route_retry_period=0)
    client = await open_client(proxy)

    assert (await client.request("GET", "/user/alice/api/status")).status == 503

    # a server that is down must not look busy to the idle culler (as with CHP)
    assert await _last_activity(proxy, "/user/alice/") is None
