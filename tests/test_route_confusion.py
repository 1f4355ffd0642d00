"""Route confusion: a path never reaches a server the Hub would not send it to.

``/user/alice/`` -> backend A, ``/user/bob/`` -> backend B, ``/`` -> backend H
(the Hub). Each path is sent raw on its own connection; the table prints
which backend received it, and what target it saw, or the status. The rule
(docs/design.md, "Route confusion: the rule"): paths are split on literal
``/`` before percent-decoding, dot segments (literal or encoded) get 400,
matching is case-sensitive and empty segments are kept.

Invariants checked over everything each backend ever received:

- A only receives targets whose path, split on literal ``/`` with each segment
  percent-decoded, starts with ``["user", "alice"]``; B likewise with ``bob``;
- no backend receives a path with a dot segment.

The second half checks that error pages never echo request input unescaped
(a page that does is a reflected cross-site scripting hole), without a Hub and
with one.
"""

import posixpath
from urllib.parse import unquote

import pytest
from jupyterhub.objects import Hub

from attack_helpers import RecordingBackend, address_of_proxy, exchange, get, parse_responses, reparse_llhttp
from support.ports import free_port

A, B, HUB = "A", "B", "H"

#: path -> where it must end: a backend name or a status
PATHS = [
    # from the issue
    ("/user/bob/../alice/x", 400),
    ("/user/bob/%2e%2e/alice/x", 400),
    ("/user/bob/%2E%2e/alice/x", 400),
    ("/user/bob%2F..%2Falice/x", HUB),  # segments user, "bob/../alice", x
    ("/user/alice%2fx", HUB),  # segments user, "alice/x"
    ("//user/alice/x", HUB),
    ("/user//alice/x", HUB),
    ("/USER/alice/x", HUB),
    ("/user/ALICE/x", HUB),
    ("/user/al%69ce/x", A),  # an encoded letter: it is alice, consistently
    ("/user/alice@x/", HUB),
    ("/user/%61lice/x", A),
    ("/user/alice/..%2f..%2fbob/x", A),  # segments user, alice, "../../bob", x
    # more of the same kind
    ("/user/alice", A),
    ("/user/alice/", A),
    ("/user/alicex/", HUB),
    ("/user/alic", HUB),
    ("/%75ser/alice/x", A),
    ("/user/alice/./x", 400),
    ("/user/alice/.", 400),
    ("/user/alice/..", 400),
    ("/user/alice/%2e/x", 400),
    ("/user/alice/.%2e/bob", 400),
    ("/user/alice/%2e./bob", 400),
    ("/user/bob/../../user/alice/x", 400),
    ("/user/%2e%2e/user/alice/", 400),
    ("/./user/alice/", 400),
    ("/user/bob/x#/../../alice/", 400),  # '#' is not special in a request target
    ("/user/bob/x?/../../alice/", B),  # the query is not routed
    ("/user/bob/x?a=/user/alice/", B),
    ("/user/alice%2Fx", HUB),
    ("/user/alice%2f", HUB),
    ("/user/alice%00/x", HUB),
    ("/user/alice%20/x", HUB),
    ("/user/alice;/x", HUB),
    ("/user/alice%ff/x", HUB),
    ("/user/al%2569ce/", HUB),  # double-encoded: decodes once to "al%69ce"
    ("/user/bob/%252e%252e/alice/", B),  # double-encoded dots are not dots once decoded
    ("/user/alice/%2e%2e%2f%2e%2e%2fbob/", A),
    ("/user/bob/%ZZ/", B),  # an invalid escape stays as it is
    ("/user/alice\\..\\bob/", HUB),  # backslash is no separator
    ("/user/alice/\\..\\..\\bob/", A),
]


def decoded_segments(target):
    """The routing view: path split on literal '/', each segment percent-decoded."""
    path = target.split(b"?", 1)[0].decode("latin-1")
    return [unquote(s, encoding="latin-1") for s in path.split("/")[1:]]


def has_dot_segment(target):
    return any(s in (".", "..") for s in decoded_segments(target))


def decode_first_view(target):
    """What a backend that decodes the whole path *before* splitting would resolve it to."""
    path = target.split(b"?", 1)[0].decode("latin-1")
    return posixpath.normpath(unquote(path, encoding="latin-1"))


@pytest.fixture
def three_backends(io_loop):
    started = []

    async def start():
        for name in (A, B, HUB):
            started.append(await RecordingBackend(name).start())
        return dict(zip((A, B, HUB), started))

    yield io_loop.run_sync(start, timeout=30)
    for backend in started:
        io_loop.run_sync(backend.close, timeout=30)


