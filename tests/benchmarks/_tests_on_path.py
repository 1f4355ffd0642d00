"""Imported for its effect: ``tests/`` on ``sys.path``, so benchmark scripts import ``support``.

The benchmarks run as scripts from this directory (``python
tests/benchmarks/bench_http.py``), where Python puts only this directory on
``sys.path``. The support code they share with the tests (``tests/support``)
and the test helpers ``soak.py`` uses (``attack_helpers``, ``ws_backends``)
live one level up; every benchmark module that imports them imports this
first (``import _tests_on_path  # noqa: F401``).
"""

import os
import sys

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(1, TESTS_DIR)
