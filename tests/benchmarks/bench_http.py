"""Benchmark InProcessProxy and the inprocess-proxy command against CHP 5.3.0, a byte relay and no proxy,
and print the goals table.

    tests/benchmarks/setup.sh                 # once: wrk, nginx, CHP and ws
    python tests/benchmarks/bench_http.py     # about 7 minutes with the defaults

Method (tests/benchmarks/README.md): all candidates run at once in front of the same nginx and
websocket echo backends. For each repetition, each test (small body at c=1,
10, 100; 1 MiB at c=10; websocket ping-pong at c=1, 10) is run against each
candidate in turn, the order rotating every repetition. Proxy CPU comes from
/proc/PID/stat before and after each run, peak RSS from VmHWM reset before the
c=100 run. The Hub test (hub_latency.py) runs last, with its own Hubs. Figures
are medians; ratios are medians of per-repetition paired ratios. The raw
samples go to results/latest.json.

The relay (byte_relay.py) copies bytes in Python and does nothing else: it is
the floor for any proxy in Python, shown for context (relay/CHP); the goals
are on InProcessProxy and on the standalone command (``standalone``, started
as CHP is, its RSS the whole process's as CHP's).

Exits 0 unless something crashed: goals are reported, never asserted.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import _tests_on_path  # noqa: F401
from _backends import LARGE_BODY_BYTES, SMALL_BODY_BYTES, start_backends
from _candidates import STARTERS
from _load import run_wrk, run_ws_client, write_wrk_script
from _procs import ChildProcesses, stop_on_sigterm
from _report import CANDIDATES, format_table, goals_summary, problems, rotated, run_metadata, table_rows, write_json
from hub_latency import add_hub_arguments, hub_names, hub_options, run_hub_latency
from support.procfs import cpu_seconds, peak_rss_kib, reset_peak_rss, rss_kib
from support.processes import StartupError

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1024 * 1024
# A 1-minute load average above this before we start means other work is running.
BUSY_LOADAVG = 0.5


@dataclass(frozen=True)
class LoadTest:
    """One load shape, run against every candidate in every repetition."""

    name: str
    kind: str  # "http" (wrk) or "ws" (ws_client.js)
    connections: int
    path: str = "/small"
    body_bytes: int = SMALL_BODY_BYTES
    # Reset VmHWM before this run and read it after: the "peak at c=100" figure.
    tracks_peak_rss: bool = False


LOAD_TESTS = (
    LoadTest("small_c1", "http", 1),
    LoadTest("small_c10", "http", 10),
    LoadTest("small_c100", "http", 100, tracks_peak_rss=True),
    LoadTest("large_c10", "http", 10, path="/large", body_bytes=LARGE_BODY_BYTES),
    LoadTest("ws_c1", "ws", 1),
    LoadTest("ws_c10", "ws", 10),
)


@dataclass
class RunSettings:
    seconds: int
    wrk_script: str
    node_modules: str


def run_load(test, candidate, settings, seconds=None):
    """Run test's load generator against candidate once; returns a LoadResult."""
    seconds = seconds or settings.seconds
    if test.kind == "ws":
        return run_ws_client(
            candidate.ws_url,
            connections=test.connections,
            seconds=seconds,
            node_modules=settings.node_modules,
        )
    return run_wrk(
        candidate.http_url + test.path,
        connections=test.connections,
        seconds=seconds,
        script=settings.wrk_script,
    )


def _from_proc(read, pid):
    """read(pid), or None if the process has exited meanwhile."""
    try:
        return read(pid)
    except OSError:
        return None


def measure(test, candidate, rep, settings):
    """One run of test against candidate, with the proxy's CPU and (if asked) peak RSS around it."""
    sample = {"test": test.name, "candidate": candidate.name, "rep": rep}
    if not candidate.is_alive():
        return sample | {"error": candidate.exit_message(), "problems": [candidate.exit_message()]}
    pid = candidate.pid
    if pid and test.tracks_peak_rss:
        _from_proc(reset_peak_rss, pid)
    cpu_before = _from_proc(cpu_seconds, pid) if pid else None
    result = run_load(test, candidate, settings)
    cpu_after = _from_proc(cpu_seconds, pid) if pid else None
    if cpu_before is not None and cpu_after is not None and result.requests:
        sample["cpu_us_per_req"] = 1e6 * (cpu_after - cpu_before) / result.requests
    if pid and test.tracks_peak_rss:
        peak_kib = _from_proc(peak_rss_kib, pid)
        if peak_kib is not None:
            sample["rss_added_peak_mb"] = _rss_added_mb(candidate, peak_kib)
    if not candidate.is_alive():
        result.error = candidate.exit_message()
    sample.update(
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        mib_s=result.rps * test.body_bytes / MIB if result.rps and test.kind == "http" else None,
        requests=result.requests,
        seconds=result.seconds,
        non_2xx_3xx=result.non_2xx_3xx,
        socket_errors=result.socket_errors,
        error=result.error,
        problems=result.problems,
    )
    return sample


