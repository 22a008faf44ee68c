"""The Linux CPU scheduling policy of the sidecar's threads.

Under load the sidecar runs more threads than there are cores: the threads that
sign, grpc core's I/O threads, and, in a pod, the backend it serves. With the
default policy (``SCHED_OTHER``) a thread that wakes, say an I/O thread with
one more request, preempts the thread that is signing. Each such switch costs
the switch itself and the signer's warm caches; on the bench machine the
signing threads were preempted 1.7 times per token between them.

``SCHED_BATCH`` (sched(7)) is the same fair scheduler without that: a woken
batch thread waits for the running one to block or to use up its slice rather
than cutting in. Priorities, nice values and CPU limits are unchanged, and a
process needs no privilege to choose it. It costs the sidecar some wake-up
latency only when every core is busy; on an idle core a woken thread runs at
once. The sidecar also stops cutting in on its pod neighbours' threads.

The policy belongs to each thread and is inherited by the threads and
processes it starts, so :func:`apply` runs before the server starts any.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: ``SIDECAR_SCHED_POLICY`` value -> Linux policy.
POLICIES = {"batch": getattr(os, "SCHED_BATCH", None), "normal": getattr(os, "SCHED_OTHER", None)}


def apply(policy: str) -> str:
    """Give the calling thread (and so every thread and worker started after it) ``policy``.

    Returns why it could not be applied (empty when it was); the sidecar then
    runs on with the policy it had.

    >>> apply("normal")
    ''
    """
    number = POLICIES[policy]
    if number is None or not hasattr(os, "sched_setscheduler"):
        return "this platform has no Linux scheduling policies"
    try:
        os.sched_setscheduler(0, number, os.sched_param(0))
    except OSError as exc:  # e.g. a seccomp profile that forbids it
        return exc.strerror or str(exc)
    return ""


#: cgroup v2 CPU limit of this container (``max 100000`` or ``<quota> <period>``).
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CPU_MAX) -> int:
    """CPUs this process may use: its affinity, lowered to the container's CPU limit.

    A pod limited to 1 CPU on a 32-core node must not start 32 signing threads
    or workers that would only queue on the quota.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity is the limit
    return cpus
