"""Proxied latency while the Hub is busy, and the Hub's own API while the proxy is (issue 12).

    tests/benchmarks/setup.sh                        # once: wrk, nginx, CHP
    python tests/benchmarks/bench_busy_hub.py        # about 10 minutes with the defaults
    python tests/benchmarks/bench_busy_hub.py --quick --candidates chp,hub-loop   # about 2 minutes

InProcessProxy used to share the Hub's event loop, so every millisecond the Hub
spends on its own work (rendering 200 users for the admin page, say) is a
millisecond every proxied request waits. This starts real JupyterHubs
(``python -m jupyterhub``, hub_latency.py's configuration plus the lines below),
one at a time, each with a ``Proxy.extra_routes`` route sending ``/bench/`` to
nginx, and for each candidate and repetition measures three phases:

* idle: a probe (wrk, one keep-alive connection paced to ``--probe-rate``)
  GETs the 100 B ``/bench/small`` through the public port, nothing else runs;
* busy: the same probe while ``--api-clients`` (3) keep-alive connections loop
  ``GET /hub/api/users?limit=200`` (what the admin page asks) through the
  public port as fast as the Hub answers (wrk ``-c3``, unpaced, with an admin
  service's token). Gives the probe's p50/p99/max, and the Hub's API
  replies per second and p99;
* proxy loaded: the same API clients while a paced wrk sends ``--load-rate``
  (1,000) req/s to ``/bench/small`` through the public port, as hub_latency.py
  does. This is the other side of the GIL trade-off: what forwarding costs
  the Hub's API when the proxy runs on a thread of the Hub's process.

Every Hub is started afresh for each repetition (rotating the candidates'
order), after an unrecorded ``--warmup`` of the busy load. Figures are medians
over repetitions; ratios are medians of per-repetition ratios between
candidates measured minutes apart in the same run. Load generators and probe
are separate wrk processes, so the probe is not starved by the load's Python.

Users: the 2,000 users are created once per run, through the REST API
(``POST /hub/api/users`` with ``{"usernames": [...]}`` in batches of 500), by a
seed Hub using CHP (so seeding does not depend on the code under test); its
sqlite file is then copied for every Hub started. Creating them takes about
11 s here, as ``POST /hub/api/users`` commits once per user: seeding once
saves that per Hub start and gives every Hub the same database, and using the
API rather than writing rows keeps the benchmark free of JupyterHub's schema.
The token is a service's (``c.JupyterHub.services`` with ``api_token``) given
the ``admin`` role by ``c.JupyterHub.load_roles``, both supported by
JupyterHub 6.1.1 (``api_tokens`` is "pending deprecation" there).

Candidates: ``chp`` (the Hub's default ConfigurableHTTPProxy, CHP 5.3.0 from
node_modules), ``hub-loop`` (``InProcessProxy.thread = False``, the old
behaviour), ``thread`` (``thread = True``, its own thread and loop, uvloop when
installed), ``thread-asyncio`` (``event_loop = "asyncio"``) and
``thread-switch5ms`` (``switch_interval = 0``: Python's own 5 ms). A Hub that
logs "Config option `...` not recognized" fails that candidate loudly, so an
install older than a trait cannot pass for the candidate (except ``thread`` on
``hub-loop``: an InProcessProxy without the trait runs on the Hub's loop
anyway). The Hubs import ``inprocess_proxy`` from this checkout (PYTHONPATH),
whatever is installed; the log line "bench_busy_hub: inprocess_proxy from"
says which file.

``--gc-log`` explains maxima: the Hub's config adds a ``gc.callbacks`` hook
logging collections of 10 ms or more, the probe logs its requests of 10 ms or
more, both on CLOCK_MONOTONIC, and the table counts how many slow probe
requests overlapped a collection (a collection holds the GIL, so it stalls a
proxy thread too).

Exits 0 unless something crashed (goals are printed, never asserted), or 3
if a candidate could not be measured at all (a Hub that did not start, or an
unrecognized option).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import _tests_on_path  # noqa: F401
from _backends import start_nginx
from _candidates import chp_command
from _load import run_wrk, write_wrk_script
from _procs import ChildProcesses, stop_on_sigterm
from _report import align_columns, problems, rotated, run_metadata, write_json
from hub_latency import HUB_CONFIG, LOAD_MARGIN_SECONDS
from support.hub import HubProcess
from support.modules import load_module
from support.ports import http_status
from support.procfs import cpu_seconds
from support.processes import StartupError

HERE = os.path.dirname(os.path.abspath(__file__))
# The checkout this file is in: the Hubs import inprocess_proxy from here.
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# Figures print as _report.py's table and the docs' benchmark pages print them.
_FORMAT = load_module("benchmark_format", os.path.join(REPO_ROOT, "docs", "_ext", "benchmark_format.py"))
format_figure, format_ratio = _FORMAT.format_figure, _FORMAT.format_ratio
PROBE_PATH = "/bench/small"
API_PATH = "/hub/api/users?limit=200"  # 200 is JupyterHub's api_page_max_limit
SERVICE_NAME = "bench-admin"
SEED_BATCH = 500
SEED_TIMEOUT_SECONDS = 600
# A request or a garbage collection this long or longer goes into the --gc-log logs.
SLOW_MS = 10
# A 1-minute load average above this before we start means other work is running.
BUSY_LOADAVG = 0.5
# Exit status when a candidate could not be measured at all.
EXIT_CANDIDATE_FAILED = 3
# Lines every benchmark Hub logs, which say nothing about the proxy.
LOG_EXPECTED = (
    "Running JupyterHub without SSL",
    "Received signal SIGTERM, initiating shutdown",
)
UNRECOGNIZED = re.compile(r"Config option `(\w+)` not recognized by `(\w+)`")
# How InProcessProxy says where it runs, e.g. "on its own thread (uvloop event loop)"; shown as a note.
LISTENING = re.compile(r"InProcessProxy listening on \S+, (.+)$", re.M)


@dataclass(frozen=True)
class HubCandidate:
    """One way for the Hub to proxy: a proxy class and the InProcessProxy traits it sets."""

    name: str
    proxy_class: str
    traits: dict = field(default_factory=dict)
    # Traits an older InProcessProxy may not know and still behave as asked without.
    may_predate: frozenset = frozenset()

    @property
    def inprocess(self):
        return self.proxy_class == "inprocess"


CANDIDATES = {
    c.name: c
    for c in (
        HubCandidate("chp", "configurable-http-proxy"),
        HubCandidate("hub-loop", "inprocess", {"thread": False}, may_predate=frozenset({"thread"})),
        HubCandidate("thread", "inprocess", {"thread": True}),
        HubCandidate("thread-asyncio", "inprocess", {"thread": True, "event_loop": "asyncio"}),
        HubCandidate("thread-switch5ms", "inprocess", {"thread": True, "switch_interval": 0}),
        HubCandidate("thread-switch0.1ms", "inprocess", {"thread": True, "switch_interval": 0.0001}),
        HubCandidate("thread-freeze-gc", "inprocess", {"thread": True, "freeze_gc": True}),
    )
}

ADMIN_SERVICE_CONFIG = """
# bench_busy_hub.py: an admin service whose token the API clients use.
c.JupyterHub.services = [{{"name": {service!r}, "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": [{service!r}]}}]
"""

IMPORT_CHECK_CONFIG = """
import inprocess_proxy as _bench_inprocess_proxy
print("bench_busy_hub: inprocess_proxy from", _bench_inprocess_proxy.__file__, flush=True)
"""

# Runs in the Hub: log each collection of SLOW_MS or more as
# "<start ms on CLOCK_MONOTONIC> <duration ms> <generation> <objects collected>".
GC_LOG_CONFIG = """
import gc as _bench_gc
import time as _bench_time

