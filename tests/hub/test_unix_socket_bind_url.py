"""A Hub whose public URL is a unix socket (``bind_url = http+unix://...``).

InProcessProxy binds the socket itself (JupyterHub's own test_unix_socket_proxy
checks CHP's command line and REST API instead, so the plugin skips it).
"""

import os
import shutil
import stat
import tempfile
from urllib.parse import quote

import pytest
from jupyterhub.httpclient import fetch
from jupyterhub.tests.mocking import MockHub
from jupyterhub.tests.utils import auth_header
from traitlets.config import Config


@pytest.fixture
async def unix_socket_hub():
    """A started MockHub whose bind_url is a unix socket; yields (app, socket path)."""
    # a short directory: socket paths are limited to ~100 bytes
    directory = tempfile.mkdtemp(prefix="ipp-")
    path = os.path.join(directory, "proxy.sock")
    config = Config()
    config.JupyterHub.bind_url = f"http+unix://{quote(path, safe='')}"
    app = MockHub.instance(config=config)
    app.last_activity_interval = 0
    try:
        await app.initialize([])
        await app.start()

        async def noop():
            return

        # as JupyterHub's tests/test_unix_socket.py: stop() must not cancel pytest's tasks
        app.shutdown_cancel_tasks = noop
        yield app, path
    finally:
        await app.stop()
        MockHub.clear_instance()
        shutil.rmtree(directory, ignore_errors=True)


async def test_hub_api_through_unix_socket(unix_socket_hub):
    app, path = unix_socket_hub
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)

    bind_url = app.bind_url.rstrip("/")
    r = await fetch(f"{bind_url}/hub/api", method="GET")
    assert r.status == 200
    assert "version" in await r.json()

    r = await fetch(f"{bind_url}/hub/api/info", method="GET", headers=auth_header(app.db, "admin"))
    assert r.status == 200
    assert (await r.json())["version"]
