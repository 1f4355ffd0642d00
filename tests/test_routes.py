"""RouteTrie: longest whole-segment prefix, escaping, host routing, validation.

The first tables adapt configurable-http-proxy's ``test/trie_spec.js``; the
rest cover what JupyterHub 6.1.1's routespecs need: they are escaped strings
(``Proxy.validate_routespec``, ``User.proxy_spec``), named-server routes nest
under their user's route, and with ``subdomain_host`` a user route starts with
its host while ``/`` stays the fallback for every host, matched as CHP does
(``lib/configproxy.js``: ``/`` + host + path).
"""

import pytest

from inprocess_proxy.routes import RouteTrie, routespec_key, split_host, split_path

TARGET = "http://127.0.0.1:8888"


def trie_with(*routespecs, host_routing=False):
    trie = RouteTrie(host_routing=host_routing)
    for routespec in routespecs:
        trie.add(routespec, TARGET, {"routespec": routespec}, added_at=0.0)
    return trie


def matched(trie, path, host=None):
    """The routespec a request is routed to, or None (a 404)."""
    route = trie.match_request(path, host)
    return None if route is None else route.routespec


def assert_routes(trie, cases, host=None):
    for path, expected in cases:
        assert matched(trie, path, host) == expected, path


def node_count(trie):
    """Trie nodes below the root (reaches inside, as trie_spec.js checks ``size``)."""
    count, stack = 0, [trie._root]
    while stack:
        children = stack.pop().children.values()
        count += len(children)
        stack.extend(children)
    return count


# -- configurable-http-proxy's trie_spec.js ---------------------------------

CHP_ROUTES = ["/1", "/2", "/a/b/c/d", "/a/b/d", "/a/b/e", "/b", "/b/c", "/b/c/d"]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/not/found", None),
        ("/1", "/1"),
        ("/1/etc/etc/", "/1"),
        ("/a", None),
        ("/a/b/c", None),
        ("/a/b/c/d/e/f", "/a/b/c/d"),
        ("/b/c/d/word", "/b/c/d"),
        ("/b/c/dword", "/b/c"),
        ("/b/just-b", "/b"),
        ("/", None),
        ("", None),
    ],
)
def test_longest_prefix_on_whole_segments(path, expected):
    assert matched(trie_with(*CHP_ROUTES), path) == expected


@pytest.mark.parametrize(
    "routespecs, removed, cases",
    [
        (
            CHP_ROUTES,
            "/b",
            [("/b/just-b", None), ("/b/c/sub-still-here", "/b/c"), ("/a/b/c/d/word", "/a/b/c/d")],
        ),
        (CHP_ROUTES, "/a/b/c/d", [("/a/b/c/d/word", None), ("/a/b/d/x", "/a/b/d")]),
        (["/", "/prefix"], "/prefix", [("/prefix/sub", "/")]),
        (["/", "/prefix/"], "/prefix/", [("/prefix/sub", "/"), ("/", "/")]),
        (["/", "/prefix/"], "/", [("/prefix/sub", "/prefix/"), ("/", None), ("/other", None)]),
    ],
)
def test_remove_keeps_children_and_other_routes(routespecs, removed, cases):
    trie = trie_with(*routespecs)
    assert trie.remove(removed).routespec == removed
    assert removed not in trie
    assert len(trie) == len(routespecs) - 1
    assert_routes(trie, cases)


@pytest.mark.parametrize(
    "routespecs, cases",
    [
        (["/"], [("/1/etc/etc/", "/"), ("/prefix/sub", "/"), ("/", "/"), ("", "/")]),
        (
            ["/", "/prefix/sub/tree"],
            [("/prefix", "/"), ("/prefix/sub", "/"), ("/prefix/sub/tree", "/prefix/sub/tree")],
        ),
        (
            ["/", "/prefix/sub/tree", "/prefix"],
            [("/prefix", "/prefix"), ("/prefix/sub", "/prefix"), ("/prefix/sub/tree", "/prefix/sub/tree")],
        ),
    ],
)
def test_root_is_the_fallback(routespecs, cases):
    assert_routes(trie_with(*routespecs), cases)