_bench_gc_log = open({path!r}, "a", buffering=1)
_bench_gc_started = [0.0]


def _bench_gc_callback(phase, info):
    now = _bench_time.monotonic()
    if phase == "start":
        _bench_gc_started[0] = now
        return
    took_ms = (now - _bench_gc_started[0]) * 1000
    if took_ms >= {slow_ms}:
        _bench_gc_log.write(
            f"{{_bench_gc_started[0] * 1000:.3f}} {{took_ms:.3f}} {{info['generation']}} {{info['collected']}}\\n"
        )


if _bench_gc_callback.__name__ not in [getattr(cb, "__name__", "") for cb in _bench_gc.callbacks]:
    _bench_gc.callbacks.append(_bench_gc_callback)
"""

# Appended to the paced probe's script with --gc-log: log each request of SLOW_MS
# or more as "<sent ms on CLOCK_MONOTONIC> <latency ms>" (now_ms() is the pacing script's).
PROBE_SLOW_LOG_LUA = """
local slow_log = io.open("{path}", "a")
local sent_ms = 0
function request()
   sent_ms = now_ms()
   return wrk.format()
end
function response(status, headers, body)
   local took_ms = now_ms() - sent_ms
   if took_ms >= {slow_ms} then
      slow_log:write(string.format("%.3f %.3f\\n", sent_ms, took_ms))
      slow_log:flush()
   end
