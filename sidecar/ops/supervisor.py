"""Pre-fork process model: one master, N gRPC worker processes.

The master parses the key once, reserves the TCP ports, then forks the
workers before any gRPC object exists in it. Workers share each TCP port
through SO_REUSEPORT (the kernel spreads *connections*, not calls, across
them); worker 0 alone serves the Unix sockets, because a socket path cannot be
shared. The master forwards SIGTERM/SIGINT (drain) and SIGHUP (reload) to
every worker, restarts a worker that dies unexpectedly, and exits 0 once all
workers drained cleanly. A second SIGTERM kills the workers and exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence

from sidecar.domain.errors import ConfigError

log = logging.getLogger("sidecar.supervisor")

#: Signals a worker handles itself; blocked from fork until its handlers exist.
WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def check_tcp_ports(listen: Sequence[str]) -> None:
    """Fail with one line if a TCP address cannot be bound (before grpc logs its own error)."""
    for s in reserve_tcp_ports(listen)[1]:
        s.close()


def reserve_tcp_ports(listen: Sequence[str]) -> tuple[list[str], list[socket.socket]]:
    """Check each TCP address is free and pin ephemeral ports.

    A socket bound *with* SO_REUSEPORT but never listening keeps the port ours
    without taking connections; a stale sidecar still listening on the port
    (which would silently take a share of connections) makes this fail.
    """
    resolved, held = [], []
    for addr in listen:
        if addr.startswith("unix://"):
            resolved.append(addr)
            continue
        host, _, port = addr.rpartition(":")
        bare = host.strip("[]")
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR, as grpc's own listener: connections a previous sidecar closed linger in
            # TIME_WAIT on this port, and must not stop a restart. A live listener still fails the bind.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bare, int(port)))  # without SO_REUSEPORT: fails if anyone holds it
            probe.close()
            keep = socket.socket(family, socket.SOCK_STREAM)
            keep.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            keep.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            keep.bind((bare, int(port)))
        except OSError as exc:
            probe.close()
            raise ConfigError(f"SIDECAR_LISTEN: cannot listen on {addr} ({exc.strerror})") from None
        held.append(keep)
        resolved.append(f"{host}:{keep.getsockname()[1]}")
    return resolved, held


def _die_with_parent(master: int) -> None:
    """Have the kernel SIGKILL this worker if the master dies (even by SIGKILL).

    Without it, workers orphaned by a killed master keep serving, keep the
    ports, and hold the master's stdout/stderr open.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to arm
        return
    if os.getppid() != master:  # the master died before prctl took effect
        os._exit(1)


def flush_logs() -> None:
    """Write out queued log lines before ``os._exit`` (the handlers bound how long a stalled stderr holds it)."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass


class Supervisor:
    """Fork ``workers`` processes, each running ``run_worker(index)``."""

    def __init__(self, workers: int, run_worker: Callable[[int], int], grace: float,
                 on_exit: Callable[[int], None] | None = None) -> None:
        #: Called in the master with the pid of every worker that ended (metrics bookkeeping).
        self.on_exit = on_exit
        self.workers = workers
        self.run_worker = run_worker
        self.grace = grace
        self.children: dict[int, int] = {}  # pid -> index
        self.draining = False
        self.exit_codes: list[int] = []

    def _spawn(self, index: int) -> None:
        # Block drain/reload signals across fork: the child is born with them
        # held (so the master's handlers never run in it) and keeps them held
        # until run_worker has its own handlers, so a SIGTERM during start-up
        # becomes a drain instead of killing the worker outright.
        master = os.getpid()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if pid == 0:
            for sig in (*WORKER_SIGNALS, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            _die_with_parent(master)
            code = 1
            try:
                code = self.run_worker(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index

    def _forward(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        def on_term(signum: int, _frame: object) -> None:
            if self.draining:
                log.warning("second %s: killing workers", signal.Signals(signum).name)
                self._forward(signal.SIGKILL)
                flush_logs()
                os._exit(1)
            self.draining = True
            log.info("%s: draining %d workers", signal.Signals(signum).name, len(self.children))
            self._forward(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, lambda _s, _f: self._forward(signal.SIGHUP))
        for index in range(self.workers):
            self._spawn(index)
        log.info("master %d: %d workers %s", os.getpid(), self.workers, sorted(self.children))
        deadline: float | None = None
        while self.children:
            if self.draining and deadline is None:
                deadline = time.monotonic() + self.grace + 5
            try:
                # Polled, not blocking: a blocking waitpid is retried after a
                # signal handler (PEP 475) and would never see the deadline.
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:  # nobody exited: check the drain deadline, then poll again
                if deadline is not None and time.monotonic() > deadline:
                    log.error("workers %s did not drain within %.0fs; killing them", sorted(self.children), self.grace + 5)
                    self._forward(signal.SIGKILL)
                    self.exit_codes.append(1)
                    deadline = float("inf")
                time.sleep(0.1)
                continue
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            if self.on_exit is not None:
                self.on_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.draining:
                log.info("worker %d (pid %d) exited with %d", index, pid, code)
                self.exit_codes.append(code)
                continue
            log.error("worker %d (pid %d) exited with %d; restarting it", index, pid, code)
            time.sleep(0.5)
            if not self.draining:
                self._spawn(index)
        return 0 if all(c == 0 for c in self.exit_codes) else 1