# -- JupyterHub's routespecs -------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        # the caller strips "?x=1" from "/user/name?x=1" before matching
        ("/user/name", "/user/name/"),
        ("/user/name/", "/user/name/"),
        ("/user/name/anything", "/user/name/"),
        ("/user/name/lab/tree/x.ipynb", "/user/name/"),
        ("/user/namex", "/"),
        ("/user/namex/", "/"),
        ("/user", "/"),
        ("/User/name/", "/"),
        ("/user//name/", "/"),
        ("/user/name//x", "/user/name/"),
        # named servers nest under the default server's route
        ("/user/name/srv/", "/user/name/srv/"),
        ("/user/name/srv/api/kernels", "/user/name/srv/"),
        ("/user/name/srvx/", "/user/name/"),
        ("/hub/login", "/hub/"),
    ],
)
def test_user_routes_match_whole_segments(path, expected):
    trie = trie_with("/", "/hub/", "/user/name/", "/user/name/srv/")
    assert matched(trie, path) == expected


def test_readding_a_routespec_replaces_its_route():
    trie = trie_with("/user/a/")
    trie.add("/user/a/", "http://127.0.0.1:9999", {"new": True}, added_at=1.0)
    assert len(trie) == 1
    route = trie.match_request("/user/a/x")
    assert (route.target, route.data) == ("http://127.0.0.1:9999", {"new": True})


@pytest.mark.parametrize("absent", ["/user/nobody/", "/user/", "/user/a/b/", "/"])
def test_removing_an_absent_route_changes_nothing(absent):
    trie = trie_with("/user/a/", "/user/a/b/c/")
    nodes = node_count(trie)
    assert trie.remove(absent) is None
    assert (len(trie), node_count(trie)) == (2, nodes)
    assert_routes(trie, [("/user/a/x", "/user/a/"), ("/user/a/b/c/", "/user/a/b/c/")])


@pytest.mark.parametrize(
    "routespecs",
    [
        ["/a/b/c/d/"],
        ["/a/", "/a/b/", "/a/b/c/"],
        ["/a/b/c/", "/a/b/", "/a/"],
        ["/a@b/x/", "/a%40b/x/"],
        ["host.example.com/user/x/", "/"],
    ],
)
def test_removing_every_route_prunes_every_branch(routespecs):
    host_routing = any(not spec.startswith("/") for spec in routespecs)
    trie = trie_with(*routespecs, host_routing=host_routing)
    for routespec in routespecs:
        trie.remove(routespec)
    assert (len(trie), node_count(trie)) == (0, 0)


@pytest.mark.parametrize(
    "removed, pruned",
    [("/a/b/c/d", 2), ("/a/b/d", 1), ("/b/c/d", 1), ("/b", 0), ("/b/c", 0), ("/1", 1)],
)
def test_remove_prunes_only_branches_left_empty(removed, pruned):
    trie = trie_with(*CHP_ROUTES)
    nodes = node_count(trie)
    trie.remove(removed)
    assert node_count(trie) == nodes - pruned


# -- escaping ----------------------------------------------------------------

ESCAPED_ROUTES = [
    "/",
    "/user/has%40x/",
    "/user/%E7%A7%80%E6%A8%B9/",
    "/user/~TestJH/",
    "/user/has%25x/",
    "/user/a/",
    "/user/a%2Fb/",
    "/@/space%20word/",
]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/user/has@x/", "/user/has%40x/"),
        ("/user/has%40x/", "/user/has%40x/"),
        ("/user/has%40x/lab", "/user/has%40x/"),
        ("/user/秀樹/", "/user/%E7%A7%80%E6%A8%B9/"),
        ("/user/%E7%A7%80%E6%A8%B9/tree", "/user/%E7%A7%80%E6%A8%B9/"),
        ("/user/%e7%a7%80%e6%a8%b9/", "/user/%E7%A7%80%E6%A8%B9/"),
        ("/user/~TestJH/", "/user/~TestJH/"),
        ("/user/%7ETestJH/", "/user/~TestJH/"),
        ("/user/has%25x/", "/user/has%25x/"),
        ("/@/space%20word/hub/", "/@/space%20word/"),
        ("/@/space word/hub/", "/@/space%20word/"),
        ("/%40/space%20word/", "/@/space%20word/"),
        ("/@/space+word/", "/"),
        # %2F is part of a segment, never a separator
        ("/user/a%2Fb/x", "/user/a%2Fb/"),
        ("/user/a%2fb/", "/user/a%2Fb/"),
        ("/user/a/b/", "/user/a/"),
        ("/user%2Fa/x", "/"),
        # invalid UTF-8, raw (forward.py decodes it with surrogateescape) or
        # escaped, is not the replacement character U+FFFD
        ("/user/\udcff/", "/"),
        ("/user/%FF/", "/"),
    ],
)
def test_requests_match_on_decoded_segments(path, expected):
    trie = trie_with(*ESCAPED_ROUTES, "/user/%EF%BF%BD/")
    assert matched(trie, path) == expected