end
"""


@dataclass
class Options:
    seconds: int
    warmup: int
    users: int
    api_clients: int
    probe_rate: int
    load_rate: int
    load_connections: int
    gc_log: bool
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


class BusyHub(HubProcess):
    """A Hub for candidate: hub_latency.py's configuration, the admin service, the traits, --gc-log's hook."""

    def __init__(self, directory, candidate, opts, backend_url, node_modules):
        self.candidate = candidate
        self.gc_log = os.path.join(directory, "gc.log") if opts.gc_log else None
        self.notes = []  # _check_hub_log()'s, once started
        config = [
            HUB_CONFIG.format(backend_url=backend_url),
            ADMIN_SERVICE_CONFIG.format(service=SERVICE_NAME, token=opts.token),
            IMPORT_CHECK_CONFIG if candidate.inprocess else "",
            "".join(f"c.InProcessProxy.{k} = {v!r}\n" for k, v in candidate.traits.items()),
            GC_LOG_CONFIG.format(path=self.gc_log, slow_ms=SLOW_MS) if self.gc_log else "",
        ]
        super().__init__(
            directory,
            proxy_class=candidate.proxy_class,
            config="".join(config),
            chp_command=None if candidate.inprocess else chp_command(node_modules),
            env=_hub_env(),
            name=os.path.basename(directory),
        )


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


def _api_request(url, token, payload=None, timeout=10):
    """(status, parsed JSON body) of a Hub API request with token."""
    request = urllib.request.Request(
        url,
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Authorization": f"token {token}"},
        method="GET" if payload is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.load(response)


def _hub_env():
    """The Hubs import inprocess_proxy from this checkout, not from wherever it is installed."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": REPO_ROOT + (os.pathsep + path if path else "")}


def start_busy_hub(root, name, candidate, opts, backend_url, node_modules, seed_db=None):
    """A Hub for candidate, on a copy of seed_db if given; ready when its API answers the admin token."""
    hub = BusyHub(os.path.join(root, name), candidate, opts, backend_url, node_modules)
    hub.directory.mkdir()
    if seed_db:
        shutil.copyfile(seed_db, hub.directory / "jupyterhub.sqlite")

    def ready():
        return http_status(hub.hub_url + "/hub/health") == 200 and http_status(hub.public_url + PROBE_PATH) == 200

    hub.start(ready=ready)
    try:
        status, _ = _api_request(hub.public_url + API_PATH, opts.token)
        if status != 200:
            raise StartupError(f"{name}: GET {API_PATH} with the admin token answered {status}")
        hub.notes = _check_hub_log(hub)
    except BaseException:
        hub.stop()
        raise
    return hub


