"""MockHub tests: JupyterHub's own fixtures, with every MockHub using InProcessProxy.

``jupyterhub.tests.conftest`` provides ``app`` (one MockHub per module, started
through ``JupyterHub.start()``, so the proxy runs in the Hub's event loop),
``user``, ``full_spawn`` and the per-test cleanup of servers and users. The
vendored ``jh_proxy_plugin`` makes MockHub's ``proxy_class`` default to the
class named by ``JUPYTERHUB_TEST_PROXY_CLASS``, which this file sets to
``inprocess`` unless it is set already (``default`` runs these tests against
configurable-http-proxy, to check the tests themselves).

Blocking clients (JupyterHub's ``async_requests``, ``raw_get`` here) run in
worker threads, never on the event loop the Hub and the proxy share.
"""

import asyncio
import http.client
import os
import sys
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jupyterhub_suite"))
os.environ.setdefault("JUPYTERHUB_TEST_PROXY_CLASS", "inprocess")

pytest_plugins = ["jupyterhub.tests.conftest", "jh_proxy_plugin"]


def pytest_configure(config):
    import jh_proxy_plugin

    # real single-user servers refuse to run as root without it
    jh_proxy_plugin.ensure_allow_root()


@pytest.fixture
def disable_check_routes(app):
    """Stop the Hub's periodic check_routes, which would undo ad-hoc route changes.

    As JupyterHub's tests/test_proxy.py does.
    """
    app._periodic_callbacks["last_activity"].stop()
    try:
        yield
    finally:
        app._periodic_callbacks["last_activity"].start()


@pytest.fixture
async def without_hub_route(app, disable_check_routes):
    """Remove the Hub's own route (its base URL, which catches every unrouted path); put it back after."""
    await app.proxy.delete_route(app.hub.routespec)
    try:
        yield
    finally:
        await app.proxy.add_hub_route(app.hub)


@pytest.fixture
def error_page_requests():
    """Record the requests the Hub's ``/hub/error/<code>`` handler gets, as (code, query, url argument)."""
    from jupyterhub.handlers.pages import ProxyErrorHandler

    seen = []
    real_get = ProxyErrorHandler.get

    async def get(self, status_code_s):
        seen.append((int(status_code_s), self.request.query, self.get_argument("url", None)))
        return await real_get(self, status_code_s)

    with mock.patch.object(ProxyErrorHandler, "get", get):
        yield seen


def _routespec_for(app, path):
    if app.subdomain_host:
        return urlsplit(app.subdomain_host).hostname + path
    return path


@pytest.fixture
def routespec_for():
    """``routespec_for(app, path)``: a routespec for ``path`` in the Hub's routing mode (host first with subdomains)."""
    return _routespec_for


def _get(url, target, headers, timeout):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        # http.client sends the target as given: no quoting, no normalising
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def _raw_get(url, target, headers=None, timeout=30):
    return await asyncio.to_thread(_get, url, target, headers or {}, timeout)


@pytest.fixture
def raw_get():
    """``await raw_get(url, target, headers=None)``: GET ``target`` verbatim from the server at ``url``.

    Runs in a thread. Returns ``(status, {lowercase name: value}, body bytes)``.
    """
    return _raw_get
