"""Sphinx directive ``metrics-reference``: the Prometheus metrics, generated from the collector.

In a MyST page::

    ```{metrics-reference} inprocess_proxy.metrics.ProxyCollector
    :prefix: jupyterhub
    ```

instantiates the collector with the given prefix (JupyterHub's default
``metrics_prefix``), collects once with no proxy registered, and renders a
table of every metric family: the name as scraped (``_total`` for counters;
histograms add ``_bucket``, ``_sum`` and ``_count``), its type, its labels
with the values they take, and its help. The collector adds every label value
up front, so an idle collect shows them all.
"""

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

import docnodes

#: the suffix a scrape shows after a family's name, by type
_SAMPLE_SUFFIX = {"counter": "_total"}


def collect_families(collector_cls, prefix):
    """``[(name as scraped, type, {label: [values]}, help)]`` in the collector's order."""
    families = []
    for family in collector_cls(prefix).collect():
        labels = {}
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "le":  # histogram buckets, not a label of the metric
                    continue
                values = labels.setdefault(label, [])
                if value not in values:
                    values.append(value)
        name = family.name + _SAMPLE_SUFFIX.get(family.type, "")
        families.append((name, family.type, labels, family.documentation))
    return families


def _labels_cell(labels):
    """The children of a labels cell: ``label``: values; ... (or none)."""
    children = []
    for index, (label, values) in enumerate(labels.items()):
        if index:
            children.append("; ")
        children.append(nodes.literal(label, label))
        children.append(": " + ", ".join(values))
    return tuple(children) or ("none",)


class MetricsReference(SphinxDirective):
    """Render the metrics a collector class exports; see the module docstring."""

    required_arguments = 1
    option_spec = {"prefix": directives.unchanged_required}

    def run(self):
        collector_cls = docnodes.import_argument(self)
        prefix = self.options.get("prefix", "jupyterhub")
        families = collect_families(collector_cls, prefix)
        table = docnodes.table(
            ("metric", "type", "labels: values", "help"),
            [
                (nodes.literal(name, name), kind, _labels_cell(labels), help_text)
                for name, kind, labels, help_text in families
            ],
            widths=(30, 10, 30, 30),
            classes=["metrics-reference"],
            row_ids=[nodes.make_id(name) for name, *_ in families],
        )
        return [table]


def setup(app):
    app.add_directive("metrics-reference", MetricsReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