def _check_hub_log(hub):
    """Fail if the Hub ignored one of the candidate's options or imported another inprocess_proxy."""
    text = hub.log_path.read_text(errors="replace")
    notes = []
    for option, klass in UNRECOGNIZED.findall(text):
        if klass == "InProcessProxy" and option in hub.candidate.may_predate:
            notes.append(f"InProcessProxy has no `{option}` trait: it predates it and runs on the Hub's loop")
            continue
        raise StartupError(
            f"{hub.candidate.name}: the Hub logged 'Config option `{option}` not recognized by `{klass}`':"
            f" this install of inprocess_proxy predates the option, so the candidate would not measure what"
            f" its name says; log {hub.log_path}"
        )
    notes += [f"InProcessProxy ran {where.strip()}" for where in LISTENING.findall(text)]
    if hub.candidate.inprocess:
        found = re.search(r"bench_busy_hub: inprocess_proxy from (\S+)", text)
        if not found or not os.path.abspath(found.group(1)).startswith(REPO_ROOT + os.sep):
            raise StartupError(
                f"{hub.candidate.name}: the Hub imported inprocess_proxy from"
                f" {found.group(1) if found else '?'}, not from {REPO_ROOT}; log {hub.log_path}"
            )
    return notes


def seed_database(root, opts, backend_url, node_modules, log):
    """Create opts.users users through the REST API of a Hub using CHP; returns its stopped sqlite file."""
    started = time.monotonic()
    hub = start_busy_hub(root, "hub-seed", CANDIDATES["chp"], opts, backend_url, node_modules)
    try:
        for first in range(0, opts.users, SEED_BATCH):
            names = [f"busy-user-{i:05d}" for i in range(first, min(first + SEED_BATCH, opts.users))]
            status, created = _api_request(
                hub.hub_url + "/hub/api/users", opts.token, {"usernames": names}, SEED_TIMEOUT_SECONDS
            )
            if status != 201 or len(created) != len(names):
                raise StartupError(f"seeding users: POST /hub/api/users answered {status}")
    finally:
        hub.stop()
    log(f"seeded {opts.users} users through the REST API in {time.monotonic() - started:.0f} s")
    return hub.directory / "jupyterhub.sqlite"


@dataclass
class Scripts:
    api: str
    load: str
    root: str
    probe_rate: int

    def probe(self, slow_log=None):
        """The paced probe's script; with slow_log, one that also logs its slow requests there."""
        path = os.path.join(self.root, f"probe-{uuid.uuid4().hex[:8]}.lua" if slow_log else "probe.lua")
        if slow_log or not os.path.exists(path):
            write_wrk_script(path, rate=self.probe_rate)
        if slow_log:
            _append(path, PROBE_SLOW_LOG_LUA.replace("{path}", slow_log).replace("{slow_ms}", str(SLOW_MS)))
        return path


def write_scripts(root, opts):
    api = write_wrk_script(os.path.join(root, "api.lua"))
    _append(api, f'wrk.headers["Authorization"] = "token {opts.token}"\n')
    return Scripts(
        api=api,
        load=write_wrk_script(os.path.join(root, "load.lua"), rate=opts.load_rate),
        root=root,
        probe_rate=opts.probe_rate,
    )


def _api_load(hub, opts, scripts, seconds):
    return run_wrk(hub.public_url + API_PATH, connections=opts.api_clients, seconds=seconds, script=scripts.api)


def _probe(hub, opts, scripts, seconds, slow_log=None):
    """(probe LoadResult, Hub CPU %, (start, end) on CLOCK_MONOTONIC in ms)."""
    cpu_before, started = cpu_seconds(hub.pid), time.monotonic()
    result = run_wrk(
        hub.public_url + PROBE_PATH, connections=1, seconds=seconds, script=scripts.probe(slow_log)
    )
    ended = time.monotonic()
    cpu_percent = 100 * (cpu_seconds(hub.pid) - cpu_before) / (ended - started)
    return result, cpu_percent, (started * 1000, ended * 1000)


def _probe_busy(hub, opts, scripts, seconds, slow_log=None):
    """The probe while the API clients run; they start before it and end after it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        api = pool.submit(_api_load, hub, opts, scripts, seconds + 2 * LOAD_MARGIN_SECONDS)
        time.sleep(LOAD_MARGIN_SECONDS)
        probe = _probe(hub, opts, scripts, seconds, slow_log)
        api_result = api.result()
    time.sleep(LOAD_MARGIN_SECONDS)
    return probe, api_result


def _proxy_loaded(hub, opts, scripts):
    """The API clients while the paced load goes through the proxy, both for opts.seconds."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(
            run_wrk,
            hub.public_url + PROBE_PATH,
            connections=opts.load_connections,
            seconds=opts.seconds,
            script=scripts.load,
        )
        api_result = _api_load(hub, opts, scripts, opts.seconds)
        load_result = load.result()
    time.sleep(LOAD_MARGIN_SECONDS)
    return api_result, load_result


