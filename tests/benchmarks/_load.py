"""Load generators: wrk for HTTP, the node ``ws_client.js`` for websockets.

wrk runs a generated Lua script whose ``done()`` prints the summary as one JSON
line (exact counts and microsecond latencies, instead of parsing wrk's rounded
text). The same script can pace requests with ``delay()`` to a fixed rate,
which is how the Hub test loads the proxy (wrk2 is not in Debian).
"""

import json
import os
import subprocess
from dataclasses import dataclass

# A run that has not ended this long after its duration is killed and reported as an error.
OVERRUN_SECONDS = 15
WS_MESSAGE_BYTES = 32
SUMMARY_MARKER = "WRK_SUMMARY "

WRK_DONE_LUA = """
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '%s{"requests": %d, "duration_us": %d, "bytes": %d, "non_2xx_3xx": %d, '
      .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\\n',
      "{marker}", summary.requests, summary.duration, summary.bytes, e.status,
      e.connect, e.read, e.write, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99)))
end
"""

# Paces the requests of one wrk thread to a fixed rate: each request takes the
# next slot of a fixed schedule (slot i at start + i * interval), so the rate is
# exact on average whatever the latency, as long as there are enough
# connections to fill the slots. A thread more than a second behind schedule
# skips ahead instead of bursting. wrk has no wall clock for Lua, hence the FFI.
WRK_PACING_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("bench_timespec")
local interval_ms = {interval_ms}
local next_slot_ms = nil

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
   return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

function delay()
   local now = now_ms()
   if next_slot_ms == nil or next_slot_ms < now - 1000 then
      next_slot_ms = now
   end
   local slot_ms = next_slot_ms
   next_slot_ms = slot_ms + interval_ms
   return math.max(0, math.floor(slot_ms - now))
end
"""


@dataclass
class LoadResult:
    """What one load run measured; error is set (and the figures may be None) if it failed."""

    requests: int = 0
    seconds: float = 0.0
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    non_2xx_3xx: int = 0
    socket_errors: int = 0
    error: str | None = None

    @property
    def problems(self):
        """Human-readable list of what went wrong in this run (empty if nothing)."""
        found = []
        if self.error:
            found.append(self.error)
        if self.non_2xx_3xx:
            found.append(f"{self.non_2xx_3xx} non-2xx/3xx responses")
        if self.socket_errors:
            found.append(f"{self.socket_errors} socket errors")
        return found


def write_wrk_script(path, rate=None):
    """Write wrk's Lua script: the JSON summary, and pacing to rate req/s per wrk thread if rate is given."""
    lua = WRK_DONE_LUA.replace("{marker}", SUMMARY_MARKER)
    if rate is not None:
        lua += WRK_PACING_LUA.replace("{interval_ms}", repr(1000 / rate))
    with open(path, "w") as f:
        f.write(lua)
    return path


def _run_bounded(argv, seconds, env=None):
    """Run a load generator that stops by itself; kill it if it overruns. Returns (rc, stdout, stderr)."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + OVERRUN_SECONDS, env=env
        )
    except subprocess.TimeoutExpired:
        return None, "", f"{os.path.basename(argv[0])} did not stop within {seconds + OVERRUN_SECONDS} s"
    return done.returncode, done.stdout, done.stderr


def _parse_wrk_summary(stdout):
    for line in stdout.splitlines():
        if line.startswith(SUMMARY_MARKER):
            return json.loads(line[len(SUMMARY_MARKER) :])
    return None


def run_wrk(url, *, connections, seconds, script, threads=1):
    """Load url with wrk for seconds; figures from the script's JSON summary."""
    argv = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s", "-s", script, url]
    rc, stdout, stderr = _run_bounded(argv, seconds)
    summary = _parse_wrk_summary(stdout)
    if rc != 0 or summary is None:
        return LoadResult(error=f"wrk failed (rc={rc}): {(stderr or stdout).strip()[-300:]}")
    run_seconds = summary["duration_us"] / 1e6
    latency = summary["latency_us"]
    return LoadResult(
        requests=summary["requests"],
        seconds=run_seconds,
        rps=summary["requests"] / run_seconds,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        non_2xx_3xx=summary["non_2xx_3xx"],
        socket_errors=sum(summary["socket_errors"].values()),
    )


def run_ws_client(url, *, connections, seconds, node_modules):
    """Ping-pong over websockets for seconds; rps is round-trips per second."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ws_client.js")
    argv = ["node", script, url, str(connections), str(seconds), str(WS_MESSAGE_BYTES)]
    rc, stdout, stderr = _run_bounded(argv, seconds, env=dict(os.environ, NODE_PATH=node_modules))
    try:
        report = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return LoadResult(error=f"ws client failed (rc={rc}): {(stderr or stdout).strip()[-300:]}")
    if report["errors"] or not report["seconds"]:
        return LoadResult(error="websocket: " + "; ".join(report["errors"] or ["no round-trips"]))
    return LoadResult(
        requests=report["roundtrips"],
        seconds=report["seconds"],
        rps=report["roundtrips"] / report["seconds"],
    )
