"""Request smuggling: ambiguous framing never reaches a backend.

Each case writes exact bytes on a new connection to the proxy. Every case's
route ``/`` goes to a fresh ``RecordingBackend`` (so its upstream connections
carry only that case's bytes), which records every byte it receives and
answers each request with a fixed 200 naming the target it saw.

For each case the proxy must either answer 4xx and forward nothing, or answer
200 for requests that reach the backend exactly as it parsed them:

- the recorded bytes, parsed from scratch by llhttp (httptools) and by h11, an
  independent strict parser, give the same number of complete requests, no
  framing error, nothing left half-sent, and no bytes after an upgrade head
  (the backend never agrees to an upgrade, so nothing may follow it);
- that number equals the number of 200s the client got, and the targets the
  200 bodies name are, in order, the targets the backend parsed;
- a fresh request on a new connection is still served afterwards.

Each case of ``CASES`` is its own test, ``test_smuggling_table[<case>]``,
on a proxy of its own; it prints the statuses the client got, what each
parser says was forwarded, and the bytes the backend received.
"""

import pytest

from attack_helpers import (
    RecordingBackend,
    address_of_proxy,
    exchange,
    get,
    parse_responses,
    reparse_h11,
    reparse_llhttp,
)

H = b"Host: proxy.test\r\n"
CLOSE = b"Connection: close\r\n"
WS = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"

#: what a case must end in
REJECT = "4xx"  # 4xx (or 501/505), nothing forwarded
EITHER = "4xx|1"  # rejected as above, or exactly one request forwarded and answered
ONE = "1"  # exactly one request forwarded and answered 200
TWO = "2"  # two pipelined requests, both forwarded and answered, in order


def post(headers, body=b"", target=b"/a", method=b"POST", version=b"HTTP/1.1"):
    return b"%s %s %s\r\n" % (method, target, version) + H + headers + CLOSE + b"\r\n" + body