@pytest.mark.gen_test(timeout=60)
async def test_route_confusion_table(make_proxy, three_backends):
    proxy = await make_proxy(new_route_retry_period=0)
    await proxy.add_route("/user/alice/", three_backends[A].url, {"user": "alice"})
    await proxy.add_route("/user/bob/", three_backends[B].url, {"user": "bob"})
    await proxy.add_route("/", three_backends[HUB].url, {"hub": True})
    address = address_of_proxy(proxy)

    rows = []
    mismatches = []
    for path, expected in PATHS:
        responses, problem, ended = await get(address, path.encode("latin-1"))
        assert problem is None and len(responses) == 1, (path, responses, problem, ended)
        response = responses[0]
        if response.status == 200:
            name = response.header("X-Backend").decode()
            seen = response.body.split(b" ", 2)[2]
            outcome = name
        else:
            name, seen, outcome = "-", b"", response.status
        rows.append((path, outcome, name, seen.decode("latin-1"), decode_first_view(path.encode("latin-1"))))
        if outcome != expected:
            mismatches.append(f"{path}: got {outcome}, expected {expected}")

    print()
    print(f"{'path':40} {'status/backend':14} {'target the backend saw':40} decode-first view")
    for path, outcome, name, seen, decode_first in rows:
        print(f"{path:40} {str(outcome):14} {seen:40} {decode_first}")

    # the invariants, over everything each backend ever received
    violations = []
    for name, backend in three_backends.items():
        for _, _, target in backend.requests:
            segments = decoded_segments(target)
            if name == A and segments[:2] != ["user", "alice"]:
                violations.append(f"A received {target!r} ({segments})")
            if name == B and segments[:2] != ["user", "bob"]:
                violations.append(f"B received {target!r} ({segments})")
            if has_dot_segment(target):
                violations.append(f"{name} received a dot segment: {target!r}")
        # and the bytes each backend got parse as exactly the requests it answered
        for parsed in backend.reparse(reparse_llhttp):
            assert parsed.error is None and not parsed.partial, parsed
    counts = {name: len(backend.requests) for name, backend in three_backends.items()}
    print(f"received: {counts}; {sum(1 for r in rows if r[1] == 400)} x 400; invariant violations: {len(violations)}")
    assert not violations, violations
    assert not mismatches, mismatches


# -- error pages never echo request input ------------------------------------------------

#: a request target full of markup (a space is not allowed in a request line, so %20)
HOSTILE_TARGETS = [
    b"/<script>x</script>?q=\"'><img%20src=x>",
    b"/user/nobody/<script>alert(1)</script>/x?q=\"'><img%20src=x%20onerror=alert(1)>",
    b"/%3Cscript%3Ex%3C/script%3E?q=%22%27%3E%3Cimg%20src=x%3E",
]
#: markup that must never come back; the proxy's own plain-text pages do not
#: even echo the target in encoded form
MARKUP = (b"<script", b"<img", b"\"'>")
FORBIDDEN = MARKUP + (b"%3Cscript", b"onerror")


