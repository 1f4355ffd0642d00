"""Sphinx directive ``traits-reference``: the configuration reference, generated from a class's traits.

In a MyST page::

    ```{traits-reference} inprocess_proxy.proxy.InProcessProxy
    :octal: unix_socket_mode
    ```

imports the class and renders, in definition order, every ``config=True``
trait defined on the class itself: a section titled with the option's name
(so it gets an anchor, ``inprocessproxy-<name>`` with dashes, and a ``{ref}``
label ``InProcessProxy.<name>``), its type and default, a ``c.Class.name =
default`` line to copy into ``jupyterhub_config.py``, and the help text as
written (an option without help is a build warning). Then one paragraph
names the config traits the class inherits.

Help text is plain text with ``code`` spans in single or double backquotes, as
``jupyterhub --generate-config`` prints it. It is rendered literally: blank
lines separate paragraphs, backquoted spans become inline code, and the name
of another option of the class links to its section; nothing else is
interpreted, so no help text can break the build or inject markup.

Options:
    octal: trait names whose integer default is shown in octal (file modes).
"""

import inspect
import re

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import docnodes

logger = logging.getLogger(__name__)

#: `code` or ``code`` spans in help text
_CODE_SPAN = re.compile(r"``(.+?)``|`([^`]+?)`")

#: where the inherited options are documented
JUPYTERHUB_PROXY_API_URL = "https://jupyterhub.readthedocs.io/en/stable/reference/api/proxy.html"


def own_config_traits(cls):
    """``[(name, trait)]`` of the config traits defined on ``cls`` itself, in definition order."""
    config_traits = cls.class_traits(config=True)
    return [(name, config_traits[name]) for name in vars(cls) if name in config_traits]


def inherited_config_traits(cls):
    """``[(name, defining class)]`` of the config traits ``cls`` inherits, sorted by name."""
    own = set(vars(cls))
    inherited = []
    for name in sorted(cls.class_traits(config=True)):
        if name in own:
            continue
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        inherited.append((name, owner))
    return inherited


def default_repr(trait, octal=False):
    """The default as it would be written in a config file."""
    if octal:
        value = trait.default_value
        if isinstance(value, int) and not isinstance(value, bool):
            return oct(value)
    return trait.default_value_repr()


def _text_with_links(text, link_ids):
    """Text nodes, with whole-word mentions of a name in ``link_ids`` made internal links."""
    if not link_ids:
        return [nodes.Text(text)]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(link_ids, key=len, reverse=True))) + r")\b")
    result = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            result.append(nodes.Text(text[position : match.start()]))
        name = match.group(1)
        reference = nodes.reference("", "", internal=True, refid=link_ids[name])
        reference += nodes.Text(name)
        result.append(reference)
        position = match.end()
    if position < len(text):
        result.append(nodes.Text(text[position:]))
    return result


def help_paragraphs(text, link_ids=None):
    """Help text -> paragraph nodes: blank lines split paragraphs, backquotes make code.

    ``link_ids`` maps names (the other options) to the ids of their sections:
    where the plain text mentions one, it links there.
    """
    text = inspect.cleandoc(text or "")
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(line.strip() for line in block.splitlines()).strip()
        if not block:
            continue
        paragraph = nodes.paragraph()
        position = 0
        for match in _CODE_SPAN.finditer(block):
            if match.start() > position:
                paragraph.extend(_text_with_links(block[position : match.start()], link_ids))
            code = match.group(1) if match.group(1) is not None else match.group(2)
            paragraph += nodes.literal(code, code)
            position = match.end()
        if position < len(block):
            paragraph.extend(_text_with_links(block[position:], link_ids))
        paragraphs.append(paragraph)
    return paragraphs


class TraitsReference(SphinxDirective):
    """Render the config traits of one class; see the module docstring."""

    required_arguments = 1
    has_content = False
    option_spec = {"octal": directives.unchanged}

    def run(self):
        cls = docnodes.import_argument(self)
        octal = set(self.options.get("octal", "").replace(",", " ").split())
        traits = own_config_traits(cls)
        unknown = octal - {name for name, _ in traits}
        if unknown:
            raise self.error(f"traits-reference: :octal: names unknown traits: {', '.join(sorted(unknown))}")
        class_name = cls.__name__
        section_ids = {name: nodes.make_id(f"{class_name}.{name}") for name, _ in traits}
        result = [
            self._trait_section(class_name, name, trait, name in octal, section_ids) for name, trait in traits
        ]
        inherited = inherited_config_traits(cls)
        if inherited:
            result.append(self._inherited_paragraph(class_name, inherited))
        return result

    def _trait_section(self, class_name, name, trait, octal, section_ids):
        qualified = f"{class_name}.{name}"
        section = nodes.section()
        section["ids"].append(section_ids[name])
        section["names"].append(nodes.fully_normalize_name(qualified))
        # an explicit target, so {ref}`InProcessProxy.name` finds this section
        self.state.document.note_explicit_target(section, section)
        section += nodes.title(name, "", nodes.literal(name, name))

        default = default_repr(trait, octal)
        fields = nodes.field_list()
        fields += docnodes.field("Type", nodes.literal(type(trait).__name__, type(trait).__name__))
        fields += docnodes.field("Default", nodes.literal(default, default))
        section += fields

        line = f"c.{class_name}.{name} = {default}"
        section += nodes.literal_block(line, line, language="python")
        others = {other: section_id for other, section_id in section_ids.items() if other != name}
        paragraphs = help_paragraphs(trait.help, others)
        if not paragraphs:
            # a warning fails the -W build: every option must say what it does
            logger.warning("traits-reference: %s has no help text", qualified, location=self.get_location())
        section.extend(paragraphs)
        return section

    def _inherited_paragraph(self, class_name, inherited):
        paragraph = nodes.paragraph()
        paragraph += nodes.Text(f"{class_name} also takes the options it inherits: ")
        for index, (name, owner) in enumerate(inherited):
            if index:
                paragraph += nodes.Text(", ")
            paragraph += nodes.literal(f"{owner.__name__}.{name}", f"{owner.__name__}.{name}")
        paragraph += nodes.Text(", documented in ")
        reference = nodes.reference("", "", refuri=JUPYTERHUB_PROXY_API_URL)
        reference += nodes.Text("JupyterHub's proxy API reference")
        paragraph += reference
        paragraph += nodes.Text(".")
        return paragraph


def setup(app):
    app.add_directive("traits-reference", TraitsReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
