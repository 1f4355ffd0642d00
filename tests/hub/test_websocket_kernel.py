"""A kernel's websocket through the proxy to a real single-user server.

JupyterHub's shipped (non-browser) suite sends no websocket through the proxy.
Here a real ``jupyterhub-singleuser`` starts a kernel over the REST API and the
client talks to it on ``/user/<name>/api/kernels/<id>/channels``, all through
the proxy, authenticated with the user's token.
"""

import asyncio
import json
import uuid
from datetime import datetime, timezone

from dateutil.parser import parse as parse_date
from jupyterhub.tests.utils import async_requests, public_url
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

#: seconds for a kernel to start and answer on a loaded 2-core machine
KERNEL_TIMEOUT = 60


def kernel_message(msg_type, session):
    """A Jupyter message for the JSON websocket protocol (no subprotocol)."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": session,
            "username": "",
            "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {},
        "buffers": [],
        "channel": "shell",
    }


async def reply_to(ws, request):
    """Read messages until the reply to ``request`` (other channels' status messages are skipped)."""
    while True:
        message = await ws.read_message()
        assert message is not None, "websocket closed before the reply"
        if isinstance(message, bytes):
            continue  # binary frames carry buffers; a kernel_info_reply has none
        reply = json.loads(message)
        if reply.get("parent_header", {}).get("msg_id") == request["header"]["msg_id"]:
            if reply["header"]["msg_type"] != "status":
                return reply


async def last_activity(app, routespec):
    value = (await app.proxy.get_all_routes())[routespec]["data"].get("last_activity")
    return parse_date(value) if value else None


async def test_kernel_info_over_proxied_websocket(app, user, full_spawn):
    await user.spawn()
    await app.proxy.add_user(user)
    spawner = user.spawner
    token = user.new_api_token()
    headers = {"Authorization": f"token {token}"}
    url = public_url(app, user)

    r = await async_requests.post(url + "api/kernels", headers=headers, data="{}")
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    try:
        ws_url = "ws" + url[len("http") :] + f"api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(HTTPRequest(ws_url, headers=headers, connect_timeout=KERNEL_TIMEOUT))
        try:
            after_handshake = datetime.now(timezone.utc)
            request = kernel_message("kernel_info_request", session=uuid.uuid4().hex)
            await ws.write_message(json.dumps(request))
            reply = await asyncio.wait_for(reply_to(ws, request), KERNEL_TIMEOUT)
            assert reply["header"]["msg_type"] == "kernel_info_reply"
            assert reply["content"]["status"] == "ok"
            assert reply["content"]["language_info"]["name"] == "python"

            # frames in an open tunnel count as activity (they keep servers from
            # being culled); the proxy records them within a second or so
            async def activity_after_frames():
                while True:
                    seen = await last_activity(app, spawner.proxy_spec)
                    if seen is not None and seen >= after_handshake:
                        return seen
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(activity_after_frames(), 10)
        finally:
            ws.close()
    finally:
        r = await async_requests.delete(url + f"api/kernels/{kernel_id}", headers=headers)
        assert r.status_code == 204, r.text
