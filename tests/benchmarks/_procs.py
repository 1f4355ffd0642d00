"""Child processes, ports and /proc readings for the benchmark.

Every process the benchmark starts goes through ``ChildProcesses``, which puts
it in its own session (so it has its own process group), asks the kernel to
kill it if the benchmark dies (``PR_SET_PDEATHSIG``), sends its output to a log
file (a pipe nobody reads would block it) and kills the group and any
descendants that left it (JupyterHub starts CHP in a new session) on exit.
The benchmark is made a child subreaper, so even the CHP of a Hub that crashed
is still found and killed.
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

# From <sys/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# Seconds a process gets between SIGTERM and SIGKILL: JupyterHub needs a moment
# to stop its proxy and close its database.
STOP_GRACE_SECONDS = 5.0
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def free_ports(count):
    """count distinct TCP ports on 127.0.0.1 that were free a moment ago (the OS picks them).

    The sockets are held open together: closing one before binding the next
    lets the OS hand out the same port twice, which happened.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port():
    """One TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def _prctl(option, value):
    ctypes.CDLL(None, use_errno=True).prctl(option, value)


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it when the benchmark process exits."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_orphans():
    """SIGKILL and reap whatever descendants are left, e.g. the CHP of a Hub that crashed.

    Needs PR_SET_CHILD_SUBREAPER: without it, a process whose parent died is
    adopted by init and is no longer ours to find.
    """
    for pid in _descendants(os.getpid()):
        _signal_quietly(pid, signal.SIGKILL, group=False)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG) != (0, 0):
            pass


def _descendants(pid):
    """PIDs whose chain of parents leads to pid, found by scanning /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = int(stat[3])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _signal_quietly(pid, sig, group):
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        # Already gone (or its pid reused by a process that is not ours).
        pass


class ChildProcesses:
    """The processes one benchmark run started; ``stop_all()`` ends every one of them."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._running = []
        # Orphans of our children (JupyterHub's CHP when the Hub dies) become our
        # children instead of init's, so stop_all() can still find them.
        _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def start(self, name, argv, *, cwd=None, env=None):
        """Start argv in its own process group, stdout and stderr to ``<log_dir>/<name>.log``."""
        log_path = os.path.join(self.log_dir, f"{name}.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc.name = name
        proc.log_path = log_path
        self._running.append(proc)
        return proc

    def stop(self, proc):
        """SIGTERM the process group, SIGKILL it after a grace period, and its stray descendants."""
        if proc in self._running:
            self._running.remove(proc)
        strays = _descendants(proc.pid)
        _signal_quietly(proc.pid, signal.SIGTERM, group=True)
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_quietly(proc.pid, signal.SIGKILL, group=True)
            proc.wait()
        for pid in strays + _descendants(proc.pid):
            _signal_quietly(pid, signal.SIGKILL, group=False)

    def stop_all(self):
        """Stop everything still running, newest first (proxies before their backends), then any orphans."""
        for proc in reversed(list(self._running)):
            self.stop(proc)
        _kill_orphans()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop_all()


class StartupError(RuntimeError):
    """A process the benchmark needs did not come up; the message says which and where its log is."""


def _log_tail(proc, lines=15):
    try:
        with open(proc.log_path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError:
        return ""


def _fail_if_exited(proc):
    if proc.poll() is not None:
        raise StartupError(
            f"{proc.name} exited with code {proc.returncode} during start-up; log {proc.log_path}:\n"
            + _log_tail(proc)
        )


def wait_until(proc, is_ready, timeout, what):
    """Poll is_ready() until it is true; raise StartupError if proc exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        _fail_if_exited(proc)
        if is_ready():
            return
        if time.monotonic() > deadline:
            raise StartupError(
                f"{proc.name}: {what} not ready after {timeout} s; log {proc.log_path}:\n" + _log_tail(proc)
            )
        time.sleep(0.05)


def port_accepts(port):
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url, timeout=2.0):
    """The status code of a GET to url, or None if no HTTP answer came."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _read_stat(pid):
    """/proc/PID/stat fields, indexed as proc(5) numbers them minus one ([3] ppid), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces.
    return [None, None] + text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid):
    """User plus system CPU time of the whole process (all its threads), in seconds."""
    stat = _read_stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    utime, stime = int(stat[13]), int(stat[14])
    return (utime + stime) / CLOCK_TICKS_PER_SECOND


def _status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_kib(pid):
    """Resident set size now (VmRSS), in KiB."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid):
    """Highest resident set size since start or since reset_peak_rss() (VmHWM), in KiB."""
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid):
    """Reset VmHWM to the current RSS, so peak_rss_kib() measures from now (proc(5), clear_refs "5")."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def tree_rss_kib(pid):
    """RSS of pid plus all its descendants (a Hub and the CHP it started), in KiB."""
    total = 0
    for member in [pid, *_descendants(pid)]:
        # A member that exited meanwhile (gone, or a zombie without VmRSS) holds no memory.
        with contextlib.suppress(OSError, KeyError):
            total += rss_kib(member)
    return total


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm():
    """Make SIGTERM unwind like Ctrl-C, so every ``finally`` and ``ChildProcesses`` cleanup runs."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
