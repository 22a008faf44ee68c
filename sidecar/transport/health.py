"""``grpc.health.v1.Health`` served by a bounded implementation of our own.

Why not grpcio-health-checking's ``HealthServicer``: it keeps an entry for
every service name ever watched (memory grows with each unique name a caller
sends), and a ``Watch`` thread holds its lock while it waits to send, so a
storm of cancelled ``Watch`` calls deadlocks ``Check``, then the drain
(``enter_graceful_shutdown`` waits for the same lock).

Here:

* the statuses are a fixed set of names (``""`` and ``sidecar.v1.IdentityService``);
  a name outside it is answered ``NOT_FOUND`` (``Check``) or ``SERVICE_UNKNOWN``
  (``Watch``) and never stored;
* at most ``max_watchers`` ``Watch`` streams at once; one more is refused with
  ``RESOURCE_EXHAUSTED`` (counted as ``rejected("Watch", "health_watchers")``);
* no lock is held while a response is sent: a stream reads the status under the
  lock, lets go, then yields;
* ``Check`` and ``Watch`` run on thread pools of their own (grpc's
  ``experimental_thread_pool``), so neither stalled ``IdentityService`` calls
  nor open streams take the thread a probe needs;
* :meth:`shutdown` (drain) sets every status ``NOT_SERVING`` for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from sidecar.domain import errors
from sidecar.service.observer import Observer
from sidecar.transport.servicer import request_parser

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVICE = "grpc.health.v1.Health"

#: ``Watch`` streams served at once by default.
DEFAULT_MAX_WATCHERS = 16
#: Longest a ``Watch`` stream sleeps before it looks whether its caller is still there, in seconds.
WATCH_POLL = 1.0


class Health:
    """The health statuses of a fixed set of names, served as ``grpc.health.v1.Health``."""

    def __init__(self, names: Iterable[str], max_watchers: int = DEFAULT_MAX_WATCHERS,
                 observer: Observer | None = None) -> None:
        self.max_watchers = max(1, max_watchers)
        self.observer = observer
        self._status: dict[str, int] = dict.fromkeys(names, NOT_SERVING)
        self._cond = threading.Condition(threading.Lock())
        self._version = 0
        self._watchers = 0
        self._shutdown = False
        #: Check: a couple of threads of its own; Watch: one per stream, plus room to refuse quickly.
        self.check_pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-check")
        self.watch_pool = futures.ThreadPoolExecutor(max_workers=self.max_watchers + 2,
                                                     thread_name_prefix="health-watch")

    # -- statuses -------------------------------------------------------------------------------

    def set(self, name: str, status: int) -> None:
        """Set ``name``'s status (a name of the fixed set; ignored after :meth:`shutdown`)."""
        with self._cond:
            if self._shutdown or name not in self._status:
                return
            if self._status[name] != status:
                self._status[name] = status
                self._version += 1
                self._cond.notify_all()

    def set_all(self, status: int) -> None:
        for name in list(self._status):
            self.set(name, status)

    def status(self, name: str) -> int | None:
        """``name``'s status, or ``None`` for a name outside the set."""
        with self._cond:
            return self._status.get(name)

    def shutdown(self) -> None:
        """For good: every status ``NOT_SERVING`` (the drain); later :meth:`set` calls are ignored."""
        with self._cond:
            for name in self._status:
                self._status[name] = NOT_SERVING
            self._shutdown = True
            self._version += 1
            self._cond.notify_all()

    #: grpcio-health-checking's name for :meth:`shutdown`.
    enter_graceful_shutdown = shutdown

    def close(self) -> None:
        """After the servers have stopped: end the pools' threads (not waiting for them)."""
        self.check_pool.shutdown(wait=False, cancel_futures=True)
        self.watch_pool.shutdown(wait=False, cancel_futures=True)

    # -- RPCs -----------------------------------------------------------------------------------

    def Check(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        self._refuse_malformed("Check", request, context)
        status = self.status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "health: unknown service name")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext) -> Iterator[health_pb2.HealthCheckResponse]:
        self._refuse_malformed("Watch", request, context)
        with self._cond:
            full = self._watchers >= self.max_watchers
            if not full:
                self._watchers += 1
        if full:
            if self.observer is not None:
                self.observer.rejected("Watch", "health_watchers")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"health: more than {self.max_watchers} Watch streams at once")
        try:
            yield from self._watch(request.service, context)
        finally:
            with self._cond:
                self._watchers -= 1

    def _refuse_malformed(self, rpc: str, request: object, context: grpc.ServicerContext) -> None:
        """Bytes that are no ``HealthCheckRequest``: ``INVALID_ARGUMENT``, counted, never a traceback."""
        if isinstance(request, errors.MalformedRequest):
            if self.observer is not None:
                self.observer.rejected(rpc, request.reason)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))

    def _watch(self, name: str, context: grpc.ServicerContext) -> Iterator[health_pb2.HealthCheckResponse]:
        gone = threading.Event()

        def wake() -> None:  # grpc's thread, when the call ends: a short wait for the lock, never a send
            gone.set()
            with self._cond:
                self._cond.notify_all()

        context.add_callback(wake)
        last: int | None = None
        while not gone.is_set() and context.is_active():
            with self._cond:
                status = self._status.get(name, SERVICE_UNKNOWN)
                version = self._version
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)  # no lock held here
            with self._cond:
                if self._version == version and not gone.is_set():
                    self._cond.wait(WATCH_POLL)

    # -- registration ---------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler serving ``grpc.health.v1.Health`` off the health pools."""
        check = _on_pool(self.Check, self.check_pool)
        watch = _on_pool(self.Watch, self.watch_pool)
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                check, request_deserializer=request_parser(health_pb2.HealthCheckRequest),
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch, request_deserializer=request_parser(health_pb2.HealthCheckRequest),
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
        })

    def add_to(self, server: grpc.Server) -> None:
        server.add_generic_rpc_handlers((self.handler(),))


def _on_pool(fn: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> Callable[..., Any]:
    """``fn`` as a behaviour grpc runs on ``pool`` instead of the server's own."""

    def behavior(request: Any, context: grpc.ServicerContext) -> Any:
        return fn(request, context)

    behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]  # read by grpc._server
    return behavior
