"""internal_ssl: the proxy reaches https targets with the Hub's ``proxy-client`` certificate.

With internal_ssl every target (the Hub, user servers) is https and demands a
client certificate signed by an authority it trusts. The driver also runs
JupyterHub's test_proxy and test_api with ``SSL_ENABLED=1`` (test_api's
test_spawn, among others, reaches an https user server through the proxy), so
this module stays minimal: one user server, and an error page, which the proxy
fetches from the Hub itself.
"""

from jupyterhub.tests.utils import api_request, async_requests, public_url
from jupyterhub.utils import url_path_join

# JupyterHub's `app` fixture: this module's MockHub runs with internal_ssl
ssl_enabled = True


async def test_user_server_over_internal_ssl(app, user):
    assert app.internal_ssl
    r = await api_request(app, "users", user.name, "server", method="post")
    assert r.status_code == 201, r.text
    spawner = user.spawner
    route = (await app.proxy.get_all_routes())[spawner.proxy_spec]
    assert route["target"].startswith("https://"), route

    # the public side stays plain http
    r = await async_requests.get(public_url(app, user) + "tls-probe")
    assert r.status_code == 200
    assert r.text == spawner.server.base_url + "tls-probe"  # the mock server echoes its path


async def test_error_page_from_hub_over_internal_ssl(app, without_hub_route, raw_get, error_page_requests):
    assert app.hub.url.startswith("https://")
    target = url_path_join(app.base_url, "no-route/here")
    status, headers, body = await raw_get(public_url(app), target)
    assert status == 404
    assert headers["content-type"].startswith("text/html")
    assert b"404 : Not Found</h1>" in body
    assert [(code, url) for code, _, url in error_page_requests] == [(404, target)]
