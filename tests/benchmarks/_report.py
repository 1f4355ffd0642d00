"""From raw samples to the goals table: medians, paired ratios, PASS/FAIL, JSON.

A sample is one measurement of one candidate in one repetition of one test, a
flat dict such as ``{"test": "small_c10", "candidate": "chp", "rep": 0,
"rps": 3512.0, ...}``. A ``Metric`` names the test and field a table row
shows. Figures are medians over repetitions; ratios are medians of the
per-repetition ratios (both candidates measured in the same repetition,
minutes apart at most), which is what stays stable on a noisy machine.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass

import _tests_on_path  # noqa: F401
from support.modules import load_module

CANDIDATES = ("direct", "chp", "relay", "inprocess", "standalone")
# The paired ratios, (numerator, denominator); a table row has each as "numerator/denominator".
# relay/chp: how near CHP the floor for a Python proxy is (byte_relay.py); goals are on
# inprocess and, where the standalone issue sets one, on standalone.
RATIOS = (("inprocess", "chp"), ("inprocess", "direct"), ("standalone", "chp"), ("relay", "chp"))


@dataclass(frozen=True)
class Goal:
    """A goal on one candidate: either its ratio to CHP, or its own figure, against a limit."""

    on: str  # "chp": the candidate/CHP paired ratio; "value": the candidate's figure itself
    op: str  # ">=" or "<="
    limit: float
    candidate: str = "inprocess"

    def describe(self, unit):
        if self.on == "chp":
            text = f"{self.op} {self.limit:g}x CHP"
        else:
            text = f"{self.op} {self.limit:g} {unit}".rstrip()
        return text if self.candidate == "inprocess" else f"{self.candidate} {text}"

    def verdict(self, row):
        measured = row[f"{self.candidate}/chp"] if self.on == "chp" else row[self.candidate]
        if measured is None:
            return "n/a"
        met = measured >= self.limit if self.op == ">=" else measured <= self.limit
        return "PASS" if met else "FAIL"


@dataclass(frozen=True)
class Metric:
    """One row of the table: which test's samples, which field, and its goals if any."""

    label: str
    test: str
    field: str
    unit: str = ""
    goals: tuple = ()


def _standalone(on, op, limit):
    return Goal(on, op, limit, candidate="standalone")


# The goals for InProcessProxy's default mode (its own thread, uvloop) and for the standalone
# command (its whole process's RSS, as CHP's); rows without a goal give context.
METRICS = (
    Metric("small req/s c=1", "small_c1", "rps", "req/s"),
    Metric("small req/s c=10", "small_c10", "rps", "req/s", (Goal("chp", ">=", 4.0), _standalone("chp", ">=", 2.5))),
    Metric("small req/s c=100", "small_c100", "rps", "req/s"),
    Metric("proxy CPU us/req c=1", "small_c1", "cpu_us_per_req", "us"),
    Metric(
        "proxy CPU us/req c=10",
        "small_c10",
        "cpu_us_per_req",
        "us",
        (Goal("chp", "<=", 0.25), _standalone("chp", "<=", 0.35)),
    ),
    Metric("proxy CPU us/req c=100", "small_c100", "cpu_us_per_req", "us"),
    Metric("p50 latency c=1 (ms)", "small_c1", "p50_ms", "ms", (Goal("chp", "<=", 0.5),)),
    Metric("p99 latency c=10 (ms)", "small_c10", "p99_ms", "ms"),
    Metric("1 MiB MiB/s c=10", "large_c10", "mib_s", "MiB/s", (Goal("chp", ">=", 2.5), _standalone("chp", ">=", 2.0))),
    Metric("RSS added idle (MB)", "idle", "rss_added_mb", "MB", (Goal("value", "<=", 10), _standalone("value", "<=", 30))),
    Metric("RSS added peak c=100 (MB)", "small_c100", "rss_added_peak_mb", "MB", (Goal("value", "<=", 25),)),
    Metric("RSS added idle after load (MB)", "after_load", "rss_added_mb", "MB"),
    Metric("WS round-trips/s c=1", "ws_c1", "rps", "rt/s"),
    # round trips per second are bounded by the clients and backends on 2 cores; the proxy's CPU is not
    Metric("WS round-trips/s c=10", "ws_c10", "rps", "rt/s"),
    Metric("WS proxy CPU us/rt c=10", "ws_c10", "cpu_us_per_req", "us", (Goal("chp", "<=", 0.7),)),
    Metric("Hub API p99 idle (ms)", "hub_api", "idle_p99_ms", "ms"),
    Metric("Hub API p99 proxy loaded (ms)", "hub_api", "loaded_p99_ms", "ms"),
    Metric("Hub API p99 loaded/idle", "hub_api", "p99_loaded_over_idle", "x", (Goal("value", "<=", 1.5),)),
    Metric("proxied req/s during Hub test", "hub_api", "load_rps", "req/s"),
    Metric("Hub+proxy RSS idle (MB)", "hub_api", "hub_and_proxy_rss_mb", "MB"),
)


