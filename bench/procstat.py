"""CPU time and peak memory of a server process and all its workers, from /proc.

CPU is user + system of the process and every live descendant, plus the
``cutime``/``cstime`` of children that already exited (so a worker restarted
mid-run is still counted). Peak RSS is the sum of ``VmHWM`` over the tree: an
upper bound, since pages shared after ``fork`` are counted once per process.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def _times(pid: int) -> list[int]:
    """utime, stime, cutime, cstime of ``pid`` in clock ticks (zeros once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return [0, 0, 0, 0]
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    return [int(f) for f in fields[11:15]]


def _stat_seconds(pid: int) -> float:
    return sum(_times(pid)) / TICK


def user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system seconds of ``pid`` and its live descendants (reaped children not included)."""
    user = system = 0
    for p in descendants(pid):
        utime, stime, _, _ = _times(p)
        user, system = user + utime, system + stime
    return user / TICK, system / TICK


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of ``pid`` and its descendants."""
    counts = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    for p in descendants(pid):
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                lines = (task / "status").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                name, _, value = line.partition(":")
                if name in counts:
                    counts[name] += int(value)
    return counts["voluntary_ctxt_switches"], counts["nonvoluntary_ctxt_switches"]


def cpu_seconds(pid: int) -> float:
    """User + system seconds of ``pid`` and its descendants, reaped children included."""
    return sum(_stat_seconds(p) for p in descendants(pid))


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(pid: int) -> float:
    """Sum of ``VmHWM`` (peak resident set) of ``pid`` and its descendants, in MiB."""
    return sum(_status_kib(p, "VmHWM") for p in descendants(pid)) / 1024


def rss_mib(pid: int) -> float:
    """Sum of current ``VmRSS`` of ``pid`` and its descendants, in MiB."""
    return sum(_status_kib(p, "VmRSS") for p in descendants(pid)) / 1024


def anon_mib(pid: int) -> float:
    """Sum of ``RssAnon`` (the anonymous part of the resident set) of ``pid`` and its descendants, in MiB."""
    return sum(_status_kib(p, "RssAnon") for p in descendants(pid)) / 1024