def _rss_added_mb(candidate, rss_now_kib):
    """RSS the proxy accounts for: all of CHP's or the relay's; the runner's beyond its RSS before start()."""
    return (rss_now_kib - candidate.memory_kib.get("rss_before_start", 0)) / 1024


def idle_memory_sample(candidate):
    """RSS the proxy adds once started, before any traffic."""
    memory = candidate.memory_kib
    added_mb = _rss_added_mb(candidate, memory["rss_after_start"])
    return {"test": "idle", "candidate": candidate.name, "rep": 0, "rss_added_mb": added_mb, **memory}


def after_load_memory_sample(candidate):
    """RSS the proxy still holds once every load run is over: what it keeps (pools, buffers, heap)."""
    added_mb = _rss_added_mb(candidate, rss_kib(candidate.pid))
    return {"test": "after_load", "candidate": candidate.name, "rep": 0, "rss_added_mb": added_mb}


def describe(sample):
    """A progress line for one run."""
    if sample.get("error"):
        return f"error: {sample['error']}"
    parts = [f"{sample['rps']:,.0f}/s"]
    if sample.get("p50_ms") is not None:
        parts.append(f"p50 {sample['p50_ms']:.3f} ms")
    if sample.get("cpu_us_per_req") is not None:
        parts.append(f"CPU {sample['cpu_us_per_req']:.0f} us/req")
    if sample.get("rss_added_peak_mb") is not None:
        parts.append(f"peak +{sample['rss_added_peak_mb']:.1f} MB")
    if sample["problems"]:
        parts.append("[" + "; ".join(sample["problems"]) + "]")
    return ", ".join(parts)


def warm_up(candidates, tests, settings, seconds, log):
    """Run every test once, unrecorded, against each proxy.

    CHP is 2-3x slower until node's JIT has seen several seconds of load.
    """
    for candidate in candidates:
        if candidate.pid is None:
            continue
        for test in tests:
            result = run_load(test, candidate, settings, seconds=seconds)
            if result.problems:
                log(f"warm-up {test.name} {candidate.name}: {'; '.join(result.problems)}")


def run_load_tests(candidates, tests, reps, settings, log):
    """The paired protocol: per repetition, per test, every candidate in rotated order."""
    samples = []
    for rep in range(reps):
        for test in tests:
            for candidate in rotated(candidates, rep):
                sample = measure(test, candidate, rep, settings)
                samples.append(sample)
                log(f"rep {rep + 1}/{reps} {test.name} {candidate.name}: {describe(sample)}")
    return samples


def start_candidates(procs, names, backends, node_modules, log):
    """Start each named candidate; one that fails is reported and left out (its column reads n/a)."""
    started, failures = [], []
    for name in names:
        try:
            started.append(STARTERS[name](procs, backends, node_modules))
        except (StartupError, OSError, ValueError) as e:
            log(f"{name} did not start, its figures will be n/a: {e}")
            failures.append(
                {"test": "startup", "candidate": name, "rep": 0, "error": str(e), "problems": [str(e)]}
            )
    return started, failures


def check_tools(node_modules):
    """Fail early, with the fix, if setup.sh has not run."""
    missing = [tool for tool in ("wrk", "node") if shutil.which(tool) is None]
    if not os.path.isdir(os.path.join(node_modules, "configurable-http-proxy")):
        missing.append(f"{node_modules}/configurable-http-proxy")
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run tests/benchmarks/setup.sh first")


# Log lines worth reporting from InProcessProxy's processes: Python's logging
# format in the runner, JupyterHub's "[E 2025-..." format in the Hub.
LOG_PROBLEM_MARKERS = ("Traceback", " ERROR ", " CRITICAL ", " WARNING ", "[E ", "[C ", "[W ")
# Lines every benchmark Hub logs, which say nothing about the proxy.
LOG_EXPECTED = (
    "Using testing authenticator DummyAuthenticator",
    "Received signal SIGTERM, initiating shutdown",
)
MAX_LOG_LINES_REPORTED = 5