def _read_log(path, fields):
    """Rows of floats from a --gc-log file, [] if it is missing."""
    try:
        with open(path) as f:
            return [tuple(float(x) for x in line.split()[:fields]) for line in f if line.strip()]
    except OSError:
        return []


def gc_figures(hub, slow_log, window):
    """What --gc-log saw during the busy probe: Hub collections, slow probe requests, and their overlap."""
    start, end = window
    # A collection that began before the probe but ended in it counts too.
    pauses = [p for p in _read_log(hub.gc_log, 3) if p[0] <= end and start <= p[0] + p[1]]
    slow = _read_log(slow_log, 2)

    def overlapped(request):
        sent, took = request
        return max((p[1] for p in pauses if p[0] < sent + took and sent < p[0] + p[1]), default=0.0)

    slowest = max(slow, key=lambda r: r[1], default=None)
    return {
        "gc_pauses": len(pauses),
        "gc_gen2_pauses": sum(1 for p in pauses if p[2] == 2),
        "gc_max_ms": max((p[1] for p in pauses), default=0.0),
        "slow_probe_requests": len(slow),
        "slow_probe_with_gc_pct": 100 * sum(1 for r in slow if overlapped(r)) / len(slow) if slow else None,
        "slowest_probe_gc_ms": overlapped(slowest) if slowest else None,
    }


def measure(hub, rep, opts, scripts):
    """One repetition on a fresh Hub: warm-up, idle probe, busy probe, API with the proxy loaded."""
    if opts.warmup:
        _probe_busy(hub, opts, scripts, opts.warmup)
    idle, _, _ = _probe(hub, opts, scripts, opts.seconds)
    slow_log = os.path.join(hub.directory, f"probe-busy-{rep}.slow") if opts.gc_log else None
    (busy, busy_cpu, window), api = _probe_busy(hub, opts, scripts, opts.seconds, slow_log)
    api_loaded, load = _proxy_loaded(hub, opts, scripts)
    runs = {
        "idle probe": idle,
        "busy probe": busy,
        "API clients": api,
        "API clients, proxy loaded": api_loaded,
        "proxied load": load,
    }
    sample = {
        "test": "busy_hub",
        "candidate": hub.candidate.name,
        "rep": rep,
        "idle_p50_ms": idle.p50_ms,
        "idle_p99_ms": idle.p99_ms,
        "idle_max_ms": idle.max_ms,
        "busy_p50_ms": busy.p50_ms,
        "busy_p99_ms": busy.p99_ms,
        "busy_max_ms": busy.max_ms,
        "api_busy_rps": api.rps,
        "api_busy_p99_ms": api.p99_ms,
        "hub_cpu_busy_pct": busy_cpu,
        "api_loaded_rps": api_loaded.rps,
        "api_loaded_p99_ms": api_loaded.p99_ms,
        "load_rps": load.rps,
        "load_p99_ms": load.p99_ms,
        "load_max_ms": load.max_ms,
        "notes": hub.notes,
        "error": "; ".join(f"{what}: {run.error}" for what, run in runs.items() if run.error) or None,
        "problems": [f"{what}: {p}" for what, run in runs.items() for p in run.problems],
    }
    if opts.gc_log:
        sample.update(gc_figures(hub, slow_log, window))
    return sample


def describe(sample):
    figure = format_figure
    text = (
        f"probe p99 idle {figure(sample['idle_p99_ms'])} ms, busy {figure(sample['busy_p99_ms'])} ms"
        f" (max {figure(sample['busy_max_ms'])}); API {figure(sample['api_busy_rps'])}/s,"
        f" {figure(sample['api_loaded_rps'])}/s with {figure(sample['load_rps'])} req/s proxied"
    )
    if "gc_pauses" in sample:
        text += f"; {sample['gc_pauses']} GC pauses >= {SLOW_MS} ms (max {figure(sample['gc_max_ms'])})"
    if sample["problems"]:
        text += " [" + "; ".join(sample["problems"]) + "]"
    return text


