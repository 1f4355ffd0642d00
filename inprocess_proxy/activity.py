"""When each route last carried traffic.

The data path records activity with one dict assignment per event,
``tracker.last[routespec] = clock()``, and nothing else; formatting into the
ISO-8601 strings JupyterHub parses happens only when the Hub lists routes
(every ``last_activity_interval``, 300 s by default).

Activity is keyed by routespec rather than stored on a route object, because a
websocket tunnel outlives the route it was opened on when the Hub replaces
that route (``check_routes`` re-adds a route whose target changed), and the
tunnel's traffic must keep the server from being culled.
"""

import time
from datetime import datetime, timezone

__all__ = ["ActivityTracker", "isoformat"]


#: "YYYY-MM-DDTHH:MM:SS" by second since the epoch: the timestamps of one
#: listing cluster in the seconds since the previous one
_seconds = {}
_MAX_CACHED_SECONDS = 4096
#: "000" to "999", to write microseconds as two table lookups
_THREE_DIGITS = tuple("%03d" % n for n in range(1000))


def isoformat(timestamp):
    """Format a non-negative ``time.time()`` value as JupyterHub does (``...Z``, UTC).

    The same text as ``jupyterhub.utils.isoformat`` on the equivalent
    datetime, microseconds rounded as ``datetime.fromtimestamp`` rounds them.
    Listing 10,000 routes formats up to 10,000 timestamps, so the date and
    time of day are formatted once per second and the microseconds by table.
    """
    whole = int(timestamp)
    # exact: subtracting the integer part of a float loses nothing
    micros = round((timestamp - whole) * 1e6)
    if micros == 1000000:
        whole += 1
        micros = 0
    prefix = _seconds.get(whole)
    if prefix is None:
        if len(_seconds) >= _MAX_CACHED_SECONDS:
            _seconds.clear()
        prefix = _seconds[whole] = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if not micros:
        # datetime.isoformat() leaves out zero microseconds
        return prefix + "Z"
    millis, micros = divmod(micros, 1000)
    return "".join((prefix, ".", _THREE_DIGITS[millis], _THREE_DIGITS[micros], "Z"))


class ActivityTracker:
    """Last activity per routespec, as wall-clock floats.

    Args:
        clock: returns the current wall-clock time in seconds; injected so
            tests can drive it.
    """

    def __init__(self, clock=time.time):
        self.clock = clock
        #: routespec -> time of last traffic; written directly by the data path
        self.last = {}
        #: routespec -> the time ``changes()`` last reported, so that listing
        #: 10k routes every interval formats only what changed since
        self._reported = {}

    def touch(self, routespec):
        """Record traffic on ``routespec`` now (for callers off the hot path)."""
        self.last[routespec] = self.clock()

    def forget(self, routespec):
        """Drop the record of a deleted route."""
        self.last.pop(routespec, None)
        self._reported.pop(routespec, None)

    def changes(self, live_routespecs):
        """``[(routespec, time)]`` for each live routespec whose time changed since the last call.

        Also drops records of routespecs not in ``live_routespecs`` (a
        set-like view, ``dict.keys()``): a tunnel that outlived its route may
        have written one back after the route was deleted, and listing is
        where such entries are swept so they do not pile up.
        """
        reported = self._reported
        changed = []
        stale = []
        for spec, timestamp in self.last.items():
            if spec not in live_routespecs:
                stale.append(spec)
            elif reported.get(spec) != timestamp:
                reported[spec] = timestamp
                changed.append((spec, timestamp))
        for spec in stale:
            self.forget(spec)
        return changed

    def isoformat(self, routespec):
        """The ISO-8601 string for ``routespec``, or None if it saw no traffic."""
        timestamp = self.last.get(routespec)
        return None if timestamp is None else isoformat(timestamp)
