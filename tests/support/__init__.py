"""Support code shared by the tests and the benchmarks: one copy of each.

- ``ports``: free ports on 127.0.0.1, and whether something answers on one.
- ``procfs``: readings from ``/proc`` (RSS, peak RSS, open fds, CPU time,
  parents, start times, environments).
- ``processes``: child processes in sessions of their own, and killing every
  process a child started, even those that left its process group.
- ``tls``: a test CA and server certificates for 127.0.0.1, and SSL contexts.
- ``hub``: one JupyterHub process from a generated config on free ports.
- ``modules``: loading a module from its file path.
- ``debian``: Debian programs the tests run, installed with apt-get when
  missing (as root).
- ``redisserver``: a redis-server on a free port, stopped, restarted, killed.
- ``threadserver``: an ``http.server`` server in a thread, for blocking clients.

Nothing here imports ``inprocess_proxy``. Linux only (``/proc``, ``prctl``).

How it is imported: as the top-level package ``support``, like the other test
helpers (``backends``, ``attack_helpers``). Tests run with ``tests/`` on
``sys.path`` (pytest inserts the directory of the rootdir-level
``tests/conftest.py``, as ``tests/`` is no package). The benchmarks are
scripts run from ``tests/benchmarks/``, where Python puts only that directory
on ``sys.path``: each benchmark module that uses ``support`` first imports
``tests/benchmarks/_tests_on_path.py``, the one place that adds ``tests/``.
That keeps one copy without making the test tree an installed package or the
benchmarks depend on how pytest was started.
"""
