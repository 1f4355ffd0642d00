"""Readings from ``/proc`` (proc(5)): memory, file descriptors, CPU time, the process tree.

``pid`` is a number or ``"self"``. A process is identified by its pid *and*
its start time (clock ticks since boot, ``/proc/<pid>/stat`` field 22):
a pid alone may have been reused by an unrelated process by the time it is
looked at again.
"""

import contextlib
import os

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
#: process states (``/proc/<pid>/stat`` field 3) of a process that has exited
EXITED_STATES = ("Z", "X")


def read(pid, name):
    """The bytes of ``/proc/<pid>/<name>``, or None if the process is gone (or not ours to read)."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid):
    """``/proc/<pid>/stat`` as strings, indexed as proc(5) numbers the fields minus one, or None if gone.

    [1] command name, [2] state, [3] parent pid, [13] user and [14] system CPU
    ticks, [21] start time.
    """
    data = read(pid, "stat")
    if data is None:
        return None
    text = data.decode("utf-8", "replace")
    # the command name is in parentheses and may itself contain spaces and parentheses
    head, _, tail = text.rpartition(")")
    own_pid, _, command = head.partition(" (")
    return [own_pid, command, *tail.split()]


def start_time(pid):
    """When ``pid`` started (clock ticks since boot), or None if it is gone or has exited (a zombie)."""
    fields = stat_fields(pid)
    if fields is None or fields[2] in EXITED_STATES:
        return None
    return int(fields[21])


def is_running(pid, started):
    """True if ``pid`` is still the process that started at ``started`` and has not exited."""
    return start_time(pid) == started


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root):
    """``{pid: start time}`` of every live process whose chain of parents leads to ``root``."""
    children = {}
    starts = {}
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields is not None and fields[2] not in EXITED_STATES:
            children.setdefault(int(fields[3]), []).append(pid)
            starts[pid] = int(fields[21])
    found = {}
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = starts[pid]
            todo.extend(children.get(pid, ()))
    return found


def marked(name, value):
    """``{pid: start time}`` of live processes (other than this one) whose environment has ``name=value``."""
    needle = f"{name}={value}".encode()
    found = {}
    for pid in all_pids():
        if pid == os.getpid():
            continue
        environ = read(pid, "environ")
        if environ and needle in environ.split(b"\0"):
            started = start_time(pid)
            if started is not None:
                found[pid] = started
    return found


def status_kib(pid, field):
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...), in KiB.

    Raises:
        OSError: the process is gone.
        KeyError: no such line (a zombie has no ``VmRSS``).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_kib(pid="self"):
    """Resident set size now (VmRSS), in KiB."""
    return status_kib(pid, "VmRSS")


def peak_rss_kib(pid="self"):
    """Highest resident set size since start or since ``reset_peak_rss()`` (VmHWM), in KiB."""
    return status_kib(pid, "VmHWM")


def reset_peak_rss(pid="self"):
    """Reset VmHWM to the current RSS, so ``peak_rss_kib()`` measures from now (proc(5), clear_refs "5").

    Raises:
        OSError: where the kernel does not allow it.
    """
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def tree_rss_kib(pid):
    """RSS of pid plus all its descendants (a Hub and the CHP it started), in KiB."""
    total = 0
    for member in [pid, *descendants(pid)]:
        # a member that exited meanwhile (gone, or a zombie without VmRSS) holds no memory
        with contextlib.suppress(OSError, KeyError):
            total += rss_kib(member)
    return total


def open_fds(pid="self"):
    """How many file descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid="self"):
    """User plus system CPU time of the whole process (all its threads), in seconds.

    Raises:
        ProcessLookupError: the process is gone.
    """
    fields = stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS_PER_SECOND
