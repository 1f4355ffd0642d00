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

import math
import time
from datetime import datetime, timezone

__all__ = ["ActivityTracker", "isoformat"]


#: formatted "YYYY-MM-DDTHH:MM:" by minute since the epoch; the timestamps
#: of one listing cluster in the minutes since the previous one
_minutes = {}
_MAX_CACHED_MINUTES = 4096


def isoformat(timestamp):
    """Format a ``time.time()`` value as JupyterHub does (``...Z``, UTC).

    Listing 10,000 routes formats up to 10,000 timestamps, so the date, hour
    and minute are formatted once per minute and cached.
    """
    # round microseconds as datetime.fromtimestamp does
    fraction, whole = math.modf(timestamp)
    micros = round(fraction * 1e6)
    if micros >= 1000000:
        whole += 1
        micros -= 1000000
    minute, seconds = divmod(int(whole), 60)
    prefix = _minutes.get(minute)
    if prefix is None:
        if len(_minutes) >= _MAX_CACHED_MINUTES:
            _minutes.clear()
        prefix = _minutes[minute] = datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:")
    if micros:
        return "%s%02d.%06dZ" % (prefix, seconds, micros)
    # datetime.isoformat(), which JupyterHub uses, leaves out zero microseconds
    return "%s%02dZ" % (prefix, seconds)


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
        #: routespec -> (time, its ISO string): listing 10k routes every
        #: interval formats only what changed since the last listing
        self._formatted = {}

    def touch(self, routespec):
        """Record traffic on ``routespec`` now (for callers off the hot path)."""
        self.last[routespec] = self.clock()

    def forget(self, routespec):
        """Drop the record of a deleted route."""
        self.last.pop(routespec, None)
        self._formatted.pop(routespec, None)

    def prune(self, live_routespecs):
        """Drop records of routes no longer in the table.

        ``live_routespecs`` is a set-like view (``dict.keys()``). A tunnel that
        outlived its route may have written one back after the route was
        deleted; listing calls this so such entries do not pile up.
        """
        for spec in self.last.keys() - live_routespecs:
            del self.last[spec]
            self._formatted.pop(spec, None)

    def isoformat(self, routespec):
        """The ISO-8601 string for ``routespec``, or None if it saw no traffic."""
        timestamp = self.last.get(routespec)
        if timestamp is None:
            return None
        cached = self._formatted.get(routespec)
        if cached is None or cached[0] != timestamp:
            cached = self._formatted[routespec] = (timestamp, isoformat(timestamp))
        return cached[1]
