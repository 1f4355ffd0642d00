"""InProcessProxy's route API, without starting the proxy.

The Hub calls the route API before ``start()`` and after ``stop()``, so the
table must work without a listener.
"""

import asyncio
from datetime import datetime, timezone

import pytest
from dateutil.parser import isoparse
from traitlets import TraitError

from inprocess_proxy import InProcessProxy
from inprocess_proxy.activity import ActivityTracker

TARGET = "http://127.0.0.1:8888"
NOW = 1_700_000_000.5


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def new_proxy(host_routing=False):
    return InProcessProxy(host_routing=host_routing, activity=ActivityTracker(clock=Clock(NOW)))


def user_data(name, server_name=""):
    return {"user": name, "server_name": server_name}


def expected_route(routespec, target=TARGET, data=None):
    return {"routespec": routespec, "target": target, "data": {} if data is None else data}


async def add_routes(proxy, routes):
    for routespec, data in routes.items():
        await proxy.add_route(routespec, TARGET, data)


HUB_ROUTES = {
    "/": {"hub": True},
    "/user/alice/": user_data("alice"),
    "/user/alice/lab%20server/": user_data("alice", "lab server"),
    "/user/has%40x/": user_data("has@x"),
    "/user/%E7%A7%80%E6%A8%B9/": user_data("秀樹"),
    "/services/announce/": {"service": "announce"},
}


@pytest.mark.gen_test(timeout=10)
async def test_get_all_routes_returns_what_was_added():
    proxy = new_proxy()
    await add_routes(proxy, HUB_ROUTES)
    routes = await proxy.get_all_routes()
    assert routes == {spec: expected_route(spec, data=data) for spec, data in HUB_ROUTES.items()}
    assert list(routes) == list(HUB_ROUTES)


@pytest.mark.gen_test(timeout=10)
async def test_get_route_returns_one_route_or_none():
    proxy = new_proxy()
    await add_routes(proxy, HUB_ROUTES)
    for spec, data in HUB_ROUTES.items():
        assert await proxy.get_route(spec) == expected_route(spec, data=data)
    assert await proxy.get_route("/user/bob/") is None


@pytest.mark.gen_test(timeout=10)
async def test_delete_route_removes_exactly_one_routespec():
    proxy = new_proxy()
    await add_routes(proxy, HUB_ROUTES)
    await proxy.delete_route("/user/alice/")
    routes = await proxy.get_all_routes()
    assert set(routes) == set(HUB_ROUTES) - {"/user/alice/"}
    assert proxy.routes.match_request("/user/alice/tree").routespec == "/"
    assert proxy.routes.match_request("/user/alice/lab%20server/").routespec == "/user/alice/lab%20server/"


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize("absent", ["/user/nobody/", "/user/alice/", "/"])
async def test_deleting_an_absent_route_succeeds(absent):
    proxy = new_proxy()
    await proxy.add_route("/user/bob/", TARGET, {})
    await proxy.delete_route(absent)
    await proxy.delete_route(absent)
    assert list(await proxy.get_all_routes()) == ["/user/bob/"]


@pytest.mark.gen_test(timeout=10)
async def test_readding_a_routespec_replaces_target_and_data():
    proxy = new_proxy()
    await proxy.add_route("/user/alice/", TARGET, user_data("alice"))
    await proxy.add_route("/user/alice/", "http://127.0.0.1:9999", {"new": True})
    assert await proxy.get_all_routes() == {
        "/user/alice/": expected_route("/user/alice/", "http://127.0.0.1:9999", {"new": True})
    }


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize(
    "given, stored",
    [("/user/alice", "/user/alice/"), ("/user/alice/", "/user/alice/"), ("/", "/")],
)
async def test_missing_trailing_slash_is_added(given, stored):
    proxy = new_proxy()
    await proxy.add_route(given, TARGET, {})
    assert list(await proxy.get_all_routes()) == [stored]
    assert (await proxy.get_route(given))["routespec"] == stored
    await proxy.delete_route(given)
    assert await proxy.get_all_routes() == {}


