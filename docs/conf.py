"""Sphinx configuration for the inprocess-proxy documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``tests/test_docs.py`` runs the same build in the test suite).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# the local extensions; the package itself is imported from the environment,
# as it is installed there for the tests (pip install -e '.[test]')
sys.path.insert(0, os.path.join(HERE, "_ext"))

from inprocess_proxy import __version__  # noqa: E402

project = "inprocess-proxy"
author = "inprocess-proxy developers"
copyright = "inprocess-proxy developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "traits_reference",
    "cli_reference",
    "metrics_reference",
    "benchmark_charts",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_data", "_ext", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
# anchors for ## and ### headings, so pages can link to sections of others
myst_heading_anchors = 3

nitpicky = False

html_theme = "pydata_sphinx_theme"
html_title = "inprocess-proxy"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False
# the pages are few and all in the top navigation bar: no left sidebar
html_sidebars = {"**": []}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
