"""Sphinx directives that show a benchmark run: inline SVG bar charts, the goals table, sizing.

The data is the JSON ``tests/benchmarks/bench_http.py`` writes
(``tests/benchmarks/results/latest.json``), committed as
``docs/_data/benchmark.json`` (the ``benchmark_data`` config value, relative
to the docs folder). What is read from it (``tests/benchmarks/_report.py``
writes it)::

    {
      "meta": {"started": ISO date, "machine": str, "cpus": int, "python": str,
               "node": str, "wrk": str, "wall_seconds": float,
               "loadavg_at_start": [3 floats],
               "args": {"seconds": int, "reps": int, "warmup": int, "hub_seconds": int, ...}},
      "table": [{"metric": label, "unit": str, "direct": float|null, "chp": float|null,
                 "relay": float|null, "inprocess": float|null, "inprocess/chp": float|null,
                 "inprocess/direct": float|null, "relay/chp": float|null,
                 "goal": str, "result": "PASS"|"FAIL"|"n/a"|""}],
      "problems": [str]
    }

Every key may be missing; a chart whose rows are all missing says so, a
column no row has (``relay`` in runs from before it existed) is left out of
the table, and a missing or empty file gives a "No benchmark data"
admonition, so the docs build before any run exists.

``benchmark-charts`` (no argument, or a path overriding ``benchmark_data``)
renders the run's metadata, one grouped bar chart per entry of ``CHARTS``
(direct, CHP, relay and inprocess side by side, those that have figures;
values printed above the bars), the table of medians, paired ratios and goals
as the benchmark printed it, and the problems it reported.

``benchmark-sizing`` renders the arithmetic of how many requests one core
forwards, from one CPU-per-request row::

    ```{benchmark-sizing}
    :metric: proxy CPU us/req c=1
    :requests-per-user: 1
    :core-share: 0.5
    ```

The role ``{benchmark-value}`metric label|column``` inserts one figure of
the table in running text (see ``benchmark_value_role``).

Numbers are formatted by ``benchmark_format.py``, as the benchmark's printed
table formats them.
"""

import datetime
import html
import json
import math
import os

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

import docnodes
from benchmark_format import FIGURE_COLUMNS, format_figure, format_ratio

#: columns of the data, in the order of the bars: (key in a table row, legend, colour)
#: colours: Okabe-Ito orange, bluish green and blue (distinguishable with colour blindness) and a grey
CANDIDATES = (
    ("direct", "direct", "#999999"),
    ("chp", "CHP", "#E69F00"),
    ("relay", "relay", "#009E73"),
    ("inprocess", "inprocess", "#0072B2"),
)


class Chart:
    """One grouped bar chart: a title, a y-axis label and (group label, table row label) pairs."""

    def __init__(self, title, axis, groups, better):
        self.title = title
        self.axis = axis
        self.groups = groups
        self.better = better  # "higher" or "lower"


# Row labels are those of tests/benchmarks/_report.py METRICS.
CHARTS = (
    Chart(
        "Small requests (100 B body): requests per second",
        "requests/s",
        (("1 connection", "small req/s c=1"), ("10", "small req/s c=10"), ("100", "small req/s c=100")),
        "higher",
    ),
    Chart(
        "Proxy CPU time per small request",
        "µs of CPU per request",
        (("1 connection", "proxy CPU us/req c=1"), ("10", "proxy CPU us/req c=10"), ("100", "proxy CPU us/req c=100")),
        "lower",
    ),
    Chart(
        "Median latency, one connection",
        "ms",
        (("p50, 1 connection", "p50 latency c=1 (ms)"),),
        "lower",
    ),
    Chart(
        "1 MiB responses, 10 connections: throughput",
        "MiB/s",
        (("10 connections", "1 MiB MiB/s c=10"),),
        "higher",
    ),
    Chart(
        "WebSocket round-trips per second (32 B echo)",
        "round-trips/s",
        (("1 connection", "WS round-trips/s c=1"), ("10", "WS round-trips/s c=10")),
        "higher",
    ),
)

#: a run shorter than the benchmark's defaults is flagged as indicative only
DEFAULT_SECONDS = 3
DEFAULT_REPS = 3


# --- data -------------------------------------------------------------------


def load(path):
    """The parsed JSON, or None if the file does not exist or has no table."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not data.get("table"):
        return None
    return data


def rows_by_metric(data):
    return {row.get("metric"): row for row in data.get("table", [])}


def round_significant(value, digits=2):
    """``value`` rounded to ``digits`` significant digits (for derived estimates)."""
    if value <= 0:
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(value))))


def fmt_estimate(value):
    value = round_significant(value)
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


# --- SVG --------------------------------------------------------------------


def nice_step(value):
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power


def y_axis(top_value, ticks=5):
    """``(axis maximum, tick step)``: about ``ticks`` round steps covering ``top_value``."""
    step = nice_step(top_value / ticks)
    return step * math.ceil(top_value / step - 1e-9), step


def tick_label(value):
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{round(value, 6):g}"


def bar_chart_svg(chart, rows):
    """One grouped bar chart as an inline ``<svg>`` string, or None if no row has a figure."""
    groups = [(label, rows.get(metric, {})) for label, metric in chart.groups]
    shown = [c for c in CANDIDATES if any(row.get(c[0]) is not None for _, row in groups)]
    values = [row.get(key) for _, row in groups for key, _, _ in shown if row.get(key) is not None]
    if not values:
        return None

    width, height = 640, 300
    left, right, top, bottom = 78, 16, 40, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    # headroom above the tallest bar for its value label
    y_max, y_step = y_axis(max(values) * 1.1)

    def y(value):
        return top + plot_h - plot_h * value / y_max

    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'class="benchmark-chart" style="width: 100%; max-width: {width}px; height: auto" '
        f'font-family="sans-serif" font-size="12" fill="currentColor">',
        f"<title>{e(chart.title)} ({chart.better} is better)</title>",
    ]
    # legend, top right
    x = width - right
    for key, legend, colour in reversed(shown):
        text_w = 7 * len(legend) + 6
        x -= text_w
        out.append(f'<text x="{x + 4}" y="16">{e(legend)}</text>')
        x -= 12
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{colour}"/>')
        x -= 14
    out.append(f'<text x="{left}" y="16" font-style="italic">{e(chart.better)} is better</text>')
    # y axis: ticks with grid lines
    tick_count = round(y_max / y_step)
    for i in range(tick_count + 1):
        value = y_step * i
        ty = y(value)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" '
            f'stroke="currentColor" stroke-opacity="{0.6 if i == 0 else 0.15}"/>'
        )
        out.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick_label(value)}</text>')
    mid_y = top + plot_h / 2
    out.append(
        f'<text x="14" y="{mid_y:.1f}" text-anchor="middle" transform="rotate(-90 14 {mid_y:.1f})">'
        f"{e(chart.axis)}</text>"
    )
    # bars
    group_w = plot_w / len(groups)
    bar_w = min(64.0, group_w * 0.8 / len(shown))
    for g, (label, row) in enumerate(groups):
        first_x = left + group_w * g + (group_w - bar_w * len(shown)) / 2
        for b, (key, legend, colour) in enumerate(shown):
            bx = first_x + bar_w * b
            cx = bx + bar_w / 2
            value = row.get(key)
            if value is None:
                out.append(
                    f'<text x="{cx:.1f}" y="{top + plot_h - 4}" text-anchor="middle" font-size="11">n/a</text>'
                )
                continue
            by = y(value)
            out.append(
                f'<rect x="{bx + 1:.1f}" y="{by:.1f}" width="{bar_w - 2:.1f}" height="{top + plot_h - by:.1f}" '
                f'fill="{colour}"><title>{e(legend)}: {format_figure(value)}</title></rect>'
            )
            out.append(f'<text x="{cx:.1f}" y="{by - 4:.1f}" text-anchor="middle" font-size="11">{format_figure(value)}</text>')
        gx = left + group_w * (g + 0.5)
        out.append(f'<text x="{gx:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{e(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# --- docutils helpers -------------------------------------------------------


def no_data_admonition(path):
    path = f"docs/{path}"
    admonition = nodes.admonition(classes=["warning"])
    admonition += nodes.title("", "No benchmark data")
    admonition += docnodes.paragraph(
        "There is no benchmark run in ",
        nodes.literal(path, path),
        " yet. Run ",
        nodes.literal("", "python tests/benchmarks/bench_http.py"),
        " (after ",
        nodes.literal("", "tests/benchmarks/setup.sh"),
        ") and copy ",
        nodes.literal("", "tests/benchmarks/results/latest.json"),
        " there.",
    )
    return admonition


def _date(iso):
    try:
        return datetime.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return str(iso)


def metadata_fields(meta):
    """The run's metadata as a field list (what is present of it)."""
    args = meta.get("args") or {}
    fields = nodes.field_list(classes=["benchmark-run"])
    if meta.get("started"):
        fields += docnodes.field("Run started", _date(meta["started"]))
    if meta.get("machine"):
        cores = f", {meta['cpus']} CPU cores" if meta.get("cpus") else ""
        fields += docnodes.field("Machine", f"{meta['machine']}{cores}")
    versions = [f"{name} {meta[key]}" for key, name in (("python", "Python"), ("node", "node")) if meta.get(key)]
    if meta.get("wrk"):
        # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer": up to the bracket
        versions.append(meta["wrk"].split(" [")[0])
    if versions:
        fields += docnodes.field("Software", "; ".join(versions))
    if args:
        parts = []
        if "seconds" in args:
            parts.append(f"{args['seconds']} s per load run")
        if "reps" in args:
            parts.append(f"{args['reps']} repetitions, candidates in rotating order")
        if "warmup" in args:
            parts.append(f"{args['warmup']} s warm-up per test and proxy")
        if parts:
            fields += docnodes.field("Load runs", "; ".join(parts))
        if args.get("no_hub"):
            fields += docnodes.field("Hub test", "not run")
        elif "hub_seconds" in args:
            fields += docnodes.field("Hub test", f"{args['hub_seconds']} s probes of GET /hub/api/")
    if meta.get("loadavg_at_start"):
        fields += docnodes.field("Load average at start", ", ".join(f"{v:.2f}" for v in meta["loadavg_at_start"]))
    if meta.get("wall_seconds") is not None:
        fields += docnodes.field("Whole run took", f"{meta['wall_seconds']:.0f} s")
    return fields


def short_run_caution(meta):
    """A caution when the run was shorter than the benchmark's defaults, else None."""
    args = meta.get("args") or {}
    seconds, reps = args.get("seconds"), args.get("reps")
    if seconds is None or reps is None or (seconds >= DEFAULT_SECONDS and reps >= DEFAULT_REPS):
        return None
    caution = nodes.caution()
    caution += docnodes.paragraph(
        f"This run used {seconds} s per load run and {reps} repetition{'s' if reps != 1 else ''}, "
        f"shorter than the benchmark's defaults ({DEFAULT_SECONDS} s, {DEFAULT_REPS} repetitions): "
        "its figures are indicative only. Ratios measured in the same repetition are the steadier numbers."
    )
    return caution


# --- directives -------------------------------------------------------------


class _BenchmarkDirective(SphinxDirective):
    optional_arguments = 1

    def data_path(self):
        """(path as written, absolute path), noted as a dependency of this page."""
        relative = self.arguments[0] if self.arguments else self.config.benchmark_data
        absolute = os.path.join(self.env.srcdir, relative)
        self.env.note_dependency(absolute)
        return relative, absolute

    def read(self):
        relative, absolute = self.data_path()
        try:
            return relative, load(absolute)
        except (OSError, ValueError) as e:
            raise self.error(f"cannot read benchmark data {relative}: {e}") from e


class BenchmarkCharts(_BenchmarkDirective):
    """Metadata, charts, goals table and problems of one run; see the module docstring."""

    def run(self):
        relative, data = self.read()
        if data is None:
            return [no_data_admonition(relative)]
        meta = data.get("meta") or {}
        rows = rows_by_metric(data)
        result = [metadata_fields(meta)]
        caution = short_run_caution(meta)
        if caution is not None:
            result.append(caution)

        for chart in CHARTS:
            result.append(nodes.rubric("", chart.title))
            svg = bar_chart_svg(chart, rows)
            if svg is None:
                result.append(docnodes.paragraph("Not measured in this run."))
            else:
                result.append(nodes.raw("", svg, format="html"))

        result.append(nodes.rubric("", "All figures, paired ratios and goals"))
        # columns no row has are left out: a run from before the relay existed has no relay figures
        columns = [c for c in FIGURE_COLUMNS if any(c[1] in row for row in data["table"])]
        header = ("metric", *(title for title, _, _ in columns), "goal", "result")
        table_rows = [
            (
                row.get("metric", ""),
                *(format_value(row.get(key)) for _, key, format_value in columns),
                row.get("goal", ""),
                row.get("result", ""),
            )
            for row in data["table"]
        ]
        result.append(docnodes.table(header, table_rows, classes=["benchmark-table"]))

        problems = data.get("problems") or []
        result.append(nodes.rubric("", "Problems the benchmark reported"))
        if problems:
            items = nodes.bullet_list()
            for problem in problems:
                item = nodes.list_item()
                item += docnodes.paragraph(nodes.literal(problem, problem))
                items += item
            result.append(items)
        else:
            result.append(
                docnodes.paragraph("None: no failed runs, non-2xx/3xx responses, socket errors or logged warnings.")
            )
        return result


