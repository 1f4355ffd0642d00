"""Errors the proxy generates are the Hub's own pages (CHP's ``--error-target``).

A dead target gets 503 and a path with no route 404, each with the HTML the
Hub's ``/hub/error/<code>`` renders. The request's target reaches the Hub as the
percent-encoded ``url`` query argument and is never reflected into the page.
"""

from urllib.parse import quote

import pytest
from jupyterhub.tests.utils import public_url
from jupyterhub.utils import random_port, url_path_join

XSS = "<script>alert(1)</script>"


def assert_hub_error_page(headers, body, status_line):
    """The body is the Hub's error template: page chrome, status heading, no reflected script."""
    assert headers["content-type"].startswith("text/html"), headers
    text = body.decode("utf-8")
    assert 'id="jupyterhub-logo"' in text, text[:2000]
    assert f"{status_line}</h1>" in text, text[:2000]
    assert XSS not in text
    return text


def assert_hub_saw(error_page_requests, status, target):
    """The Hub got one error-page request for ``status`` whose ``url`` is ``target``, escaped on the wire."""
    assert [(code, url) for code, _, url in error_page_requests] == [(status, target)]
    query = error_page_requests[0][1]
    assert "<" not in query and ">" not in query, query


async def test_dead_target_gets_hubs_503_page(app, disable_check_routes, routespec_for, raw_get, error_page_requests):
    prefix = url_path_join(app.base_url, "dead-target/")
    routespec = routespec_for(app, prefix)
    # random_port() closes the port it found: nothing listens there
    await app.proxy.add_route(routespec, f"http://127.0.0.1:{random_port()}", {})
    try:
        target = prefix + XSS
        status, headers, body = await raw_get(public_url(app), target)
    finally:
        await app.proxy.delete_route(routespec)

    assert status == 503
    text = assert_hub_error_page(headers, body, "503 : Service Unavailable")
    assert "Your server appears to be down" in text
    assert_hub_saw(error_page_requests, 503, target)


@pytest.mark.parametrize("tail", [XSS, quote(XSS)], ids=["raw", "percent-encoded"])
async def test_no_route_gets_hubs_404_page(app, without_hub_route, raw_get, error_page_requests, tail):
    target = url_path_join(app.base_url, "no-route/") + tail + "?q=1&next=/x"
    status, headers, body = await raw_get(public_url(app), target)

    assert status == 404
    assert_hub_error_page(headers, body, "404 : Not Found")
    assert_hub_saw(error_page_requests, 404, target)
