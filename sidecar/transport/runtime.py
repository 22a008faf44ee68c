"""The gRPC server runtime: listeners, health, reflection, the fast call path, drain and signals.

It serves an :class:`~sidecar.transport.servicer.IdentityServicer`; how it is
built (threads, interceptors, credentials, socket mode) comes in as plain
values in :class:`ServerOptions`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from sidecar.domain import errors
from sidecar.ops.supervisor import flush_logs
from sidecar.service.usecases import Sidecar
from sidecar.transport import fastpath, reflection
from sidecar.transport.admission import PendingCalls
from sidecar.transport.health import DEFAULT_MAX_WATCHERS, NOT_SERVING, SERVING, Health
from sidecar.transport.servicer import SERVICE_NAME, IdentityServicer, generic_handler
from sidecar.v1 import identity_pb2 as pb

log = logging.getLogger("sidecar.runtime")

#: The protobuf descriptors of the services the runtime serves (their methods' metric series start at 0).
SERVICES = (pb.DESCRIPTOR.services_by_name["IdentityService"], health_pb2.DESCRIPTOR.services_by_name["Health"])


@dataclass
class ServerOptions:
    """How the gRPC server is built; what later features tune."""

    #: Threads handling calls. Signing releases the GIL, so more than one core signs.
    max_workers: int = 4
    #: Extra channel arguments for ``grpc.server``.
    options: list[tuple[str, Any]] = field(default_factory=list)
    #: Interceptors, outermost first.
    interceptors: list[grpc.ServerInterceptor] = field(default_factory=list)
    #: Share TCP ports with sibling worker processes (SO_REUSEPORT).
    reuse_port: bool = False
    #: Whether this process listens on Unix sockets (only one worker may).
    unix: bool = True
    #: Mode of created Unix sockets.
    socket_mode: int = 0o660
    #: TLS credentials for TCP listeners (``None``: plaintext); Unix sockets stay plaintext.
    credentials: grpc.ServerCredentials | None = None
    #: ``host:port`` addresses of a separate, plaintext server that answers only
    #: ``grpc.health.v1`` (same status as the main one): what a kubelet's native
    #: ``grpc:`` probe can reach on the pod IP without exposing the signing API.
    health_listen: tuple[str, ...] = ()
    #: The pool that runs calls (``None``: a plain pool of ``max_workers``); limits count calls through it.
    executor: futures.ThreadPoolExecutor | None = None
    #: Threads of the fast call path for ``IdentityService`` (:mod:`sidecar.transport.fastpath`); 0: the stock path.
    fast_path_threads: int = 0
    #: ``Watch`` streams of the health service open at once (both health servers together).
    health_max_watchers: int = DEFAULT_MAX_WATCHERS
    #: Calls waiting for their request message: their own bound and read deadline
    #: (:class:`~sidecar.transport.admission.PendingCalls`; ``None``: grpc's defaults, unbounded).
    pending: PendingCalls | None = None
    #: Liveness: every second the server calls its own ``GetPublicKey`` over its first Unix socket
    #: (else its first plaintext TCP listener) with this deadline; after :data:`SELF_CHECK_FAILURES`
    #: misses in a row health says ``NOT_SERVING`` until one is answered again. 0: off.
    self_check_timeout: float = 0.0
    #: Seconds past the grace period after which a drain that has not finished ends the process.
    hard_stop: float = 3.0


def check_unix_listen(addr: str, setting: str = "SIDECAR_LISTEN") -> Path:
    """The socket path of a ``unix://`` listen address, refused (``ConfigError`` naming ``setting``) if it
    cannot be one."""
    path = Path(addr.removeprefix("unix://"))
    if not path.parent.is_dir():
        raise errors.ConfigError(f"{setting}: directory {path.parent} of {addr} does not exist")
    if path.exists() and not path.is_socket():
        raise errors.ConfigError(f"{setting}: {path} exists and is not a socket; refusing to replace it")
    return path


#: Self-checks missed in a row that turn health ``NOT_SERVING``.
SELF_CHECK_FAILURES = 3
#: Seconds between two self-checks.
SELF_CHECK_INTERVAL = 1.0
#: How often the main thread wakes while it waits for the drain (to run a pending signal handler).
WAIT_SLICE = 0.5


def _add_port(server: grpc.Server, addr: str, credentials: grpc.ServerCredentials | None, setting: str) -> int:
    """Listen on ``addr`` (TLS when ``credentials``); one ``ConfigError`` line naming ``setting`` if it can't."""
    try:
        port = server.add_secure_port(addr, credentials) if credentials else server.add_insecure_port(addr)
    except RuntimeError:
        port = 0
    if port == 0:
        raise errors.ConfigError(f"{setting}: cannot listen on {addr} (in use, or not permitted)")
    return int(port)