def log_problem_samples(root):
    """Errors and warnings that InProcessProxy's processes logged, as problem entries."""
    entries = []
    for name in ("inprocess", "standalone", "hub-inprocess"):
        path = os.path.join(root, f"{name}.log")
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            lines = [
                line.rstrip()
                for line in f
                if any(marker in line for marker in LOG_PROBLEM_MARKERS)
                and not any(expected in line for expected in LOG_EXPECTED)
            ]
        if lines:
            shown = [line[:200] for line in lines[:MAX_LOG_LINES_REPORTED]]
            entries.append(
                {
                    "test": "log",
                    "candidate": name,
                    "rep": 0,
                    "problems": [f"{len(lines)} warning/error lines, first: " + " | ".join(shown)],
                }
            )
    return entries


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=3, help="seconds per load run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every test (and of the Hub test)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of unrecorded load per test and proxy first; 0 skips it",
    )
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATES), help=f"comma-separated subset of {','.join(CANDIDATES)}"
    )
    parser.add_argument(
        "--tests",
        default=",".join(t.name for t in LOAD_TESTS),
        help="comma-separated subset of the load tests",
    )
    parser.add_argument("--no-hub", action="store_true", help="skip the Hub API latency test")
    add_hub_arguments(parser)
    parser.add_argument(
        "--json", default=os.path.join(HERE, "results", "latest.json"), help="where to write raw results"
    )
    parser.add_argument(
        "--node-modules",
        default=os.path.join(HERE, "node_modules"),
        help="where setup.sh installed CHP and ws",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    return parser.parse_args()


def selected(names_csv, known, what):
    names = [n.strip() for n in names_csv.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_benchmark(args, procs, root):
    """Everything that needs processes: backends, candidates, load tests, then the Hub test."""
    names = selected(args.candidates, CANDIDATES, "candidates")
    tests = [t for t in LOAD_TESTS if t.name in selected(args.tests, [t.name for t in LOAD_TESTS], "tests")]
    settings = RunSettings(
        args.seconds, write_wrk_script(os.path.join(root, "report.lua")), args.node_modules
    )
    backends = start_backends(procs, root, args.node_modules)
    candidates, samples = start_candidates(procs, names, backends, args.node_modules, log)
    samples += [idle_memory_sample(c) for c in candidates if c.pid]
    if args.warmup:
        log(f"warm-up: {args.warmup} s of each test per proxy")
        warm_up(candidates, tests, settings, args.warmup, log)
    if tests:
        samples += run_load_tests(candidates, tests, args.reps, settings, log)
    for candidate in candidates:
        if candidate.pid and candidate.is_alive():
            samples.append(after_load_memory_sample(candidate))
        if candidate.proc is not None:
            procs.stop(candidate.proc)
    if not args.no_hub and "inprocess" in names:
        log("Hub test: starting JupyterHub")
        samples += run_hub_latency(
            root,
            backends.http_url,
            args.node_modules,
            hub_names(args),
            hub_options(args, args.reps, args.warmup),
            log,
        )
    return samples


def main():
    args = parse_args()
    check_tools(args.node_modules)
    stop_on_sigterm()
    meta = run_metadata(args)
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="inprocess-proxy-bench-")
    keep_logs = args.keep_logs
    try:
        with ChildProcesses(root) as procs:
            samples = run_benchmark(args, procs, root)
        samples += log_problem_samples(root)
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
    report(args, meta, samples)


def report(args, meta, samples):
    """Print the table, the problems and a word on machine load; write the JSON."""
    rows = table_rows(samples)
    write_json(args.json, meta, samples, rows)
    print()
    print(format_table(rows))
    took = meta["wall_seconds"]
    print(f"\ngoals: {goals_summary(rows)}; raw results: {os.path.relpath(args.json)}; took {took:.0f} s")
    load_at_start = meta["loadavg_at_start"][0]
    if load_at_start > BUSY_LOADAVG:
        print(
            f"note: the 1-minute load average was {load_at_start:.1f} before the benchmark started"
            f" ({os.cpu_count()} CPUs): other work shared the machine, so absolute figures (and p99s)"
            " are unreliable; the paired ratios less so. Rerun on a quiet machine before quoting them."
        )
    found = problems(samples)
    if found:
        print("\nproblems seen (runs with errors, non-2xx/3xx responses or socket errors):")
        print("\n".join(f"  {line}" for line in found))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process the benchmark started has been stopped")
