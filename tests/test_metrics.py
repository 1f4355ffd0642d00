"""The proxy's metrics, scraped from a real Hub's ``/hub/metrics`` after proxied traffic.

A real JupyterHub (``tests/realhub.py``) runs InProcessProxy with two extra
routes: ``/echo/`` to a small HTTP server in this process and ``/dead/`` to a
port nobody listens on. The test scrapes ``/hub/metrics`` (through the proxy,
with a token that has ``read:metrics``, as Prometheus would), sends a known
mix of requests, scrapes again and checks each metric moved by what was sent.
"""

from http.server import BaseHTTPRequestHandler

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from realhub import RealHub
from support.ports import free_port
from support.threadserver import serving

OK_REQUESTS = 7
NOT_FOUND_REQUESTS = 3
DEAD_REQUESTS = 2
BODY = b"x" * 1000


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if self.path.startswith("/echo/ok") else 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    with serving(_Echo) as url:
        yield url


@pytest.fixture
def hub(tmp_path, echo_server):
    config = f"""
    c.Proxy.extra_routes = {{"/echo/": {echo_server!r}, "/dead/": "http://127.0.0.1:{free_port()}"}}
    c.InProcessProxy.new_route_retry_period = 0
    c.JupyterHub.load_roles[0]["scopes"].append("read:metrics")
    """
    with RealHub(tmp_path / "hub", config=config) as hub:
        with hub.log_shown_on_failure():
            yield hub


def scrape(hub):
    """``{(name, frozenset(labels.items())): value}`` of every proxy sample."""
    response = hub.api("GET", "/../metrics")
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.startswith("jupyterhub_proxy_"):
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.timeout(180)
def test_hub_metrics_count_proxied_traffic(hub):
    before = scrape(hub)
    for _ in range(OK_REQUESTS):
        assert requests.get(f"{hub.public_url}/echo/ok", timeout=10).status_code == 200
    for _ in range(NOT_FOUND_REQUESTS):
        assert requests.get(f"{hub.public_url}/echo/missing", timeout=10).status_code == 404
    for _ in range(DEAD_REQUESTS):
        assert requests.get(f"{hub.public_url}/dead/x", timeout=10).status_code == 503
    after = scrape(hub)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests_total = "jupyterhub_proxy_requests_total"
    # the first scrape went through the proxy too, and counts once it completed
    assert delta(requests_total, kind="http", status_class="2xx") == OK_REQUESTS + 1
    assert delta(requests_total, kind="http", status_class="4xx") == NOT_FOUND_REQUESTS
    assert delta(requests_total, kind="http", status_class="5xx") == DEAD_REQUESTS
    assert delta(requests_total, kind="websocket", status_class="1xx") == 0
    assert delta("jupyterhub_proxy_upstream_errors_total", cause="connect") == DEAD_REQUESTS
    assert delta("jupyterhub_proxy_upstream_errors_total", cause="timeout") == 0
    total = OK_REQUESTS + 1 + NOT_FOUND_REQUESTS + DEAD_REQUESTS
    assert delta("jupyterhub_proxy_request_duration_seconds_count", kind="http") == total
    assert delta("jupyterhub_proxy_request_duration_seconds_bucket", kind="http", le="+Inf") == total
    assert delta("jupyterhub_proxy_body_bytes_total", direction="out") >= (OK_REQUESTS + NOT_FOUND_REQUESTS) * len(BODY)
    # the Hub's route, /echo/ and /dead/
    assert value(after, "jupyterhub_proxy_routes") == 3
    assert value(after, "jupyterhub_proxy_websocket_tunnels") == 0
    assert value(after, "jupyterhub_proxy_client_connections") >= 1  # the scrape's own connection
    # the connection to the Hub carrying the scrape itself is busy
    assert value(after, "jupyterhub_proxy_upstream_connections", state="busy") >= 1
    assert value(after, "jupyterhub_proxy_upstream_connections", state="idle") >= 0
    assert value(after, "jupyterhub_proxy_route_operation_duration_seconds_count", operation="add") >= 3
    assert value(after, "jupyterhub_proxy_route_operation_duration_seconds_count", operation="get_all") >= 1
