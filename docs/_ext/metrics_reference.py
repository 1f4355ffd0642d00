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

import importlib

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

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


def _cell(*children):
    entry = nodes.entry()
    paragraph = nodes.paragraph()
    for child in children:
        paragraph += child
    entry += paragraph
    return entry


def _labels_cell(labels):
    children = []
    for index, (label, values) in enumerate(labels.items()):
        if index:
            children.append(nodes.Text("; "))
        children.append(nodes.literal(label, label))
        children.append(nodes.Text(": " + ", ".join(values)))
    if not children:
        children.append(nodes.Text("none"))
    return _cell(*children)


class MetricsReference(SphinxDirective):
    """Render the metrics a collector class exports; see the module docstring."""

    required_arguments = 1
    option_spec = {"prefix": directives.unchanged_required}

    def run(self):
        dotted = self.arguments[0]
        module_name, _, attribute = dotted.rpartition(".")
        try:
            collector_cls = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as e:
            raise self.error(f"metrics-reference: cannot import {dotted}: {e}") from e
        prefix = self.options.get("prefix", "jupyterhub")

        table = nodes.table(classes=["metrics-reference"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (30, 10, 30, 30):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        row = nodes.row()
        for title in ("metric", "type", "labels: values", "help"):
            row += _cell(nodes.Text(title))
        head += row
        group += head
        body = nodes.tbody()
        for name, kind, labels, help_text in collect_families(collector_cls, prefix):
            row = nodes.row(ids=[nodes.make_id(name)])
            row += _cell(nodes.literal(name, name))
            row += _cell(nodes.Text(kind))
            row += _labels_cell(labels)
            row += _cell(nodes.Text(help_text))
            body += row
        group += body
        return [table]


def setup(app):
    app.add_directive("metrics-reference", MetricsReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
