"""tests/support's process clean-up, on real processes: what the Hub tests and the benchmarks rely on.

Each test starts a small Python child that starts a ``sleep`` in a session of
its own (as JupyterHub starts CHP and single-user servers), so that killing
the child's process group cannot reach it, and checks that ``ChildProcess``
ends it anyway.
"""

import secrets
import sys

import pytest

from support.procfs import is_running, start_time
from support.processes import ChildProcess, StartupError, wait_until

#: seconds any wait on the children may take
WAIT = 10

#: starts `sleep` in a new session, prints its pid; then lives on or exits (argv[1])
SPAWN_DETACHED_SLEEP = """
import subprocess, sys, time
sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
print(sleeper.pid, flush=True)
if sys.argv[1] == "live":
    time.sleep(300)
"""


def _start(tmp_path, mode, **kwargs):
    child = ChildProcess(
        [sys.executable, "-c", SPAWN_DETACHED_SLEEP, mode], name="spawner", log_path=tmp_path / "child.log", **kwargs
    )
    try:
        text = wait_until(
            lambda: (tmp_path / "child.log").read_text().strip(),
            timeout=WAIT,
            what="the sleeper's pid",
            # a child that exits by design may be gone before its pid is read
            process=child if mode == "live" else None,
        )
    except BaseException:
        child.stop(grace=0)
        raise
    pid = int(text)
    return child, pid, start_time(pid)


def _wait_gone(pid, started):
    wait_until(lambda: not is_running(pid, started), timeout=WAIT, what=f"process {pid} gone")


def test_stop_kills_a_descendant_in_another_session(tmp_path):
    child, pid, started = _start(tmp_path, "live")
    try:
        killed = child.stop(grace=WAIT)
        assert child.returncode is not None
        assert pid in killed
        _wait_gone(pid, started)
    finally:
        child.kill()


def test_kill_finds_an_orphan_by_its_marker(tmp_path):
    child, pid, started = _start(tmp_path, "exit", marker=secrets.token_hex(8))
    try:
        # the child has exited: the sleeper is an orphan, no longer below it
        assert child.popen.wait(WAIT) == 0
        assert is_running(pid, started)
        killed = child.kill()
        assert killed == [pid]
        _wait_gone(pid, started)
    finally:
        child.kill()


def test_wait_until_reports_a_child_that_exits(tmp_path):
    child = ChildProcess(
        [sys.executable, "-c", "import sys; print('cannot start'); sys.exit(3)"],
        name="failing",
        log_path=tmp_path / "failing.log",
    )
    try:
        with pytest.raises(StartupError, match=r"(?s)failing exited with code 3.*cannot start"):
            wait_until(lambda: False, timeout=WAIT, what="never", process=child)
    finally:
        child.stop(grace=WAIT)