def rotated(items, rep):
    """items starting at position rep (mod len): who runs first in repetition rep of the paired protocol."""
    shift = rep % len(items)
    return items[shift:] + items[:shift]


def _per_rep(samples, test, candidate, field):
    """{rep: figure} for one candidate, skipping failed runs."""
    return {
        s["rep"]: s[field]
        for s in samples
        if s["test"] == test
        and s["candidate"] == candidate
        and s.get(field) is not None
        and not s.get("error")
    }


def _median(values):
    return statistics.median(values) if values else None


def _paired_ratio(numerators, denominators):
    """Median over repetitions measured for both of numerator / denominator."""
    ratios = [
        numerators[rep] / denominators[rep]
        for rep in numerators.keys() & denominators.keys()
        if denominators[rep]
    ]
    return _median(ratios)


def table_rows(samples, metrics=METRICS):
    """One dict per metric: a median per candidate, the paired RATIOS, goal and verdict."""
    rows = []
    for metric in metrics:
        by_candidate = {c: _per_rep(samples, metric.test, c, metric.field) for c in CANDIDATES}
        if not any(by_candidate.values()):
            continue
        row = {"metric": metric.label, "unit": metric.unit}
        row.update({c: _median(list(by_candidate[c].values())) for c in CANDIDATES})
        row.update(
            {f"{num}/{den}": _paired_ratio(by_candidate[num], by_candidate[den]) for num, den in RATIOS}
        )
        row["goal"] = "; ".join(goal.describe(metric.unit) for goal in metric.goals)
        row["verdicts"] = [goal.verdict(row) for goal in metric.goals]
        row["result"] = "; ".join(row["verdicts"])
        rows.append(row)
    return rows


# The figures are formatted as the docs' benchmark pages format them: the docs build must not
# import the test tree, so the shared formatting lives in docs/_ext/benchmark_format.py.
FIGURE_COLUMNS = load_module(
    "benchmark_format",
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "_ext", "benchmark_format.py"),
).FIGURE_COLUMNS
HEADER = ("metric", *(header for header, _, _ in FIGURE_COLUMNS), "goal", "result")


def format_table(rows):
    """The table as aligned text."""
    lines = [
        (row["metric"], *(fmt(row[key]) for _, key, fmt in FIGURE_COLUMNS), row["goal"], row["result"])
        for row in rows
    ]
    return align_columns(HEADER, lines)


def align_columns(header, lines):
    """Cells as aligned text: the first column left-aligned, the others right-aligned, a rule under header."""
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    out = []
    for cells in [header, *lines]:
        first, *rest = cells
        out.append(
            "  ".join([first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)])
        )
        if cells is header:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def problems(samples):
    """One line per run that failed or saw non-2xx responses or socket errors."""
    return [
        f"{s['test']} {s['candidate']} rep {s['rep']}: {'; '.join(s['problems'])}"
        for s in samples
        if s.get("problems")
    ]


def write_json(path, meta, samples, rows):
    """The raw samples and the table, for plotting later."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(
            {"meta": meta, "table": rows, "problems": problems(samples), "samples": samples}, f, indent=1
        )
        f.write("\n")


def goals_summary(rows):
    """'N PASS, M FAIL, K n/a' over every goal of every row."""
    verdicts = [verdict for row in rows for verdict in row["verdicts"]]
    return ", ".join(f"{verdicts.count(v)} {v}" for v in ("PASS", "FAIL", "n/a"))


def version_of(argv):
    """The first line a tool prints about its version, or None."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def run_metadata(args):
    """What the run was: for telling runs apart when plotting them later."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "args": vars(args),
        "python": sys.version.split()[0],
        "commit": version_of(["git", "-C", repo, "rev-parse", "HEAD"]),
        "node": version_of(["node", "--version"]),
        "wrk": version_of(["wrk", "--version"]),
        "uvloop": version_of([sys.executable, "-c", "import uvloop; print(uvloop.__version__)"]),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }
