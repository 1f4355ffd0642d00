"""How benchmark figures are printed, shared by the benchmark and the docs' benchmark pages.

``tests/benchmarks/_report.py`` prints its table with these, and
``benchmark_charts.py`` shows the committed run with them, so a page shows
every figure as the benchmark printed it. The module lives here rather than
with the benchmark so that the docs build needs nothing from the test tree;
``_report.py`` loads it by its path. Standard library only.
"""


def format_figure(value):
    """A median as the table prints it."""
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