@pytest.mark.gen_test(timeout=10)
async def test_host_routes():
    proxy = new_proxy(host_routing=True)
    routes = {"/": {"hub": True}, "alice.example.com/user/alice/": user_data("alice")}
    await add_routes(proxy, routes)
    assert await proxy.get_all_routes() == {spec: expected_route(spec, data=data) for spec, data in routes.items()}
    assert proxy.routes.match_request("/user/alice/x", "ALICE.example.com:8000").routespec == list(routes)[1]
    assert proxy.routes.match_request("/user/alice/x", "other.example.com").routespec == "/"


@pytest.mark.gen_test(timeout=10)
async def test_returned_routes_are_copies():
    proxy = new_proxy()
    await proxy.add_route("/user/alice/", TARGET, user_data("alice"))
    proxy.activity.touch("/user/alice/")
    for route in [(await proxy.get_all_routes())["/user/alice/"], await proxy.get_route("/user/alice/")]:
        route["target"] = "http://127.0.0.1:1"
        route["data"]["user"] = "mallory"
        route["data"]["last_activity"] = "1970-01-01T00:00:00Z"
        route["data"]["extra"] = 1
    for route in [await proxy.get_route("/user/alice/"), (await proxy.get_all_routes())["/user/alice/"]]:
        assert (route["target"], route["data"]["user"]) == (TARGET, "alice")
        assert set(route["data"]) == {"user", "server_name", "last_activity"}
    assert set(route["data"]) == {"user", "server_name", "last_activity"}
    assert route["data"]["last_activity"] != "1970-01-01T00:00:00Z"


@pytest.mark.gen_test(timeout=10)
async def test_data_passed_in_is_copied():
    proxy = new_proxy()
    data = user_data("alice")
    await proxy.add_route("/user/alice/", TARGET, data)
    data["user"] = "mallory"
    assert (await proxy.get_route("/user/alice/"))["data"] == user_data("alice")


@pytest.mark.gen_test(timeout=10)
async def test_last_activity_is_an_iso_string_after_traffic():
    proxy = new_proxy()
    await add_routes(proxy, {"/user/alice/": user_data("alice"), "/user/bob/": user_data("bob")})
    proxy.activity.touch("/user/alice/")
    routes = await proxy.get_all_routes()
    last_activity = routes["/user/alice/"]["data"]["last_activity"]
    assert last_activity.endswith("Z")
    assert isoparse(last_activity) == datetime.fromtimestamp(NOW, timezone.utc)
    assert "last_activity" not in routes["/user/bob/"]["data"]
    assert (await proxy.get_route("/user/alice/"))["data"]["last_activity"] == last_activity


@pytest.mark.gen_test(timeout=10)
async def test_deleted_route_loses_its_activity():
    proxy = new_proxy()
    await proxy.add_route("/user/alice/", TARGET, {})
    proxy.activity.touch("/user/alice/")
    await proxy.get_all_routes()
    await proxy.delete_route("/user/alice/")
    await proxy.add_route("/user/alice/", TARGET, {})
    assert (await proxy.get_route("/user/alice/"))["data"] == {}
    assert (await proxy.get_all_routes())["/user/alice/"]["data"] == {}


@pytest.mark.gen_test(timeout=10)
async def test_listings_follow_activity_across_replacement():
    clock = Clock(NOW)
    proxy = InProcessProxy(activity=ActivityTracker(clock=clock))

    async def listed_activity():
        listed = (await proxy.get_all_routes())["/user/alice/"]["data"].get("last_activity")
        assert listed == (await proxy.get_route("/user/alice/"))["data"].get("last_activity")
        return listed and isoparse(listed).timestamp()

    await proxy.add_route("/user/alice/", TARGET, user_data("alice"))
    assert await listed_activity() is None
    proxy.activity.touch("/user/alice/")
    assert await listed_activity() == NOW
    # the Hub replaces the route (new target): the activity stays with the routespec
    await proxy.add_route("/user/alice/", "http://127.0.0.1:9999", user_data("alice"))
    assert await listed_activity() == NOW
    clock.now += 30
    proxy.activity.touch("/user/alice/")
    assert await listed_activity() == NOW + 30
    assert await listed_activity() == NOW + 30


@pytest.mark.gen_test(timeout=10)
async def test_activity_of_unknown_routes_is_not_listed():
    proxy = new_proxy()
    await proxy.add_route("/user/alice/", TARGET, {})
    proxy.activity.touch("/user/gone/")
    assert list(await proxy.get_all_routes()) == ["/user/alice/"]
    assert "/user/gone/" not in proxy.activity.last


