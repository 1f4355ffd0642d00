"""RouteTable's whole-table operations, which a shared route store drives:
validating without changing, replacing the table in one step, merging activity."""

import pytest

from inprocess_proxy.activity import ActivityTracker
from inprocess_proxy.routetable import RouteTable

A = "http://127.0.0.1:1"
B = "http://127.0.0.1:2"


def table_with(routes, clock=lambda: 1000.0):
    table = RouteTable(activity=ActivityTracker(clock=clock))
    for routespec, (target, data) in routes.items():
        table.add(routespec, target, data)
    return table


@pytest.mark.parametrize(
    "routespec, target, data, message",
    [
        ("/a/", "not a url", {}, "Cannot add route '/a/'"),
        ("a/", A, {}, "must start with '/'"),
        ("/a/../b/", A, {}, "dot segment"),
        ("/a/", A, ["list"], "data must be a dict"),
    ],
)
def test_check_raises_as_add_does_and_changes_nothing(routespec, target, data, message):
    table = table_with({"/x/": (A, {})})
    with pytest.raises(ValueError, match=message):
        table.check(routespec, target, data)
    with pytest.raises(ValueError, match=message):
        table.add(routespec, target, data)
    assert table.export() == {"/x/": (A, {})}


def test_check_returns_the_data_add_stores():
    table = RouteTable()
    assert table.check("/a/", A, None) == {}
    assert table.check("/a/", A, {"user": "a"}) == {"user": "a"}
    assert len(table) == 0


def test_replace_adds_changes_and_deletes_in_one_call():
    table = table_with({"/keep/": (A, {"k": 1}), "/retarget/": (A, {}), "/redata/": (A, {}), "/gone/": (A, {})})
    kept = table.trie.get("/keep/")
    table.activity.touch("/keep/")
    errors = table.replace(
        {"/keep/": (A, {"k": 1}), "/retarget/": (B, {}), "/redata/": (A, {"new": True}), "/new/": (B, {})}
    )
    assert errors == {}
    assert table.export() == {
        "/keep/": (A, {"k": 1}), "/retarget/": (B, {}), "/redata/": (A, {"new": True}), "/new/": (B, {})
    }
    # unchanged routes are left alone: same object, same activity
    assert table.trie.get("/keep/") is kept
    assert table.get("/keep/")["data"]["last_activity"]
    assert table.trie.match_request("/gone/x") is None
    assert table.trie.match_request("/retarget/x").target == B


def test_replace_reports_routes_it_cannot_serve_and_replaces_the_rest():
    table = table_with({"/old/": (A, {})})
    errors = table.replace({"/ok/": (A, {}), "host.example/x/": (A, {})})
    assert list(errors) == ["host.example/x/"]
    assert "must start with '/'" in str(errors["host.example/x/"])
    assert table.export() == {"/ok/": (A, {})}


def test_export_is_a_copy_without_activity():
    table = table_with({"/a/": (A, {"user": "a"})})
    table.activity.touch("/a/")
    exported = table.export()
    exported["/a/"][1]["user"] = "changed"
    assert table.export() == {"/a/": (A, {"user": "a"})}


@pytest.mark.parametrize(
    "local, merged, taken, after",
    [
        ({}, {"/a/": 5.0}, {"/a/": 5.0}, {"/a/": 5.0}),
        ({"/a/": 7.0}, {"/a/": 5.0}, {}, {"/a/": 7.0}),
        ({"/a/": 5.0}, {"/a/": 5.0}, {}, {"/a/": 5.0}),
        ({"/a/": 5.0}, {"/a/": 9.0, "/b/": 3.0}, {"/a/": 9.0, "/b/": 3.0}, {"/a/": 9.0, "/b/": 3.0}),
        # a routespec not in the table is not recorded
        ({}, {"/absent/": 5.0}, {}, {}),
    ],
)
def test_merge_activity_takes_the_newest_time(local, merged, taken, after):
    table = table_with({"/a/": (A, {}), "/b/": (A, {})})
    table.activity.last.update(local)
    assert table.merge_activity(merged) == taken
    assert table.activity.last == after

