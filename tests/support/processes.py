"""Child processes in sessions of their own, and ending every process one of them started.

Strategy: a ``ChildProcess`` starts in a new session, so it leads its own
process group; the kernel kills it if the thread that started it dies
(``PR_SET_PDEATHSIG``); its output goes to a log file (a pipe nobody reads
would block it). Killing its group is not enough to end what it started:
JupyterHub starts CHP and single-user servers in sessions of their own, and
they start kernels; a process whose parent died is reparented (to init, or to
a subreaper) and drops out of the child's tree. So a ``ChildProcess``
remembers every process it has seen below the child (``look()``: descendants
walked through ``/proc``, and, given a marker, every process whose environment
carries it, wherever it is), by pid and start time, and ``kill()``:

1. if the child still runs: stops (SIGSTOP) its group, then everything below
   it until no new process appears (a stopped process starts nothing),
   recording each;
2. kills (SIGKILL) the child's group;
3. kills each process it has seen that is still that process, and that
   process's group (its kernels), never the group of this process.

``stop(grace)`` asks first: SIGTERM to the group, up to ``grace`` seconds to
exit (JupyterHub stops its servers and its proxy then), then ``kill()``.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

from .procfs import descendants, is_running, marked

#: the environment variable ``marker`` is passed in; processes that hold it belong to the child
MARKER_VAR = "SUPPORT_PROCESS_MARKER"
#: prctl(2) option, from <sys/prctl.h>
PR_SET_PDEATHSIG = 1
#: resolved before any fork: a preexec_fn should not load libraries in the child
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def prctl(option, value):
    """prctl(2) on this process (Linux); nothing elsewhere."""
    if _PRCTL is not None:
        _PRCTL(option, value)


def _die_with_parent():
    """A preexec_fn: the child gets SIGKILL when the thread that started it ends.

    Strictly the thread, not the process (prctl(2)): start children from a
    thread that outlives them.
    """
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


def signal_group(pgid, signum):
    """Send ``signum`` to process group ``pgid``, never to this process's own; a group gone is fine."""
    if pgid == os.getpgrp():
        return
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone (or its id reused by processes that are not ours)


def signal_process(pid, signum):
    """Send ``signum`` to ``pid``; a process gone is fine."""
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # gone (or its pid reused by a process that is not ours)


def log_tail(path, lines=40):
    """The last ``lines`` lines of the log file at ``path``."""
    try:
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


class StartupError(RuntimeError):
    """A process did not come up; the message says which, and shows the end of its log."""


class ChildProcess:
    """A child process leading its own session, and every process seen below it.

    Args:
        argv: the command.
        name: a short name for messages.
        log_path: the file its stdout and stderr are appended to.
        cwd, env: as for ``subprocess.Popen`` (``env`` None: this process's).
        marker: a random string; the child gets ``MARKER_VAR=<marker>`` in its
            environment and every process whose environment holds it is the
            child's. Pass it on to processes that do not inherit the
            environment (JupyterHub's spawners and services).
    """

    def __init__(self, argv, *, name, log_path, cwd=None, env=None, marker=None):
        self.name = name
        self.log_path = str(log_path)
        self.marker = marker
        #: {pid: start time} of every process seen below the child
        self.seen = {}
        env = dict(os.environ if env is None else env)
        if marker is not None:
            env[MARKER_VAR] = marker
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def log_tail(self, lines=40):
        """The last lines of the child's log."""
        return log_tail(self.log_path, lines)

    def look(self):
        """Record the processes below the child now, and those holding its marker.

        Call it while the child runs (e.g. every few seconds, and before it is
        asked to stop): once the child has exited, its orphans are no longer
        below it.
        """
        if self.popen.returncode is None:  # not reaped: the pid is still the child's
            self.seen.update(descendants(self.pid))
        if self.marker is not None:
            self.seen.update(marked(MARKER_VAR, self.marker))

    def kill(self):
        """Kill the child's group and every process seen below it (see the module docstring).

        Does not reap the child. Safe from another thread or a signal handler.

        Returns:
            The pids of the processes seen below the child that were still
            running and were killed.
        """
        self.look()
        if self.popen.returncode is None:
            signal_group(self.pid, signal.SIGSTOP)
            self._freeze_tree()
        # the child leads its own group; Linux does not reuse a pid while a
        # group of that id has members, so this is safe after it exited too
        signal_group(self.pid, signal.SIGKILL)
        killed = []
        for pid, started in list(self.seen.items()):  # a watching thread may be adding
            if not is_running(pid, started):
                continue
            try:
                signal_group(os.getpgid(pid), signal.SIGKILL)  # its kernels, too
            except ProcessLookupError:
                continue  # exited meanwhile
            signal_process(pid, signal.SIGKILL)
            killed.append(pid)
        return killed

    def _freeze_tree(self):
        """SIGSTOP every process below the child (recording it) until none is new.

        What a process forked just before it stopped shows up in the next pass.
        """
        frozen = set()
        while True:
            found = {pid: started for pid, started in descendants(self.pid).items() if pid not in frozen}
            if not found:
                return
            self.seen.update(found)
            for pid in found:
                frozen.add(pid)
                signal_process(pid, signal.SIGSTOP)

    def stop(self, grace):
        """SIGTERM the child's group, give it ``grace`` seconds, then ``kill()``; reaps the child.

        Returns:
            What ``kill()`` returns: the processes that outlived the child's own shutdown.
        """
        self.look()
        if self.popen.poll() is None:
            signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass  # killed below with everything else
        killed = self.kill()
        self.popen.wait()
        return killed


def wait_until(predicate, *, timeout, what, process=None, interval=0.1):
    """Call ``predicate()`` until it returns something true; return that.

    Polling is the only way to watch another process's state here; ``timeout``
    bounds it.

    Args:
        process: a ``ChildProcess`` this waits for to come up: its exit ends
            the wait at once.

    Raises:
        StartupError: with the end of ``process``'s log, when it exits or
            ``timeout`` seconds pass first.
        TimeoutError: naming ``what``, when ``timeout`` seconds pass first
            and no ``process`` was given.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise StartupError(
                f"{process.name} exited with code {process.returncode} while waiting for {what};"
                f" log {process.log_path}:\n{process.log_tail()}"
            )
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            if process is not None:
                raise StartupError(
                    f"{process.name}: {what} not ready after {timeout} s; log {process.log_path}:\n"
                    + process.log_tail()
                )
            raise TimeoutError(f"{what}: not reached in {timeout} s")
        time.sleep(interval)