def run_candidates(root, names, opts, backend_url, node_modules, seed_db, reps, log):
    """reps rounds, each starting every candidate's Hub in turn (order rotating); returns samples."""
    scripts = write_scripts(root, opts)
    samples, failed = [], set()
    for rep in range(reps):
        for name in rotated(names, rep):
            if name in failed:
                continue
            try:
                hub = start_busy_hub(
                    root, f"hub-{name}-{rep}", CANDIDATES[name], opts, backend_url, node_modules, seed_db
                )
            except (StartupError, OSError, ValueError) as e:
                log(f"ERROR: {name} could not be measured, its figures will be n/a: {e}")
                failed.add(name)
                samples.append(
                    {"test": "startup", "candidate": name, "rep": rep, "error": str(e), "problems": [str(e)]}
                )
                continue
            try:
                sample = measure(hub, rep, opts, scripts)
            finally:
                hub.stop()
            samples.append(sample)
            log(f"rep {rep + 1}/{reps} {name}: {describe(sample)}")
    return samples, failed


@dataclass(frozen=True)
class Row:
    """A table row: a field's median per candidate, or the median of paired ratios to a reference."""

    label: str
    field: str
    ratio_to: str | None = None  # a candidate's name: the row shows candidate / that one
    gc_log: bool = False  # only with --gc-log


def rows_for(opts):
    load = f"proxy at {opts.load_rate:,} req/s"
    rows = [
        Row("proxied p50 idle (ms)", "idle_p50_ms"),
        Row("proxied p99 idle (ms)", "idle_p99_ms"),
        Row("proxied max idle (ms)", "idle_max_ms"),
        Row("proxied p50 busy Hub (ms)", "busy_p50_ms"),
        Row("proxied p99 busy Hub (ms)", "busy_p99_ms"),
        Row("proxied max busy Hub (ms)", "busy_max_ms"),
        Row("Hub API replies/s busy", "api_busy_rps"),
        Row("Hub API p99 busy (ms)", "api_busy_p99_ms"),
        Row("Hub process CPU % busy", "hub_cpu_busy_pct"),
        Row(f"Hub API replies/s, {load}", "api_loaded_rps"),
        Row(f"Hub API p99, {load} (ms)", "api_loaded_p99_ms"),
        Row("proxied req/s reached", "load_rps"),
        Row(f"proxied p99, {load} (ms)", "load_p99_ms"),
        Row("Hub GC pauses >=10 ms, busy", "gc_pauses", gc_log=True),
        Row("  of them gen 2", "gc_gen2_pauses", gc_log=True),
        Row("longest Hub GC pause, busy (ms)", "gc_max_ms", gc_log=True),
        Row("probe requests >=10 ms, busy", "slow_probe_requests", gc_log=True),
        Row("  % overlapping a GC pause", "slow_probe_with_gc_pct", gc_log=True),
        Row("GC pause under slowest probe req (ms)", "slowest_probe_gc_ms", gc_log=True),
        Row("proxied p99 busy / CHP's", "busy_p99_ms", ratio_to="chp"),
        Row("proxied max busy / CHP's", "busy_max_ms", ratio_to="chp"),
        Row("Hub API replies/s busy / hub-loop's", "api_busy_rps", ratio_to="hub-loop"),
        Row(f"Hub API replies/s, {load} / hub-loop's", "api_loaded_rps", ratio_to="hub-loop"),
        Row(f"Hub API p99, {load} / hub-loop's", "api_loaded_p99_ms", ratio_to="hub-loop"),
    ]
    return [row for row in rows if opts.gc_log or not row.gc_log]


def _per_rep(samples, candidate, field_name):
    return {
        s["rep"]: s[field_name]
        for s in samples
        if s["test"] == "busy_hub" and s["candidate"] == candidate and s.get(field_name) is not None
        and not s.get("error")
    }


