"""Sphinx directive ``cli-reference``: the command's flags, generated from its argparse parser.

In a MyST page::

    ```{cli-reference} inprocess_proxy.standalone.cli.build_parser
    ```

calls the function and renders one table per argument group of the parser
(in ``--help``'s order): each flag with its argument and its help text, as
``inprocess-proxy --help`` prints them. The group of configurable-http-proxy
flags the command refuses is rendered like the others, so the page lists
every CHP flag and says which ones exit with an error. A flag without help is
a build warning.
"""

import argparse
import re

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from docnodes import import_object
from traits_reference import help_paragraphs

logger = logging.getLogger(__name__)


#: a flag named in help text, not already in backquotes
_FLAG_IN_TEXT = re.compile(r"(?<![\w`-])(--[a-z][\w-]*)")


def help_with_flags_as_code(text):
    """Help text with each ``--flag`` it names in backquotes, so it renders as code
    (and Sphinx's smart quotes leave its dashes alone)."""
    return _FLAG_IN_TEXT.sub(r"``\1``", text)


def flag_text(action):
    """``--port <n>``, ``-V, --version``: the flag(s) and their argument, as --help shows them."""
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    return f"{names} {metavar}"


def documented_groups(parser):
    """``[(title, [action])]`` of the parser's groups that hold flags (help and version left out)."""
    groups = []
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ]
        if actions:
            groups.append((group.title, actions))
    return groups


class CliReference(SphinxDirective):
    """Render the flags of one argparse parser; see the module docstring."""

    required_arguments = 1
    has_content = False

    def run(self):
        dotted = self.arguments[0]
        try:
            parser = import_object(dotted)()
        except (ImportError, AttributeError, ValueError, TypeError) as e:
            raise self.error(f"cli-reference: cannot build the parser from {dotted}: {e}") from e
        result = []
        for title, actions in documented_groups(parser):
            section = nodes.section()
            section["ids"].append(nodes.make_id(f"flags-{title}"))
            section += nodes.title(title, title)
            section += self._table(actions)
            result.append(section)
        return result

    def _table(self, actions):
        table = nodes.table()
        group = nodes.tgroup(cols=2)
        table += group
        group += nodes.colspec(colwidth=35)
        group += nodes.colspec(colwidth=65)
        head = nodes.thead()
        group += head
        head += self._row(nodes.paragraph("", "Flag"), nodes.paragraph("", "What it does"))
        body = nodes.tbody()
        group += body
        for action in actions:
            text = flag_text(action)
            paragraphs = help_paragraphs(help_with_flags_as_code(action.help or ""))
            if not paragraphs:
                logger.warning("cli-reference: %s has no help text", text, location=self.get_location())
            body += self._row(nodes.paragraph("", "", nodes.literal(text, text)), *paragraphs)
        return table

    @staticmethod
    def _row(first, *rest):
        row = nodes.row()
        entry = nodes.entry()
        entry += first
        row += entry
        entry = nodes.entry()
        entry.extend(rest)
        row += entry
        return row


def setup(app):
    app.add_directive("cli-reference", CliReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