def _positive_float(argument):
    value = float(directives.unchanged_required(argument))
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


class BenchmarkSizing(_BenchmarkDirective):
    """How many requests and busy users one core serves, from a CPU-per-request row."""

    option_spec = {
        "metric": directives.unchanged_required,
        "requests-per-user": _positive_float,
        "core-share": _positive_float,
    }

    def run(self):
        relative, data = self.read()
        metric = self.options.get("metric", "proxy CPU us/req c=1")
        per_user = self.options.get("requests-per-user", 1.0)
        share = self.options.get("core-share", 0.5)
        row = rows_by_metric(data).get(metric) if data else None
        cpu_us = row.get("inprocess") if row else None
        if cpu_us is None:
            return [
                docnodes.paragraph(
                    "The benchmark data here has no inprocess figure for this row. The method: take the"
                    " inprocess value of ",
                    nodes.literal(metric, metric),
                    " from a benchmark run (N µs); one core then forwards about 1,000,000 ÷ N requests/s. "
                    f"Keep {share:.0%} of it for the proxy and divide by the requests per second of one "
                    f"busy user (R = {per_user:g} here) to get the users one Hub core carries.",
                )
            ]
        meta = data.get("meta") or {}
        per_core = 1e6 / cpu_us
        budget = per_core * share
        users = budget / per_user
        run = f"The benchmark run of {_date(meta['started'])}" if meta.get("started") else "The benchmark"
        users_unit = "request/s" if per_user == 1 else "requests/s"
        per_core_s, budget_s = fmt_estimate(per_core), fmt_estimate(budget)
        lines = [
            f"1,000,000 µs/s ÷ {format_figure(cpu_us)} µs per request  ≈ {per_core_s} requests/s on one core",
            f"{per_core_s} requests/s × {share:g} of that core  ≈ {budget_s} requests/s for the proxy",
            f"{budget_s} requests/s ÷ {per_user:g} {users_unit} per busy user  ≈ {fmt_estimate(users)} busy users",
        ]
        return [
            docnodes.paragraph(
                f"{run} measured {format_figure(cpu_us)} µs of the proxy's CPU per small proxied request (its row ",
                nodes.literal(metric, metric),
                "). So:",
            ),
            nodes.literal_block("", "\n".join(lines), language="text"),
        ]


def benchmark_value_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{benchmark-value}`metric label|column``: one figure of the table, as the table prints it.

    The column is ``inprocess`` unless given (``direct``, ``chp``, ``relay``,
    ``inprocess/chp``, ``inprocess/direct``, ``relay/chp``). Without benchmark
    data, or without that row in it (a run of some tests only), the figure
    reads ``n/a``.
    """
    env = inliner.document.settings.env
    metric, _, column = text.partition("|")
    metric, column = metric.strip(), column.strip() or "inprocess"
    path = os.path.join(env.srcdir, env.config.benchmark_data)
    env.note_dependency(path)
    try:
        data = load(path)
    except (OSError, ValueError) as e:
        message = inliner.reporter.error(f"cannot read benchmark data: {e}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, message)], [message]
    row = rows_by_metric(data).get(metric) if data else None
    if row is None:
        # no run yet, or a run without this test (--tests): the figure reads n/a
        return [nodes.Text("n/a")], []
    value = row.get(column)
    return [nodes.Text(format_ratio(value) if "/" in column else format_figure(value))], []


def setup(app):
    app.add_config_value("benchmark_data", "_data/benchmark.json", "env")
    app.add_directive("benchmark-charts", BenchmarkCharts)
    app.add_directive("benchmark-sizing", BenchmarkSizing)
    app.add_role("benchmark-value", benchmark_value_role)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
