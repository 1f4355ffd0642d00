"""The benchmark's child processes: every one is stopped, on success, errors, Ctrl-C and SIGTERM.

Every process the benchmark starts goes through ``ChildProcesses``, which
starts it as a ``support.processes.ChildProcess`` (its own session, killed by
the kernel if the benchmark dies, output to ``<log_dir>/<name>.log``) and on
exit stops it with its group and any descendants that left the group
(JupyterHub starts CHP in a new session). The benchmark is made a child
subreaper, so even the CHP of a Hub that crashed is still found and killed.
"""

import contextlib
import os
import signal

import _tests_on_path  # noqa: F401
from support.procfs import descendants
from support.processes import ChildProcess, prctl, signal_process

# From <sys/prctl.h>.
PR_SET_CHILD_SUBREAPER = 36
# Seconds a process gets between SIGTERM and SIGKILL: JupyterHub needs a moment
# to stop its proxy and close its database.
STOP_GRACE_SECONDS = 5.0


def _kill_orphans():
    """SIGKILL and reap whatever descendants are left, e.g. the CHP of a Hub that crashed.

    Needs PR_SET_CHILD_SUBREAPER: without it, a process whose parent died is
    adopted by init and is no longer ours to find.
    """
    for pid in descendants(os.getpid()):
        signal_process(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG) != (0, 0):
            pass


class ChildProcesses:
    """The processes one benchmark run started; ``stop_all()`` ends every one of them."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._running = []
        # Orphans of our children (JupyterHub's CHP when the Hub dies) become our
        # children instead of init's, so stop_all() can still find them.
        prctl(PR_SET_CHILD_SUBREAPER, 1)

    def start(self, name, argv, *, cwd=None, env=None):
        """Start argv in its own process group, stdout and stderr to ``<log_dir>/<name>.log``."""
        proc = ChildProcess(argv, name=name, log_path=os.path.join(self.log_dir, f"{name}.log"), cwd=cwd, env=env)
        self._running.append(proc)
        return proc

    def stop(self, proc):
        """SIGTERM the process group, SIGKILL it after a grace period, and its stray descendants."""
        if proc in self._running:
            self._running.remove(proc)
        proc.stop(STOP_GRACE_SECONDS)

    def stop_all(self):
        """Stop everything still running, newest first (proxies before their backends), then any orphans."""
        for proc in reversed(list(self._running)):
            self.stop(proc)
        _kill_orphans()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop_all()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm():
    """Make SIGTERM unwind like Ctrl-C, so every ``finally`` and ``ChildProcesses`` cleanup runs."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