async def hostile_requests(address, target):
    """A GET, a HEAD and a websocket upgrade of ``target``; returns their responses."""
    results = []
    for method, extra in (
        (b"GET", b""),
        (b"HEAD", b""),
        (b"GET", b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    ):
        data, ended = await exchange(
            address, b"%s %s HTTP/1.1\r\nHost: proxy.test\r\n%sConnection: close\r\n\r\n" % (method, target, extra)
        )
        assert ended != "timeout", (method, target)
        results.append((method, data))
    return results


def assert_no_echo(label, data, needles=FORBIDDEN):
    lowered = data.lower()
    for needle in needles:
        assert needle.lower() not in lowered, f"{label}: response echoes {needle!r}: {data[:400]!r}"


@pytest.mark.parametrize("situation", ["missing_route_404", "dead_target_503", "dot_segment_400", "long_target_414"])
@pytest.mark.gen_test(timeout=30)
async def test_error_pages_without_hub_never_echo_request(make_proxy, situation):
    proxy = await make_proxy(new_route_retry_period=0, max_url_size=200)
    assert proxy.hub is None
    if situation == "dead_target_503":
        await proxy.add_route("/", f"http://127.0.0.1:{free_port()}", {"hub": True})
    address = address_of_proxy(proxy)
    expected = {"missing_route_404": 404, "dead_target_503": 503, "dot_segment_400": 400, "long_target_414": 414}[
        situation
    ]
    summary = []
    for target in HOSTILE_TARGETS:
        if situation == "dot_segment_400":
            target = target.replace(b"/x", b"/../x", 1) if b"/x" in target else b"/.." + target
        if situation == "long_target_414":
            target = target + b"&pad=" + b"a" * 200
        for method, data in await hostile_requests(address, target):
            status = int(data.split(b" ", 2)[1])
            assert status == expected, (situation, method, target, data[:200])
            assert_no_echo(f"{situation} {method.decode()} {target!r}", data)
            head, _, body = data.partition(b"\r\n\r\n")
            content_type = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-type")]
            summary.append((method.decode(), status, content_type[0].decode() if content_type else "-", body[:40]))
    print(f"\n{situation}: " + "; ".join(f"{m} {s} [{ct}] {b!r}" for m, s, ct, b in sorted(set(summary))))


@pytest.mark.gen_test(timeout=30)
async def test_error_page_fetch_from_hub_carries_the_target_fully_quoted(make_proxy):
    """With a Hub, the proxy asks ``/hub/error/<code>?url=<target>``: the target
    must arrive percent-encoded in one well-formed request, so the Hub (which
    escapes what it renders) gets it as data, and a Hub echoing it raw still
    cannot produce markup. The 'Hub' here is a recording backend whose page is
    ``H GET <target it received>``."""
    hub_backend = await RecordingBackend("H").start()
    try:
        hub = Hub(ip="127.0.0.1", port=hub_backend.port, base_url="/hub/")
        proxy = await make_proxy(new_route_retry_period=0, hub=hub)
        address = address_of_proxy(proxy)
        for target in HOSTILE_TARGETS:
            responses, problem, _ = await get(address, target)
            assert problem is None and [r.status for r in responses] == [404], responses
            assert_no_echo(f"404 via Hub page {target!r}", responses[0].body, MARKUP)
        fetched = [t for _, _, t in hub_backend.requests]
        print("\nerror-page requests the Hub got:\n  " + "\n  ".join(t.decode() for t in fetched))
        assert len(fetched) == len(HOSTILE_TARGETS)
        for target in fetched:
            path, _, query = target.partition(b"?")
            assert path == b"/hub/error/404"
            assert query.startswith(b"url=")
            # nothing but unreserved characters and %XX escapes after url=
            value = query[4:]
            assert all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%" for c in value), value
        for parsed in hub_backend.reparse(reparse_llhttp):
            assert parsed.error is None and not parsed.partial, parsed
    finally:
        await hub_backend.close()


# -- host routing: the Host the proxy routes by is the Host the backend sees ----------------


@pytest.mark.parametrize(
    "hosts",
    [
        [b"bob.example", b"alice.example"],
        [b"alice.example", b"bob.example"],
        [b"alice.example:8000", b"bob.example"],
    ],
    ids=["bob-then-alice", "alice-then-bob", "alice-port-then-bob"],
)
@pytest.mark.gen_test(timeout=30)
async def test_host_routing_never_forwards_a_host_other_than_the_routed_one(make_proxy, three_backends, hosts):
    """With host routing, a request with two Host fields is ambiguous (RFC 9112 3.2
    wants 400). Whatever the proxy does, a backend must never get a Host or
    X-Forwarded-Host naming another user's host than the one it was routed by."""
    proxy = await make_proxy(new_route_retry_period=0, host_routing=True)
    await proxy.add_route("alice.example/", three_backends[A].url, {"user": "alice"})
    await proxy.add_route("bob.example/", three_backends[B].url, {"user": "bob"})
    await proxy.add_route("/", three_backends[HUB].url, {"hub": True})
    data = b"GET /x HTTP/1.1\r\n" + b"".join(b"Host: %s\r\n" % h for h in hosts) + b"Connection: close\r\n\r\n"

    raw, ended = await exchange(address_of_proxy(proxy), data)

    responses, problem = parse_responses(raw)
    assert problem is None and len(responses) == 1, (raw, problem, ended)
    seen = {}
    for name in (A, B):
        for parsed in three_backends[name].reparse(reparse_llhttp):
            for _, headers, _ in parsed.messages:
                named = [v for n, v in headers if n.lower() in (b"host", b"x-forwarded-host")]
                seen.setdefault(name, []).extend(named)
    print(f"\nHost fields {hosts}: status {responses[0].status}; Host/X-Forwarded-Host the backends saw: {seen}")
    for name, own in ((A, b"alice.example"), (B, b"bob.example")):
        for value in seen.get(name, []):
            assert value.split(b":")[0].lower() == own, f"backend {name} ({own.decode()}) got Host/X-Forwarded-Host {value!r}"
    assert responses[0].status == 400, "RFC 9112 3.2: more than one Host field is a 400"