@pytest.mark.parametrize("first, second", [("/a@b/", "/a%40b/"), ("/a%40b/", "/a@b/")])
@pytest.mark.parametrize("deleted", ["first", "second"])
def test_routespecs_that_decode_alike_are_both_kept(first, second, deleted):
    trie = trie_with(first, second)
    assert len(trie) == 2 and first in trie and second in trie
    assert matched(trie, "/a@b/x") == second  # the most recent wins
    gone, kept = (first, second) if deleted == "first" else (second, first)
    trie.remove(gone)
    assert matched(trie, "/a@b/x") == kept
    assert matched(trie, "/a%40b/x") == kept
    trie.remove(kept)
    assert matched(trie, "/a@b/x") is None


@pytest.mark.parametrize("host_routing", [False, True])
def test_listing_returns_routespecs_byte_for_byte(host_routing):
    if host_routing:
        routespecs = ["/", "Sub.Example.COM/user/has%40x/", "sub.example.com/user/has@x/", "[::1]:8000/x/"]
    else:
        routespecs = ESCAPED_ROUTES + ["/a@b/", "/a%40b/", "/user/name"]
    trie = trie_with(*routespecs, host_routing=host_routing)
    assert [route.routespec for route in trie] == routespecs
    assert [trie.get(spec).routespec for spec in routespecs] == routespecs


# -- dot segments ------------------------------------------------------------

# A backend might resolve "/user/a/../b/" into another route's prefix, so a
# path with a dot segment, plain or escaped, has no route: split_path raises
# (the data path answers 400) and such a routespec cannot be added.
# (configurable-http-proxy resolves them instead: /user/foo/../bar -> /user/bar.)

DOT_PATHS = ["/.", "/..", "/a/./b", "/user/foo/../bar/", "/a/b/..", "/user/%2E%2E/x", "/user/%2e/", "/a/.%2E/b"]


@pytest.mark.parametrize("path", DOT_PATHS)
def test_dot_segments_are_refused(path):
    with pytest.raises(ValueError, match="dot segment"):
        split_path(path)
    with pytest.raises(ValueError):
        trie_with("/", "/user/foo/").match_request(path)


@pytest.mark.parametrize("path", ["/.well-known/x", "/a/.b/c", "/a/..b/", "/.../", "/%2E%2E%2E/"])
def test_dots_inside_a_segment_are_plain_text(path):
    assert matched(trie_with("/"), path) == "/"


# -- split_path and split_host -----------------------------------------------


@pytest.mark.parametrize(
    "path, segments",
    [
        ("", []),
        ("/", []),
        ("/a", ["a"]),
        ("/a/", ["a"]),
        ("/a/b/c/", ["a", "b", "c"]),
        ("/a//b", ["a", "", "b"]),
        ("/a//", ["a", ""]),
        ("//", [""]),
        ("/has%40x/", ["has@x"]),
        ("/a%2Fb/c", ["a/b", "c"]),
        ("/%E7%A7%80", ["秀"]),
        ("/秀", ["秀"]),
        ("/a%20b/a+b", ["a b", "a+b"]),
        ("/100%/%zz", ["100%", "%zz"]),
        ("/.well-known/a.b", [".well-known", "a.b"]),
        ("/%2e%2E%2e/", ["..."]),
    ],
)
def test_split_path(path, segments):
    assert split_path(path) == segments