# -- errors ------------------------------------------------------------------

HOST_MISMATCHES = [(False, "alice.example.com/user/alice/"), (True, "/user/alice/")]


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize(
    "host_routing, routespec", HOST_MISMATCHES + [(False, "/user/alice/?x=1"), (False, "/user/alice#x/")]
)
async def test_invalid_routespec_raises_value_error_naming_it(host_routing, routespec):
    proxy = new_proxy(host_routing=host_routing)
    with pytest.raises(ValueError) as excinfo:
        await proxy.add_route(routespec, TARGET, {})
    assert routespec in str(excinfo.value)
    assert await proxy.get_all_routes() == {}


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize("method", ["delete_route", "get_route"])
@pytest.mark.parametrize("host_routing, routespec", HOST_MISMATCHES)
async def test_host_mismatch_raises_for_every_method(host_routing, routespec, method):
    proxy = new_proxy(host_routing=host_routing)
    with pytest.raises(ValueError) as excinfo:
        await getattr(proxy, method)(routespec)
    assert routespec in str(excinfo.value)


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize(
    "target, data",
    [
        ("ftp://x", {}),
        ("not a url", {}),
        ("http://", {}),
        ("", {}),
        (None, {}),
        ("http://127.0.0.1:99999", {}),
        ("http://127.0.0.1:8888/?x=1", {}),
        (TARGET, ["not", "a", "dict"]),
    ],
)
async def test_bad_target_raises_value_error_and_changes_nothing(target, data):
    proxy = new_proxy()
    await proxy.add_route("/user/alice/", TARGET, user_data("alice"))
    before = await proxy.get_all_routes()
    for routespec in ("/user/alice/", "/user/bob/"):
        with pytest.raises(ValueError) as excinfo:
            await proxy.add_route(routespec, target, data)
        assert repr(routespec) in str(excinfo.value)
    assert await proxy.get_all_routes() == before
    assert proxy.routes.match_request("/user/bob/") is None


# -- concurrency and configuration ---------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_concurrent_adds_are_all_effective():
    proxy = new_proxy()
    specs = [f"/user/u{i}/" for i in range(100)]
    await asyncio.gather(*(proxy.add_route(spec, TARGET, user_data(spec)) for spec in specs))
    assert list(await proxy.get_all_routes()) == specs
    for spec in specs:
        assert proxy.routes.match_request(spec + "lab/tree/x.ipynb").routespec == spec
    await asyncio.gather(*(proxy.delete_route(spec) for spec in specs[::2]))
    assert list(await proxy.get_all_routes()) == specs[1::2]


def test_route_api_never_suspends():
    """Each call finishes in one step: no other task runs between its check and its change."""
    proxy = new_proxy()
    calls = [
        proxy.add_route("/user/alice/", TARGET, {}),
        proxy.get_route("/user/alice/"),
        proxy.get_all_routes(),
        proxy.delete_route("/user/alice/"),
    ]
    for call in calls:
        with pytest.raises(StopIteration):
            call.send(None)


@pytest.mark.gen_test(timeout=10)
async def test_route_table_outlives_start_and_stop(make_proxy):
    proxy = await make_proxy()
    await proxy.add_route("/user/alice/", TARGET, {})
    await proxy.stop()
    assert proxy.server is None
    await proxy.add_route("/user/bob/", TARGET, {})
    await proxy.delete_route("/user/alice/")
    assert list(await proxy.get_all_routes()) == ["/user/bob/"]


def test_should_start_false_is_refused():
    with pytest.raises(TraitError, match="should_start"):
        InProcessProxy(should_start=False)
    proxy = InProcessProxy()
    with pytest.raises(TraitError):
        proxy.should_start = False
    assert proxy.should_start


@pytest.mark.gen_test(timeout=10)
async def test_host_routing_cannot_change_once_routes_exist():
    proxy = new_proxy()
    await proxy.add_route("/user/alice/", TARGET, {})
    with pytest.raises(TraitError, match="host_routing"):
        proxy.host_routing = True
    assert not proxy.routes.host_routing


def test_hub_loads_the_class_by_entry_point_name():
    from jupyterhub.app import JupyterHub

    assert JupyterHub(proxy_class="inprocess").proxy_class is InProcessProxy