#: (name, bytes, expectation[, targets the backend must see in order])
CASES = [
    # --- Content-Length and Transfer-Encoding together or repeated
    ("cl_then_te", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED), EITHER),
    ("te_then_cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED), EITHER),
    ("cl_te_identity", post(b"Content-Length: 5\r\nTransfer-Encoding: identity\r\n", b"hello"), EITHER),
    ("two_different_cl", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), REJECT),
    ("two_identical_cl", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), EITHER),
    ("cl_list_5_5", post(b"Content-Length: 5, 5\r\n", b"hello"), EITHER),
    ("cl_plus_5", post(b"Content-Length: +5\r\n", b"hello"), EITHER),
    ("cl_minus_1", post(b"Content-Length: -1\r\n", b"hello"), EITHER),
    ("cl_hex", post(b"Content-Length: 0x5\r\n", b"hello"), EITHER),
    ("cl_leading_zeros", post(b"Content-Length: 005\r\n", b"hello"), EITHER),
    ("cl_overflow", post(b"Content-Length: 99999999999999999999999\r\n", b"hello"), EITHER),
    ("cl_space_before_colon", post(b"Content-Length : 5\r\n", b"hello"), EITHER),
    ("cl_tab_before_colon", post(b"Content-Length\t: 5\r\n", b"hello"), EITHER),
    ("te_space_before_colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED), EITHER),
    # --- Transfer-Encoding values
    ("te_chunked_identity", post(b"Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("te_identity_chunked", post(b"Transfer-Encoding: identity, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("te_xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("te_chunked_twice", post(b"Transfer-Encoding: chunked, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("te_two_fields", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"), EITHER),
    ("te_capitalised", post(b"Transfer-Encoding: Chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("te_vertical_tab", post(b"Transfer-Encoding:\x0bchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("te_http10", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", version=b"HTTP/1.0"), EITHER),
    # --- chunk sizes and extensions
    ("chunk_size_zz", post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"), REJECT),
    ("chunk_size_negative", post(b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"), REJECT),
    ("chunk_size_overflow", post(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), REJECT),
    ("chunk_size_space_after", post(b"Transfer-Encoding: chunked\r\n", b"5 \r\nhello\r\n0\r\n\r\n"), EITHER),
    ("chunk_size_space_before", post(b"Transfer-Encoding: chunked\r\n", b" 5\r\nhello\r\n0\r\n\r\n"), EITHER),
    ("chunk_extension", post(b"Transfer-Encoding: chunked\r\n", b"5;name=value\r\nhello\r\n0\r\n\r\n"), ONE),
    ("chunk_extension_quoted", post(b"Transfer-Encoding: chunked\r\n", b'5;a="b c"\r\nhello\r\n0\r\n\r\n'), EITHER),
    ("chunk_extension_bare_lf", post(b"Transfer-Encoding: chunked\r\n", b"5;a\nhello\r\n0\r\n\r\n"), EITHER),
    ("chunk_data_too_long", post(b"Transfer-Encoding: chunked\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"), REJECT),
    ("trailer_with_cl", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n"), EITHER),
    # --- line endings, folding, odd bytes
    ("obs_fold", post(b"X-Foo: a\r\n b\r\n"), EITHER),
    ("obs_fold_te", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED), EITHER),
    ("space_first_header", b"GET /a HTTP/1.1\r\n Host: proxy.test\r\n" + CLOSE + b"\r\n", EITHER),
    ("bare_lf_everywhere", b"GET /a HTTP/1.1\nHost: proxy.test\nConnection: close\n\n", EITHER),
    ("bare_lf_in_header", b"GET /a HTTP/1.1\r\nHost: proxy.test\nX-A: b\r\n" + CLOSE + b"\r\n", EITHER),
    ("bare_cr_in_value", post(b"X-A: a\rb\r\n"), EITHER),
    ("nul_in_header_name", post(b"X-A\x00B: c\r\n"), EITHER),
    ("nul_in_header_value", post(b"X-A: b\x00c\r\n"), EITHER),
    ("nul_in_target", post(b"", target=b"/a\x00b"), EITHER),
    ("non_ascii_header_name", post(b"X-\xff: c\r\n"), EITHER),
    ("non_ascii_header_value", post(b"X-A: caf\xe9\r\n"), EITHER),
    ("non_ascii_target", post(b"", target=b"/caf\xc3\xa9"), EITHER),
    ("header_without_colon", post(b"X-A b\r\n"), EITHER),
    ("lower_case_method", post(b"", method=b"get"), EITHER),
    ("http_version_2", post(b"", method=b"GET", version=b"HTTP/2.0"), EITHER),
    # --- request-target forms this reverse proxy does not route (docs/design.md)
    ("absolute_form", b"GET http://evil.test/a HTTP/1.1\r\n" + H + CLOSE + b"\r\n", REJECT),
    ("connect_authority_form", b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", REJECT),
    ("options_asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + CLOSE + b"\r\n", REJECT),
    # --- requests behind requests
    (
        "request_after_cl_0",
        b"GET /first HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\nGET /second HTTP/1.1\r\n" + H + CLOSE + b"\r\n",
        TWO,
        [b"/first", b"/second"],
    ),
    (
        "request_after_chunked_body",
        b"POST /first HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /second HTTP/1.1\r\n" + H + CLOSE + b"\r\n",
        TWO,
        [b"/first", b"/second"],
    ),
    ("request_inside_body", post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED, target=b"/first"), ONE, [b"/first"]),
    # RFC 9112 9.6 wants the first request answered and the rest ignored; llhttp
    # rejects bytes after "Connection: close", so a 400 with nothing forwarded is safe too
    ("request_after_connection_close", b"GET /first HTTP/1.1\r\n" + H + CLOSE + b"\r\n" + SMUGGLED, EITHER),
    # --- upgrades the backend does not perform: what follows must stay behind
    (
        "h2c_upgrade_then_request",
        b"GET /first HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + SMUGGLED,
        ONE,
        [b"/first"],
    ),
    ("websocket_refused_then_request", b"GET /first HTTP/1.1\r\n" + H + WS + b"\r\n" + SMUGGLED, ONE, [b"/first"]),
    # --- CONNECT, and upgrade requests with a body
    # docs/design.md: CONNECT gets 400. llhttp treats any CONNECT as a tunnel request,
    # and the upstream parser would not know a 2xx answer to it starts a tunnel
    ("connect_origin_form", b"CONNECT /a HTTP/1.1\r\n" + H + CLOSE + b"\r\n", REJECT),
    # llhttp ends an upgrade request at its head; a body announced by Content-Length
    # or chunked framing must not be forwarded as if it were (or were not) there
    ("websocket_with_cl_body", b"GET /first HTTP/1.1\r\n" + H + WS + b"Content-Length: 5\r\n\r\nhello", EITHER),
    (
        "websocket_with_chunked_body",
        b"GET /first HTTP/1.1\r\n" + H + WS + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        EITHER,
    ),
]


def _rejected(status):
    return 400 <= status < 500 or status in (501, 505)


async def run_case(proxy, data):
    """Send one case's bytes through the proxy to a fresh recording backend.

    Returns a dict with the client's responses and both parsers' view of what
    the backend received.
    """
    backend = await RecordingBackend("H").start()
    try:
        await proxy.add_route("/", backend.url, {"hub": True})
        address = address_of_proxy(proxy)
        raw, ended = await exchange(address, data, timeout=5)
        responses, problem = parse_responses(raw)
        llhttp = backend.reparse(reparse_llhttp)
        h11 = backend.reparse(reparse_h11)
        still_open = [conn in backend.open for conn in backend.connections]
        raw_received = backend.raw_by_connection()
        # then a normal request on a new connection must still be served
        fresh, fresh_problem, _ = await get(address, "/fresh")
        return {
            "ended": ended,
            "responses": responses,
            "problem": problem,
            "llhttp": llhttp,
            "h11": h11,
            "still_open": still_open,
            "raw": raw_received,
            "fresh": (fresh, fresh_problem),
        }
    finally:
        await backend.close()


def check_case(expect, result, targets=None):
    """The case's invariants; returns a list of violations (empty: fine)."""
    bad = []
    statuses = [r.status for r in result["responses"]]
    ok = [r for r in result["responses"] if r.status == 200]
    llhttp, h11 = result["llhttp"], result["h11"]
    forwarded = sum(len(r.messages) for r in llhttp)
    forwarded_h11 = sum(len(r.messages) for r in h11)
    rejected = bool(statuses) and all(_rejected(s) for s in statuses)

    if result["ended"] == "timeout":
        bad.append("the proxy neither answered nor closed within 5 s")
    if result["problem"] is not None:
        bad.append(f"client-side response parse: {result['problem']}")
    if not statuses:
        bad.append("no response at all")
    if any(s != 200 and not _rejected(s) for s in statuses):
        bad.append(f"unexpected statuses {statuses}")
    if forwarded != len(ok):
        bad.append(f"backend parsed {forwarded} requests (llhttp) but the client got {len(ok)} x 200")
    if forwarded_h11 != forwarded:
        bad.append(f"parsers disagree on what was forwarded: llhttp {forwarded}, h11 {forwarded_h11}")
    for i, (one, two, still_open) in enumerate(zip(llhttp, h11, result["still_open"])):
        for parser, view in (("llhttp", one), ("h11", two)):
            if view.framing_error:
                bad.append(f"upstream connection {i}: {parser} error {view.error}")
            if view.partial and (ok or still_open):
                # a request cut short is fine only on a connection the proxy
                # aborted when it rejected the client's bytes
                bad.append(f"upstream connection {i}: {parser} sees an incomplete request")
            if view.upgraded and view.after_upgrade:
                bad.append(f"upstream connection {i}: bytes after an upgrade head: {view.after_upgrade[:40]!r}")
    seen = [m[0] for r in llhttp for m in r.messages]
    answered = [r.body.split(b" ", 2)[2] for r in ok]
    if seen != answered:
        bad.append(f"targets the backend saw {seen} != targets answered {answered}")
    if targets is not None and seen != targets:
        bad.append(f"the backend saw {seen}, expected {targets}")
    if expect == REJECT and not (rejected and forwarded == 0):
        bad.append(f"expected a 4xx and nothing forwarded, got {statuses} with {forwarded} forwarded")
    if expect == ONE and not (statuses == [200] and forwarded == 1):
        bad.append(f"expected one request answered 200, got {statuses} with {forwarded} forwarded")
    if expect == TWO and not (statuses == [200, 200] and forwarded == 2):
        bad.append(f"expected two requests answered 200, got {statuses} with {forwarded} forwarded")
    if expect == EITHER and not ((rejected and forwarded == 0) or (statuses == [200] and forwarded == 1)):
        bad.append(f"expected a 4xx or one forwarded request, got {statuses} with {forwarded} forwarded")
    fresh, fresh_problem = result["fresh"]
    if fresh_problem is not None or [r.status for r in fresh] != [200]:
        bad.append(f"a fresh request afterwards was not served: {fresh} {fresh_problem}")
    return bad


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.gen_test(timeout=30)
async def test_smuggling_table(make_proxy, case):
    name, data, expect = case[:3]
    targets = case[3] if len(case) > 3 else None
    proxy = await make_proxy(new_route_retry_period=0, response_header_timeout=3)

    result = await run_case(proxy, data)

    bad = check_case(expect, result, targets)
    statuses = [r.status for r in result["responses"]]
    forwarded = sum(len(r.messages) for r in result["llhttp"])
    forwarded_h11 = sum(len(r.messages) for r in result["h11"])
    notes = [r.error for r in result["h11"] if r.error and not r.framing_error]
    print(
        f"\n{name}: expect {expect}, statuses {statuses}, forwarded {forwarded} (llhttp) {forwarded_h11} (h11)"
        f"{'; h11: ' + '; '.join(notes) if notes else ''}; the backend received {result['raw']}"
    )
    assert not bad, "\n".join(bad)


#: RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
#: HTTP/1.1 request message that lacks a Host header field and to any request message
#: that contains more than one Host header field line"
HOST_RULE_CASES = {
    "two_host_fields": b"GET /a HTTP/1.1\r\nHost: alice.test\r\nHost: bob.test\r\n" + CLOSE + b"\r\n",
    "no_host_http11": b"GET /a HTTP/1.1\r\n" + CLOSE + b"\r\n",
    # HTTP/0.9 has no headers at all: the proxy cannot forward it as the
    # HTTP/1.1 request it sends upstream without a Host
    "http09_request_line": b"GET /a\r\n\r\n",
}


@pytest.mark.parametrize("name", list(HOST_RULE_CASES))
@pytest.mark.gen_test(timeout=20)
async def test_host_rules_of_rfc9112(make_proxy, name):
    proxy = await make_proxy(new_route_retry_period=0)
    result = await run_case(proxy, HOST_RULE_CASES[name])

    statuses = [r.status for r in result["responses"]]
    forwarded = [m for r in result["llhttp"] for m in r.messages]
    print(f"\n{name}: statuses {statuses}, forwarded {[(t, h) for t, h, _ in forwarded]}")
    assert statuses == [400] and forwarded == [], f"{name}: got {statuses}, forwarded {forwarded}"