def figure(samples, row, candidate):
    """The row's median for candidate: of its figures, or of its per-repetition ratios to row.ratio_to."""
    mine = _per_rep(samples, candidate, row.field)
    if row.ratio_to is None:
        return statistics.median(mine.values()) if mine else None
    theirs = _per_rep(samples, row.ratio_to, row.field)
    ratios = [mine[rep] / theirs[rep] for rep in mine.keys() & theirs.keys() if theirs[rep]]
    return statistics.median(ratios) if ratios else None


def table_rows(samples, names, opts):
    """One dict per row: its label and a figure (or ratio) per candidate, None where there is none."""
    return [
        {"metric": row.label, "ratio_to": row.ratio_to}
        | {name: None if row.ratio_to == name else figure(samples, row, name) for name in names}
        for row in rows_for(opts)
    ]


def format_results(rows, names):
    """The table as printed; a ratio row leaves its reference candidate's cell empty."""
    lines = []
    for row in rows:
        formatter = format_figure if row["ratio_to"] is None else format_ratio
        cells = ["" if row["ratio_to"] == name else formatter(row[name]) for name in names]
        lines.append((row["metric"], *cells))
    return align_columns(("metric", *names), lines)


# (label, field, reference candidate, op, limit, who the goal is on)
GOALS = (
    ("busy proxied p99 <= 2x CHP's", "busy_p99_ms", "chp", "<=", 2.0),
    ("Hub API replies/s busy >= 0.9x hub-loop's", "api_busy_rps", "hub-loop", ">=", 0.9),
)


def goal_rows(samples, names):
    """(goal, candidate, measured ratio, verdict) for every inprocess candidate that is not the reference."""
    out = []
    for label, field_name, reference, op, limit in GOALS:
        for name in names:
            if not CANDIDATES[name].inprocess or name == reference:
                continue
            ratio = figure(samples, Row(label, field_name, ratio_to=reference), name)
            if ratio is None:
                verdict = "n/a"
            else:
                verdict = "PASS" if (ratio <= limit if op == "<=" else ratio >= limit) else "FAIL"
            out.append((label, name, format_ratio(ratio), verdict))
    return out


def _worth_reporting(line):
    """A Hub's error, or a warning about a proxy; unrecognized options are _check_hub_log()'s."""
    if UNRECOGNIZED.search(line) or any(expected in line for expected in LOG_EXPECTED):
        return False
    return line.startswith(("[E ", "[C ", "Traceback")) or (line.startswith("[W ") and "proxy" in line.lower())


def hub_log_problems(root):
    """What _worth_reporting() picks from every Hub's log (<root>/hub-*/jupyterhub.log), as problem entries."""
    entries = []
    for path in sorted(Path(root).glob("hub-*/jupyterhub.log")):
        with open(path, errors="replace") as f:
            lines = [line.rstrip()[:200] for line in f if _worth_reporting(line)]
        if lines:
            shown = " | ".join(lines[:3])
            problem = f"{len(lines)} lines, first: {shown}"
            entries.append({"test": "log", "candidate": path.parent.name, "rep": 0, "problems": [problem]})
    return entries


