"""dispatch.route_request: every rule applied before a byte goes to a target, as a table.

The same function ``forward.Exchange`` calls, so these rows are the rules the
proxy serves by; the socket-level tests (route confusion, smuggling, errors)
check the bytes around them.
"""

import pytest

from inprocess_proxy.dispatch import BAD_REQUEST, HEALTHY, NO_ROUTE, NOT_LOADED, Forward, route_request
from inprocess_proxy.http1 import CHUNKED_BODY, LENGTH_BODY, NO_BODY
from inprocess_proxy.routes import RouteTrie

HOST = (b"Host", b"hub.example.com")
WS = [HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Version", b"13")]


def trie(host_routing=False):
    table = RouteTrie(host_routing)
    specs = ["/", "/user/alice/", "/user/has%40x/"] if not host_routing else ["/", "alice.example.com/"]
    for spec in specs:
        table.add(spec, f"http://127.0.0.1:9000/prefix{len(spec)}", {}, 0.0)
    return table


def decide(method=b"GET", target=b"/user/alice/tree", headers=(HOST,), *, http10=False, upgrade=False, host_routing=False):
    return route_request(
        method,
        target,
        list(headers),
        http10=http10,
        upgrade=upgrade,
        trie=trie(host_routing),
        health_check_path="/_chp_healthz",
        peer=b"10.0.0.1",
        tls=False,
    )


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"target": b"http://hub.example.com/user/alice/"}, BAD_REQUEST),
        ({"target": b"*", "method": b"OPTIONS"}, BAD_REQUEST),
        ({"target": b"hub.example.com:443", "method": b"CONNECT"}, BAD_REQUEST),
        ({"target": b"/user/alice/", "method": b"CONNECT"}, BAD_REQUEST),
        ({"headers": []}, BAD_REQUEST),
        ({"headers": [HOST, HOST]}, BAD_REQUEST),
        ({"target": b"/_chp_healthz"}, HEALTHY),
        ({"target": b"/_chp_healthz?probe=1"}, HEALTHY),
        ({"target": b"/user/alice/../bob/"}, BAD_REQUEST),
        ({"target": b"/user/alice/%2e%2E/bob/"}, BAD_REQUEST),
        ({"target": b"/user/alice/", "headers": WS + [(b"Content-Length", b"5")], "upgrade": True}, BAD_REQUEST),
        ({"target": b"/user/alice/", "headers": WS + [(b"Transfer-Encoding", b"chunked")], "upgrade": True}, BAD_REQUEST),
    ],
    ids=[
        "absolute-form",
        "asterisk-form",
        "connect-authority",
        "connect-origin",
        "http11-without-host",
        "two-hosts",
        "health",
        "health-with-query",
        "dot-segment",
        "encoded-dot-segment",
        "upgrade-with-length-body",
        "upgrade-with-chunked-body",
    ],
)
def test_answers_without_a_target(kwargs, expected):
    assert decide(**kwargs) == expected


def test_health_is_503_until_a_shared_table_is_loaded_and_routing_goes_on():
    table = trie()
    table.loaded = False
    kwargs = dict(http10=False, upgrade=False, trie=table, health_check_path="/_chp_healthz", peer=b"", tls=False)
    assert route_request(b"GET", b"/_chp_healthz", [HOST], **kwargs) == NOT_LOADED
    assert NOT_LOADED.status == 503
    # a replica serves the routes it has meanwhile
    assert route_request(b"GET", b"/user/alice/tree", [HOST], **kwargs).route.routespec == "/user/alice/"


def test_no_route_is_the_hubs_404_page():
    table = RouteTrie()
    table.add("/user/alice/", "http://127.0.0.1:9000", {}, 0.0)
    decision = route_request(
        b"GET", b"/hub/", [HOST], http10=False, upgrade=False, trie=table, health_check_path="", peer=b"", tls=False
    )
    assert decision == NO_ROUTE


@pytest.mark.parametrize(
    "target, routespec",
    [
        (b"/user/alice/tree", "/user/alice/"),
        (b"/user/alice", "/user/alice/"),
        (b"/user/alicex/", "/"),
        (b"/user/has@x/lab", "/user/has%40x/"),
        (b"/user/has%40x/lab?x=1", "/user/has%40x/"),
        (b"/user/alice%2Fx/", "/"),
    ],
)
def test_forward_matches_by_decoded_segments_and_prefixes_the_target_path(target, routespec):
    decision = decide(target=target)
    assert isinstance(decision, Forward)
    assert decision.route.routespec == routespec
    prefix = decision.route.endpoint.prefix
    assert decision.head.startswith(b"GET " + prefix + target + b" HTTP/1.1\r\n")
    assert decision.body == NO_BODY and decision.websocket is None


def test_http10_without_host_is_routed():
    decision = decide(headers=[], http10=True)
    assert isinstance(decision, Forward) and decision.route.routespec == "/user/alice/"


@pytest.mark.parametrize(
    "host, routespec",
    [(b"alice.example.com", "alice.example.com/"), (b"ALICE.example.com:8000", "alice.example.com/"), (b"other", "/")],
)
def test_host_routing_matches_the_host_first(host, routespec):
    decision = decide(headers=[(b"Host", host)], host_routing=True)
    assert decision.route.routespec == routespec


@pytest.mark.parametrize(
    "headers, body",
    [([HOST, (b"Content-Length", b"3")], LENGTH_BODY), ([HOST, (b"Transfer-Encoding", b"chunked")], CHUNKED_BODY)],
)
def test_forward_reports_the_body_framing(headers, body):
    assert decide(method=b"POST", headers=headers).body == body


def test_websocket_upgrade_keeps_its_upgrade_value_and_headers():
    decision = decide(target=b"/user/alice/api/kernels/1/channels", headers=WS, upgrade=True)
    assert decision.websocket == b"websocket"
    assert b"Upgrade: websocket\r\n" in decision.head and b"X-Forwarded-Proto: ws\r\n" in decision.head


@pytest.mark.parametrize("method, upgrade_value", [(b"POST", b"websocket"), (b"GET", b"h2c")])
def test_other_upgrades_are_forwarded_as_plain_requests(method, upgrade_value):
    headers = [HOST, (b"Connection", b"Upgrade"), (b"Upgrade", upgrade_value)]
    decision = decide(method=method, headers=headers, upgrade=True)
    assert isinstance(decision, Forward) and decision.websocket is None
    assert b"Upgrade:" not in decision.head