class Runtime:
    """A running gRPC server: listeners, health, reflection and drain."""

    def __init__(self, servicer: IdentityServicer, listen: Sequence[str], opts: ServerOptions | None = None) -> None:
        self.opts = opts or ServerOptions()
        self.servicer = servicer
        self.health = Health(("", SERVICE_NAME), self.opts.health_max_watchers,
                             getattr(servicer, "observer", None))
        channel_opts = [("grpc.so_reuseport", 1 if self.opts.reuse_port else 0), *self.opts.options]
        executor = self.opts.executor or futures.ThreadPoolExecutor(max_workers=self.opts.max_workers,
                                                                    thread_name_prefix="rpc")
        self.server = grpc.server(executor, interceptors=self.opts.interceptors, options=channel_opts)
        self.fast: fastpath.FastPath | None = None
        if self.opts.fast_path_threads:
            # One real call through it first (once per process): a grpcio that changed is served by stock.
            problem = fastpath.self_test()
            if not problem:
                try:
                    self.fast = fastpath.FastPath(self.server, servicer, self.opts.interceptors,
                                                  self.opts.fast_path_threads, self.opts.pending)
                except Exception as exc:  # noqa: BLE001 - any failure here means the stock path
                    problem = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
                    # The attempt may have registered methods with grpc core: start from a fresh server.
                    self.server = grpc.server(executor, interceptors=self.opts.interceptors, options=channel_opts)
            if problem:
                log.warning("%s; IdentityService is served by the stock grpc server", problem)
        if self.fast is None:
            self.server.add_generic_rpc_handlers((generic_handler(servicer),))
        self.health.add_to(self.server)
        reflection.enable(self.server, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
        self.addresses: list[str] = []
        self._sockets: list[Path] = []
        for addr in listen:
            if addr.startswith("unix://") and not self.opts.unix:
                continue
            self.addresses.append(self._bind(addr))
        self.health_server: grpc.Server | None = None
        self.health_addresses: list[str] = []
        if self.opts.health_listen:
            self.health_server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                options=[("grpc.so_reuseport", 1 if self.opts.reuse_port else 0), ("grpc.max_receive_message_length", 1024)],
            )
            self.health.add_to(self.health_server)
            for addr in self.opts.health_listen:
                port = _add_port(self.health_server, addr, None, "SIDECAR_HEALTH_LISTEN")
                self.health_addresses.append(f"{addr.rpartition(':')[0]}:{port}")
        self._stopped = threading.Event()
        #: Other listeners drained with this server (objects with ``start()`` and ``stop(grace)``: the Connect one).
        self.companions: list[Any] = []
        self._draining = False
        #: Whether the last :data:`SELF_CHECK_FAILURES` self-checks all missed.
        self.wedged = False

    def _self_check_target(self) -> str | None:
        unix = [a for a in self.addresses if a.startswith("unix://")]
        if unix:
            return unix[0]
        if self.opts.credentials is None and self.addresses:
            return self.addresses[0]
        return None

    def _self_check(self, target: str, timeout: float) -> None:
        """The liveness loop: a wedged call path (every thread stuck) turns health ``NOT_SERVING``,
        so the kubelet's probe fails and the pod is restarted."""
        channel = grpc.insecure_channel(target)
        call = channel.unary_unary(f"/{SERVICE_NAME}/GetPublicKey",
                                   request_serializer=pb.GetPublicKeyRequest.SerializeToString,
                                   response_deserializer=pb.GetPublicKeyResponse.FromString)
        missed = 0
        try:
            while True:  # the first call at once: the channel connects before any flood of connections
                try:
                    call(pb.GetPublicKeyRequest(), timeout=timeout)
                    answered = True
                except grpc.RpcError as exc:
                    # Any answer (even a refusal) shows the call path is alive; so does a connection
                    # refused (UNAVAILABLE: the connection cap, say), which is no sign of a wedged server.
                    answered = exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED
                missed = 0 if answered else missed + 1
                wedged = missed >= SELF_CHECK_FAILURES
                if wedged != self.wedged and not self._draining:
                    self.wedged = wedged
                    if wedged:
                        log.error("self-check: GetPublicKey unanswered within %.1fs %d times in a row: "
                                  "health NOT_SERVING", timeout, missed)
                    else:
                        log.warning("self-check: answered again: health SERVING")
                    self.set_serving(not wedged)
                if self._stopped.wait(SELF_CHECK_INTERVAL):
                    return
        finally:
            channel.close()

    def _bind(self, addr: str) -> str:
        if addr.startswith("unix://"):
            path = check_unix_listen(addr)
            # grpc binds and listens right here: under this umask the socket is born with at most its
            # final mode, so no connection can come in before the chmod (the umask only ever narrows).
            mode = self.opts.socket_mode
            old = os.umask(0o777)
            os.umask(old | (0o777 & ~mode))
            try:
                self._bind_port(addr)
            finally:
                os.umask(old)
            os.chmod(path, mode)
            self._sockets.append(path)
            return addr
        port = self._bind_port(addr)
        host = addr.rpartition(":")[0]
        return f"{host}:{port}"

    def _bind_port(self, addr: str) -> int:
        credentials = None if addr.startswith("unix://") else self.opts.credentials
        return _add_port(self.server, addr, credentials, "SIDECAR_LISTEN")

    def start(self) -> None:
        if self.opts.pending is not None:
            self.opts.pending.start()
        self.server.start()
        if self.fast is not None:
            self.fast.start()
        if self.health_server is not None:
            self.health_server.start()
        for companion in self.companions:
            companion.start()
        self.set_serving(True)
        target = self._self_check_target()
        if self.opts.self_check_timeout > 0 and target is not None:
            threading.Thread(target=self._self_check, args=(target, self.opts.self_check_timeout),
                             name="self-check", daemon=True).start()

    def set_serving(self, serving: bool) -> None:
        self.health.set_all(SERVING if serving else NOT_SERVING)

    def drain(self, grace: float) -> None:
        """Go NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``.

        grpc cancels what is left at the end of ``grace``; should even that not end
        the server within :attr:`ServerOptions.hard_stop` more seconds, the drain
        goes on without it (:meth:`handle_signals` then ends the process). The
        companion listeners (Connect) drain alongside, within the same bound.
        """
        self._draining = True
        self.health.shutdown()
        deadline = time.monotonic() + grace + self.opts.hard_stop
        stopping = [threading.Thread(target=c.stop, args=(grace,), name="drain-companion", daemon=True)
                    for c in self.companions]
        for t in stopping:
            t.start()
        if not self.server.stop(grace).wait(grace + self.opts.hard_stop):
            log.error("the server did not stop within %.1fs of the grace period", self.opts.hard_stop)
        for t in stopping:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.fast is not None:  # core has finished every call: end the fast path's threads
            self.fast.stop()
        if self.health_server is not None:  # answered NOT_SERVING all through the drain
            self.health_server.stop(0).wait(self.opts.hard_stop)
        self.health.close()
        if self.opts.pending is not None:
            self.opts.pending.stop()
        for path in self._sockets:
            path.unlink(missing_ok=True)
        self._stopped.set()

    def wait(self) -> None:
        # In slices: a signal the kernel hands to another thread (grpc's, granian's) only sets
        # Python's flag, and a main thread blocked without a timeout would never run its handler.
        while not self._stopped.wait(WAIT_SLICE):
            pass

    def _hard_stop(self, grace: float) -> None:
        """The drain's hard bound: whatever still runs ``hard_stop`` seconds past the grace period."""
        if self._stopped.is_set():
            return
        log.error("drain not finished %.1fs after the %.1fs grace period: exiting now", self.opts.hard_stop, grace)
        flush_logs()
        os._exit(1)

    def handle_signals(self, grace: float, on_reload: Callable[[], None] | None = None) -> None:
        """SIGTERM/SIGINT drain (a second one exits at once); SIGHUP calls ``on_reload``."""
        draining = threading.Event()

        def on_term(signum: int, _frame: object) -> None:
            if draining.is_set():
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                flush_logs()
                os._exit(1)
            draining.set()
            log.info("%s: draining (grace %.1fs)", signal.Signals(signum).name, grace)
            threading.Thread(target=self.drain, args=(grace,), name="drain", daemon=True).start()
            hard = threading.Timer(grace + self.opts.hard_stop, self._hard_stop, args=(grace,))
            hard.daemon = True
            hard.start()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        if on_reload is not None:
            signal.signal(signal.SIGHUP, lambda _s, _f: on_reload())


def build(sidecar: Sidecar, listen: Iterable[str], opts: ServerOptions | None = None) -> Runtime:
    """Build a :class:`Runtime` serving ``sidecar``'s use cases, ready to :meth:`~Runtime.start`."""
    return Runtime(IdentityServicer(sidecar), list(listen), opts)