@pytest.mark.parametrize(
    "host, expected",
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8000", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:8000", "example.com"),
        (" example.com ", "example.com"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("[2001:DB8::1]:443", "[2001:db8::1]"),
    ],
)
def test_split_host(host, expected):
    assert split_host(host) == expected


# -- host routing ------------------------------------------------------------

HOST_ROUTES = ["/", "example.com/", "user1.example.com/user/a/", "Other.Example.COM/", "[::1]/x/"]


@pytest.mark.parametrize(
    "host, path, expected",
    [
        ("example.com", "/anything", "example.com/"),
        ("EXAMPLE.com", "/", "example.com/"),
        ("example.com:8000", "/", "example.com/"),
        ("example.com.", "/", "example.com/"),
        ("example.com.:8000", "/x", "example.com/"),
        ("user1.example.com", "/user/a/lab", "user1.example.com/user/a/"),
        ("user1.example.com", "/user/b/", "/"),
        ("other.example.com", "/x", "Other.Example.COM/"),
        ("unknown.org", "/", "/"),
        ("[::1]:8000", "/x/y", "[::1]/x/"),
        ("[::1]", "/x/", "[::1]/x/"),
        ("[::1]", "/y/", "/"),
        (None, "/", "/"),
        (None, "/x/", "/"),
        ("", "/", "/"),
        # the host is the first segment, but a path is never a host
        (None, "/example.com/", "/"),
        ("unknown.org", "/example.com/", "/"),
    ],
)
def test_host_routing(host, path, expected):
    trie = trie_with(*HOST_ROUTES, host_routing=True)
    assert matched(trie, path, host) == expected


def test_host_routing_without_root_route_is_404_for_other_hosts():
    trie = trie_with("example.com/", host_routing=True)
    assert_routes(trie, [("/", None), ("/x", None)], host="other.org")
    assert_routes(trie, [("/", None)], host=None)


# -- validation --------------------------------------------------------------

INVALID_ROUTESPECS = [
    (False, None),
    (False, b"/user/x/"),
    (False, ""),
    (False, "user/x/"),
    (False, "example.com/user/x/"),
    (False, "/user/x/?a=1"),
    (False, "/user/x#frag"),
    (True, "/user/x/"),
    (True, ""),
    (True, "example.com/x/?a=1"),
    (False, "/user/../hub/"),
    (False, "/user/%2e%2e/"),
    (True, "example.com/user/./x/"),
]


@pytest.mark.parametrize("host_routing, routespec", INVALID_ROUTESPECS)
def test_routespec_key_names_an_invalid_routespec(host_routing, routespec):
    with pytest.raises(ValueError) as excinfo:
        routespec_key(routespec, host_routing)
    assert repr(routespec) in str(excinfo.value)


@pytest.mark.parametrize(
    "host_routing, routespec, target",
    [(host_routing, routespec, TARGET) for host_routing, routespec in INVALID_ROUTESPECS]
    + [
        (False, "/user/x/", None),
        (False, "/user/x/", ""),
        (False, "/user/x/", b"http://127.0.0.1:1"),
        (True, "example.com/user/x/", None),
    ],
)
def test_failed_add_names_the_routespec_and_changes_nothing(host_routing, routespec, target):
    existing = ["/", "example.com/user/a/"] if host_routing else ["/", "/user/a/"]
    trie = trie_with(*existing, host_routing=host_routing)
    nodes = node_count(trie)
    with pytest.raises(ValueError) as excinfo:
        trie.add(routespec, target, {}, added_at=0.0)
    assert repr(routespec) in str(excinfo.value)
    assert (len(trie), node_count(trie)) == (2, nodes)
    assert [route.routespec for route in trie] == existing
    host = "example.com" if host_routing else None
    assert_routes(trie, [("/user/x/", "/"), ("/user/a/", existing[1])], host=host)


@pytest.mark.parametrize("host_routing, routespec", INVALID_ROUTESPECS)
def test_remove_of_an_invalid_routespec_raises(host_routing, routespec):
    with pytest.raises(ValueError):
        trie_with("/", host_routing=host_routing).remove(routespec)
