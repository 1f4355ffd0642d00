"""Docutils node builders and the dotted-path import shared by the local Sphinx extensions.

``traits_reference``, ``metrics_reference`` and ``benchmark_charts`` each
render field lists and tables; these build them one way. Wherever a builder
takes ``children``, a string becomes a text node and a node is used as is.
"""

import importlib

from docutils import nodes


def import_object(dotted):
    """``package.module.Name`` -> the object.

    Raises:
        ImportError, AttributeError: the module or the name is missing.
        ValueError: ``dotted`` has no module part.
    """
    module_name, _, attribute = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"{dotted!r} is not a dotted path module.Name")
    return getattr(importlib.import_module(module_name), attribute)


def import_argument(directive):
    """The object a directive's first argument names (``module.Name``).

    Raises:
        The directive's error (the build fails, naming the directive) if it cannot be imported.
    """
    dotted = directive.arguments[0]
    try:
        return import_object(dotted)
    except (ImportError, AttributeError, ValueError) as e:
        raise directive.error(f"{directive.name}: cannot import {dotted}: {e}") from e


def paragraph(*children):
    """A paragraph of ``children``."""
    result = nodes.paragraph()
    for child in children:
        result += child if isinstance(child, nodes.Node) else nodes.Text(child)
    return result


def field(name, *children):
    """A field (for a ``nodes.field_list``): ``name``, then a paragraph of ``children``."""
    result = nodes.field()
    result += nodes.field_name(name, name)
    body = nodes.field_body()
    body += paragraph(*children)
    result += body
    return result


def table(header, rows, *, widths=None, classes=(), row_ids=None):
    """A table: a head row of titles, then a row per entry of ``rows``.

    Args:
        header: the column titles.
        rows: each a sequence of cells; a cell is one child, or a tuple of
            children of the cell's paragraph.
        widths: relative column widths (default: all equal).
        classes: classes of the table node.
        row_ids: an id per row (None: no ids).
    """
    result = nodes.table(classes=list(classes))
    group = nodes.tgroup(cols=len(header))
    result += group
    for width in widths or [10] * len(header):
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    head += _row(header)
    group += head
    body = nodes.tbody()
    for index, cells in enumerate(rows):
        body += _row(cells, ids=[row_ids[index]] if row_ids else [])
    group += body
    return result


def _row(cells, ids=()):
    row = nodes.row(ids=list(ids))
    for cell in cells:
        entry = nodes.entry()
        entry += paragraph(*cell) if isinstance(cell, tuple) else paragraph(cell)
        row += entry
    return row
