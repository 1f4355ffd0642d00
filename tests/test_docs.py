"""The documentation: it builds without warnings, documents every option, and its config resolves.

The build runs Sphinx in a child process, as a reader would
(``python -m sphinx -W --keep-going -b html docs <out>``), so a broken page,
a failing local extension (``docs/_ext``) or a dangling link fails the run.
"""

import ast
import os
import re
import subprocess
import sys

import pytest
from docutils.nodes import make_id
from jupyterhub.app import JupyterHub
from jupyterhub.proxy import Proxy

from inprocess_proxy import InProcessProxy
from support.modules import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: seconds the whole build may take (about 10 s on a 2-core machine)
BUILD_TIMEOUT = 300

#: proxy classes docs/operations.md must show, so that its "Moving on" stays tested
EXPECTED_PROXY_CLASSES = {"inprocess", "configurable-http-proxy", "traefik_file"}


@pytest.fixture(scope="module")
def built_html(tmp_path_factory):
    """Build the HTML docs once; returns the output directory."""
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q", DOCS, str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, f"sphinx failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return out


def test_docs_build_without_warnings(built_html):
    for page in ("index", "install", "configuration", "operations", "standalone", "performance", "replicas", "design"):
        assert (built_html / f"{page}.html").exists(), page


def test_configuration_reference_lists_every_option(built_html):
    html = (built_html / "configuration.html").read_text(encoding="utf-8")
    config_traits = sorted(InProcessProxy.class_own_traits(config=True))
    assert config_traits, "InProcessProxy has no config traits?"
    missing = [name for name in config_traits if f'id="{make_id("InProcessProxy." + name)}"' not in html]
    assert not missing, f"options missing from docs/configuration.md's reference: {missing}"


def documented_proxy_classes(path):
    """The values of ``c.JupyterHub.proxy_class = ...`` in the python code blocks of a MyST page."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    values = []
    for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        for node in ast.walk(ast.parse(block)):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and ast.unparse(node.targets[0]) == "c.JupyterHub.proxy_class"
            ):
                values.append(ast.literal_eval(node.value))
    return values


def test_documented_proxy_classes_resolve():
    values = documented_proxy_classes(os.path.join(DOCS, "operations.md"))
    assert EXPECTED_PROXY_CLASSES <= set(values), values
    for value in values:
        proxy_class = JupyterHub(proxy_class=value).proxy_class
        assert isinstance(proxy_class, type) and issubclass(proxy_class, Proxy), (value, proxy_class)
    assert JupyterHub(proxy_class="inprocess").proxy_class is InProcessProxy


def test_benchmark_rows_named_in_docs_exist(monkeypatch):
    """Every benchmark row the docs chart or quote is one the benchmark writes.

    The charts read rows by label and show "n/a" for a missing one (a run of some
    tests only is fine), so a renamed row would otherwise go unnoticed.
    """
    # each imports its sibling modules, as the docs build and the benchmark scripts do
    monkeypatch.syspath_prepend(os.path.join(DOCS, "_ext"))
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tests", "benchmarks"))
    report = load_module("bench_report", os.path.join(ROOT, "tests", "benchmarks", "_report.py"))
    charts = load_module("benchmark_charts", os.path.join(DOCS, "_ext", "benchmark_charts.py"))
    known = {metric.label for metric in report.METRICS}
    used = {label for chart in charts.CHARTS for _, label in chart.groups}
    for page in ("operations.md", "performance.md"):
        with open(os.path.join(DOCS, page), encoding="utf-8") as f:
            text = f.read()
        used.update(re.findall(r"^:metric:\s*(.+?)\s*$", text, flags=re.M))
        used.update(label.partition("|")[0].strip() for label in re.findall(r"\{benchmark-value\}`([^`]+)`", text))
    assert used - known == set(), f"rows the benchmark does not write: {sorted(used - known)}"


def test_standalone_page_lists_every_flag(built_html):
    from inprocess_proxy.standalone.cli import build_parser

    html = (built_html / "standalone.html").read_text(encoding="utf-8")
    flags = [flag for action in build_parser()._actions for flag in action.option_strings]
    # each flag opens a literal of its own in the generated tables
    listed = set(re.findall(r'<span class="pre">(--?[\w-]+)</span>', html))
    missing = [flag for flag in flags if flag not in listed and flag not in ("-h", "--help", "-V", "--version")]
    assert not missing, f"flags missing from docs/standalone.md's reference: {missing}"
