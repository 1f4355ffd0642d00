"""From raw samples to the goals table: medians, paired ratios, PASS/FAIL, JSON.

A sample is one measurement of one candidate in one repetition of one test, a
flat dict such as ``{"test": "small_c10", "candidate": "chp", "rep": 0,
"rps": 3512.0, ...}``. A ``Metric`` names the test and field a table row
shows. Figures are medians over repetitions; ratios are medians of the
per-repetition ratios (both candidates measured in the same repetition,
minutes apart at most), which is what stays stable on a noisy machine.
"""

import json
import os
import statistics
from dataclasses import dataclass

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


# The goals from the project's performance issue (inprocess) and the standalone
# command's issue (standalone: the whole process's RSS, as CHP's); rows without
# a goal give context.
METRICS = (
    Metric("small req/s c=1", "small_c1", "rps", "req/s"),
    Metric("small req/s c=10", "small_c10", "rps", "req/s", (Goal("chp", ">=", 2.5), _standalone("chp", ">=", 2.5))),
    Metric("small req/s c=100", "small_c100", "rps", "req/s"),
    Metric("proxy CPU us/req c=1", "small_c1", "cpu_us_per_req", "us"),
    Metric(
        "proxy CPU us/req c=10",
        "small_c10",
        "cpu_us_per_req",
        "us",
        (Goal("chp", "<=", 0.35), _standalone("chp", "<=", 0.35)),
    ),
    Metric("proxy CPU us/req c=100", "small_c100", "cpu_us_per_req", "us"),
    Metric("p50 latency c=1 (ms)", "small_c1", "p50_ms", "ms", (Goal("chp", "<=", 0.5),)),
    Metric("p99 latency c=10 (ms)", "small_c10", "p99_ms", "ms"),
    Metric("1 MiB MiB/s c=10", "large_c10", "mib_s", "MiB/s", (Goal("chp", ">=", 2.0), _standalone("chp", ">=", 2.0))),
    Metric("RSS added idle (MB)", "idle", "rss_added_mb", "MB", (Goal("value", "<=", 10), _standalone("value", "<=", 30))),
    Metric("RSS added peak c=100 (MB)", "small_c100", "rss_added_peak_mb", "MB", (Goal("value", "<=", 25),)),
    Metric("RSS added idle after load (MB)", "after_load", "rss_added_mb", "MB"),
    Metric("WS round-trips/s c=1", "ws_c1", "rps", "rt/s"),
    Metric("WS round-trips/s c=10", "ws_c10", "rps", "rt/s", (Goal("chp", ">=", 1.3),)),
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


def format_figure(value):
    """A median as the table prints it (the docs' benchmark pages use this too)."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


def format_ratio(value):
    """A paired ratio as the table prints it."""
    return "n/a" if value is None else f"{value:.2f}x"


# The figure columns: (header, key in a table row, formatter). "metric" comes first, goal and result last.
FIGURE_COLUMNS = (
    ("direct", "direct", format_figure),
    ("CHP", "chp", format_figure),
    ("relay", "relay", format_figure),
    ("inprocess", "inprocess", format_figure),
    ("standalone", "standalone", format_figure),
    ("inproc/CHP", "inprocess/chp", format_ratio),
    ("inproc/direct", "inprocess/direct", format_ratio),
    ("standalone/CHP", "standalone/chp", format_ratio),
    ("relay/CHP", "relay/chp", format_ratio),
)
HEADER = ("metric", *(header for header, _, _ in FIGURE_COLUMNS), "goal", "result")


def format_table(rows):
    """The table as aligned text."""
    lines = [
        (row["metric"], *(fmt(row[key]) for _, key, fmt in FIGURE_COLUMNS), row["goal"], row["result"])
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [HEADER, *lines]) for i in range(len(HEADER))]
    out = []
    for cells in [HEADER, *lines]:
        first, *rest = cells
        out.append(
            "  ".join([first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)])
        )
        if cells is HEADER:
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