# The defaults of --reps, --seconds and --warmup; --quick's, unless given.
FULL = {"reps": 3, "seconds": 8, "warmup": 2}
QUICK = {"reps": 1, "seconds": 3, "warmup": 1}


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    helps = {
        "seconds": "seconds per measured phase",
        "reps": "repetitions, a fresh Hub per candidate each",
        "warmup": "seconds of unrecorded busy load per Hub first",
    }
    for name, text in helps.items():
        # No argparse default: --quick picks it (see FULL and QUICK).
        text = f"{text} (default: {FULL[name]})"
        parser.add_argument(f"--{name}", type=int, default=argparse.SUPPRESS, help=text)
    parser.add_argument("--users", type=int, default=2000, help="users in the Hub's database")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"subset of {','.join(CANDIDATES)}")
    parser.add_argument("--api-clients", type=int, default=3, help="connections looping GET " + API_PATH)
    parser.add_argument("--probe-rate", type=int, default=200, help="req/s of the one-connection probe")
    parser.add_argument("--load-rate", type=int, default=1000, help="proxied req/s in the proxy-loaded phase")
    parser.add_argument("--load-connections", type=int, default=50, help="connections of the proxied load")
    parser.add_argument(
        "--gc-log", action="store_true", help=f"log Hub GC pauses and probe requests of {SLOW_MS} ms or more"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: " + " ".join(f"--{k} {v}" for k, v in QUICK.items())
    )
    parser.add_argument(
        "--json", default=os.path.join(HERE, "results", "busy_hub.json"), help="where to write raw results"
    )
    parser.add_argument("--node-modules", default=os.path.join(HERE, "node_modules"), help="setup.sh's CHP")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.candidates = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in args.candidates if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates: {', '.join(unknown)} (known: {', '.join(CANDIDATES)})")
    return args


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def check_tools(node_modules):
    """Fail early, with the fix, if setup.sh has not run (the seed Hub uses CHP whatever the candidates)."""
    missing = [tool for tool in ("wrk", "node") if shutil.which(tool) is None]
    if not os.path.isdir(os.path.join(node_modules, "configurable-http-proxy")):
        missing.append(f"{node_modules}/configurable-http-proxy")
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run tests/benchmarks/setup.sh first")


def report(args, meta, samples, failed):
    """Print the table, the goals, notes and problems; write the JSON."""
    rows = table_rows(samples, args.candidates, args)
    goals = goal_rows(samples, args.candidates)
    meta["goals"] = [dict(zip(("goal", "candidate", "measured", "result"), goal, strict=True)) for goal in goals]
    write_json(args.json, meta, samples, rows)
    print()
    print(format_results(rows, args.candidates))
    print()
    print(align_columns(("goal", "candidate", "measured", "result"), goals))
    print(
        f"\n{args.reps} reps x {args.seconds} s, {args.users} users, {args.api_clients} API clients,"
        f" probe {args.probe_rate} req/s; load average {meta['loadavg_at_start'][0]:.2f} at start,"
        f" {meta['loadavg_at_end'][0]:.2f} at end; took {meta['wall_seconds']:.0f} s;"
        f" raw results: {os.path.relpath(args.json)}"
    )
    if meta["loadavg_at_start"][0] > BUSY_LOADAVG:
        print(f"note: other work shared the machine ({os.cpu_count()} CPUs): absolute figures are unreliable")
    notes = sorted({f"{s['candidate']}: {n}" for s in samples for n in s.get("notes", [])})
    if notes:
        print("\nnotes:\n" + "\n".join(f"  {n}" for n in notes))
    found = problems(samples)
    if found:
        print("\nproblems seen:\n" + "\n".join(f"  {line}" for line in found))
    if failed:
        print(f"\nFAILED: {', '.join(sorted(failed))} could not be measured (see above)", file=sys.stderr)


def main():
    args = parse_args()
    check_tools(args.node_modules)
    stop_on_sigterm()
    meta = run_metadata(args)
    opts = Options(
        seconds=args.seconds,
        warmup=args.warmup,
        users=args.users,
        api_clients=args.api_clients,
        probe_rate=args.probe_rate,
        load_rate=args.load_rate,
        load_connections=args.load_connections,
        gc_log=args.gc_log,
    )
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="inprocess-proxy-busy-hub-")
    keep_logs = args.keep_logs
    try:
        with ChildProcesses(root) as procs:
            backend_url = f"http://127.0.0.1:{start_nginx(procs, root)}"
            seed_db = seed_database(root, opts, backend_url, args.node_modules, log)
            samples, failed = run_candidates(
                root, args.candidates, opts, backend_url, args.node_modules, seed_db, args.reps, log
            )
        samples += hub_log_problems(root)
        keep_logs = keep_logs or bool(problems(samples))
    except BaseException:
        keep_logs = True
        raise
    finally:
        if keep_logs:
            print(f"logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    meta["wall_seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_at_end"] = os.getloadavg()
    report(args, meta, samples, failed)
    if failed:
        sys.exit(EXIT_CANDIDATE_FAILED)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process the benchmark started has been stopped")
