"""ActivityTracker: last activity per routespec, on an injected clock."""

import random
from datetime import datetime, timezone

import pytest
from dateutil.parser import isoparse
from jupyterhub.utils import isoformat as jupyterhub_isoformat

from inprocess_proxy.activity import ActivityTracker, isoformat


class Clock:
    """A wall clock the test sets by hand."""

    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def tracker_at(now):
    clock = Clock(now)
    return ActivityTracker(clock=clock), clock


def assert_iso_for(text, timestamp):
    """``text`` is what JupyterHub parses back to ``timestamp`` (UTC, ``Z``)."""
    assert text.endswith("Z")
    assert isoparse(text) == datetime.fromtimestamp(timestamp, timezone.utc)


@pytest.mark.parametrize(
    "timestamp, text",
    [
        (0.0, "1970-01-01T00:00:00Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20Z"),
        (1_700_000_000.25, "2023-11-14T22:13:20.250000Z"),
        (1_700_000_000.000001, "2023-11-14T22:13:20.000001Z"),
        (4_102_444_799.5, "2099-12-31T23:59:59.500000Z"),
    ],
)
def test_isoformat_is_utc_with_z(timestamp, text):
    assert isoformat(timestamp) == text
    assert_iso_for(isoformat(timestamp), timestamp)


def jupyterhub_text(timestamp):
    """What JupyterHub writes for the same instant (``jupyterhub.utils.isoformat``)."""
    return jupyterhub_isoformat(datetime.fromtimestamp(timestamp, timezone.utc))


@pytest.mark.parametrize(
    "name, timestamps",
    [
        ("uniform to 2100", [random.Random(1).uniform(0, 4.1e9) for _ in range(20_000)]),
        # halves of a microsecond and just below a second: the rounding edges
        ("half microseconds", [1.7e9 + n * 1e-6 + 0.5e-6 for n in range(0, 2_000_000, 97)]),
        ("carry into the next second", [1.7e9 + n + 0.9999995 + k * 1e-8 for n in range(50) for k in range(10)]),
        ("whole seconds", [float(1.7e9 + n * 61) for n in range(1_000)]),
    ],
)
def test_isoformat_matches_jupyterhub_text(name, timestamps):
    mismatches = [(t, isoformat(t), jupyterhub_text(t)) for t in timestamps if isoformat(t) != jupyterhub_text(t)]
    assert mismatches == [], name


def test_touch_records_the_clock():
    tracker, clock = tracker_at(1_700_000_000.5)
    tracker.touch("/user/a/")
    assert tracker.last == {"/user/a/": 1_700_000_000.5}
    assert_iso_for(tracker.isoformat("/user/a/"), clock.now)


def test_no_activity_is_none():
    tracker, _ = tracker_at(1_700_000_000.0)
    tracker.touch("/user/a/")
    assert tracker.isoformat("/user/b/") is None


def test_data_path_writes_are_seen():
    """The data path assigns ``last[spec]`` directly, without touch()."""
    tracker, _ = tracker_at(0.0)
    tracker.last["/user/a/"] = 1_700_000_123.0
    assert_iso_for(tracker.isoformat("/user/a/"), 1_700_000_123.0)


def test_isoformat_follows_the_latest_time():
    tracker, clock = tracker_at(1_700_000_000.0)
    seen = []
    for _ in range(3):
        clock.now += 61.5
        tracker.touch("/user/a/")
        first, again = tracker.isoformat("/user/a/"), tracker.isoformat("/user/a/")
        assert first == again
        assert_iso_for(first, clock.now)
        seen.append(first)
        tracker.last["/user/a/"] = clock.now + 0.25
        assert_iso_for(tracker.isoformat("/user/a/"), clock.now + 0.25)
    assert len(set(seen)) == 3


def test_routes_are_tracked_independently():
    tracker, clock = tracker_at(1_700_000_000.0)
    tracker.touch("/user/a/")
    clock.now += 10
    tracker.touch("/user/b/")
    assert_iso_for(tracker.isoformat("/user/a/"), 1_700_000_000.0)
    assert_iso_for(tracker.isoformat("/user/b/"), 1_700_000_010.0)


@pytest.mark.parametrize("routespec", ["/user/a/", "/user/absent/"])
def test_forget_drops_one_route(routespec):
    tracker, _ = tracker_at(1_700_000_000.0)
    for spec in ("/user/a/", "/user/b/"):
        tracker.touch(spec)
        tracker.isoformat(spec)
    tracker.forget(routespec)
    assert tracker.isoformat(routespec) is None
    assert tracker.isoformat("/user/b/") is not None


def test_forget_then_touch_formats_the_new_time():
    tracker, clock = tracker_at(1_700_000_000.0)
    tracker.touch("/user/a/")
    tracker.isoformat("/user/a/")
    tracker.forget("/user/a/")
    clock.now += 5
    tracker.touch("/user/a/")
    assert_iso_for(tracker.isoformat("/user/a/"), clock.now)


@pytest.mark.parametrize(
    "touched, live, kept",
    [
        ([], set(), set()),
        (["/a/", "/b/"], {"/a/", "/b/"}, {"/a/", "/b/"}),
        (["/a/", "/b/", "/c/"], {"/b/"}, {"/b/"}),
        (["/a/", "/b/"], set(), set()),
        (["/a/"], {"/a/", "/never-touched/"}, {"/a/"}),
    ],
)
def test_changes_keep_only_live_routes(touched, live, kept):
    tracker, _ = tracker_at(1_700_000_000.0)
    for spec in touched:
        tracker.touch(spec)
    assert {spec for spec, _ in tracker.changes(live)} == kept
    assert set(tracker.last) == kept
    assert {spec for spec in touched if tracker.isoformat(spec) is not None} == kept


def test_changes_report_each_new_time_once():
    tracker, clock = tracker_at(1_700_000_000.0)
    live = {"/a/", "/b/"}
    tracker.touch("/a/")
    assert tracker.changes(live) == [("/a/", 1_700_000_000.0)]
    assert tracker.changes(live) == []
    clock.now += 1.5
    tracker.touch("/b/")
    assert tracker.changes(live) == [("/b/", 1_700_000_001.5)]
    tracker.touch("/a/")
    assert tracker.changes(live) == [("/a/", 1_700_000_001.5)]


def test_forgotten_route_is_reported_again_when_it_comes_back():
    tracker, _ = tracker_at(1_700_000_000.0)
    tracker.touch("/a/")
    assert tracker.changes({"/a/"}) == [("/a/", 1_700_000_000.0)]
    tracker.forget("/a/")
    tracker.touch("/a/")
    assert tracker.changes({"/a/"}) == [("/a/", 1_700_000_000.0)]
