"""The fast call path: ``IdentityService`` calls served straight off grpc's completion queue.

Why it exists: stock grpcio's sync server passes every call between its
polling thread and a pool thread three or four times (condition variables,
futures, the interceptor pipeline). That costs about 220 µs of server CPU per
call, close to one RSA-2048 signature, serialised by the GIL (PERF-NOTES).

Here the ``IdentityService`` methods are *registered methods* of the same grpc
core server, requested on a completion queue of their own. A few threads poll
it and run each call from start to end in two steps:

1. a new call arrives: ask for its request message (the call now counts in
   :class:`~sidecar.transport.admission.PendingCalls`, with its own bound and
   read deadline, not in the concurrency bound);
2. the message arrives: run the guards (allow-list, concurrency bound, rate
   limit, deadline) and the servicer, then send initial metadata, the response
   and the status in one batch.

The servicer, the guards and the RPC metrics are the very objects the stock
path uses, through :class:`Context`, which offers the part of
``grpc.ServicerContext`` they need. Everything else (health, reflection,
unknown methods) stays on the stock server, which also owns the listeners,
TLS and the drain: grpc core's shutdown waits for these calls too.

:func:`defer_until_message` is the stock path's share of grpcio's private
layer: it keeps a call that has not sent its request message off grpc's pool.

This uses grpcio's Cython layer (``grpc._cython.cygrpc``), which is not a
public API. grpcio is pinned; :func:`unavailable` names what is missing if a
future grpcio changes it, and ``SIDECAR_CALL_PATH=stock`` serves everything
through the stock server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import message
from google.protobuf.message_factory import GetMessageClass

from sidecar.telemetry.rpc_metrics import RpcMetrics
from sidecar.transport.admission import ConcurrencyLimit, Guard, PendingCalls, rpc_name
from sidecar.transport.interceptors import MetricsInterceptor
from sidecar.v1 import identity_pb2 as pb

try:
    from grpc._cython import cygrpc
except ImportError:  # pragma: no cover - grpcio without its Cython layer
    cygrpc = None

log = logging.getLogger("sidecar.fastpath")

_SERVICE = pb.DESCRIPTOR.services_by_name["IdentityService"]
_NO_FLAGS = 0
#: Pending call requests per method and thread: how many new calls core can hand over at once.
_REQUESTS = 16

_NEEDED = ("Server.register_method", "Server.request_registered_call", "Server.register_completion_queue",
           "CompletionQueue.poll", "CompletionQueue.shutdown", "Call.start_server_batch", "Call.peer",
           "ReceiveMessageOperation", "SendInitialMetadataOperation", "SendMessageOperation",
           "SendStatusFromServerOperation", "ReceiveCloseOnServerOperation", "CompletionType.queue_shutdown",
           "peer_identities", "auth_context")


def unavailable(server: grpc.Server) -> str:
    """Why the fast path cannot run on ``server`` (empty: it can)."""
    if cygrpc is None:
        return "grpcio has no grpc._cython.cygrpc"
    if not isinstance(getattr(server, "_cy_server", None), cygrpc.Server):
        return "the grpc server does not expose its core server"
    for name in _NEEDED:
        obj: Any = cygrpc
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            return f"grpc._cython.cygrpc has no {name}"
    return ""


class Abort(Exception):
    """What :meth:`Context.abort` raises: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    """The part of ``grpc.ServicerContext`` the servicer and the guards use, for one call.

    It reads what it is asked for from grpc's request event only then: most
    calls never look at their metadata or peer.
    """

    __slots__ = ("_call", "_event")

    def __init__(self, event: Any) -> None:
        self._event = event
        self._call = event.call

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Abort(code, details)

    def time_remaining(self) -> float:
        deadline: float = self._event.call_details.deadline
        return max(deadline - time.time(), 0.0)

    def peer(self) -> str:
        peer: bytes | str = self._call.peer()
        return peer.decode("utf-8", "replace") if isinstance(peer, bytes) else peer

    def peer_identities(self) -> Sequence[bytes] | None:
        identities: Sequence[bytes] | None = cygrpc.peer_identities(self._call)
        return identities

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        ctx = cygrpc.auth_context(self._call) or {}
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in ctx.items()}

    def invocation_metadata(self) -> Any:
        return self._event.invocation_metadata

    def is_active(self) -> bool:
        return True


class Method:
    """One registered method: how to parse its request and what serves it."""

    __slots__ = ("behavior", "name", "parse", "path", "series")

    def __init__(self, name: str, parse: Callable[[bytes], Any], behavior: Callable[[Any, Any], Any],
                 series: Any) -> None:
        self.name = name
        self.path = f"/{_SERVICE.full_name}/{name}"
        self.parse = parse
        self.behavior = behavior
        self.series = series


class _Received:
    """Tag of the receive-message batch of one call."""

    __slots__ = ("event", "method", "started", "ticket")

    def __init__(self, method: Method, event: Any, started: float) -> None:
        self.method = method
        self.event = event  # the request event: the call, its deadline and metadata
        self.started = started
        self.ticket: int | None = None  # in PendingCalls until the message arrives


class _Finished:
    """Tag of the final batch (response, status, close) of one call."""

    __slots__ = ()


_FINISHED = _Finished()


class _Uncounted:
    """Tag of the final batch of a call that never counted as in flight (refused or gone before its message)."""

    __slots__ = ()


_UNCOUNTED = _Uncounted()

_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


def _canceller(call: Any) -> Callable[[], None]:
    return lambda: call.cancel(_CANCELLED, "request message not received in time")


class _NoCounter:
    def inc(self) -> None:
        pass


class _NoSeries:
    """Stands in for a metrics series when the server has no :class:`RpcMetrics`."""

    started = _NoCounter()

    def done(self, code: str, started: float) -> None:
        pass


_NO_SERIES = _NoSeries()


class _Loop:
    """One polling thread with its own in-flight count, so no lock is shared.

    Any thread may take any event of the queue, so one loop can count a call in
    and another count it out: a single count can go negative, their sum is exact.
    """

    def __init__(self, fast: FastPath, index: int) -> None:
        self.fast = fast
        self.in_flight = 0
        self.thread = threading.Thread(target=self.run, name=f"fastpath-{index}", daemon=True)

    def request(self, method: Method) -> None:
        """Ask core for the next call of ``method`` (not once the server is shutting down)."""
        fast = self.fast
        if fast.stopping:
            return
        try:
            fast.core_server.request_registered_call(fast.queue, fast.queue, method.path, method)
        except ValueError:  # the server began shutting down meanwhile
            pass

    def run(self) -> None:
        fast = self.fast
        queue = fast.queue
        for _ in range(_REQUESTS):
            for method in fast.methods:
                self.request(method)
        shutdown = cygrpc.CompletionType.queue_shutdown
        while True:
            event = queue.poll()
            if event.completion_type == shutdown:
                return
            tag = event.tag
            try:
                if tag is _FINISHED:
                    self.in_flight -= 1
                elif tag is _UNCOUNTED:
                    pass
                elif type(tag) is _Received:
                    self.respond(tag, event)
                elif type(tag) is Method:
                    self.accept(tag, event)
            except Exception:  # a call must never take the loop down
                log.exception("fast path: unexpected error")
            event = None  # drop the call before blocking again

    def accept(self, method: Method, event: Any) -> None:
        self.request(method)  # keep the requests topped up (refused once the server shuts down)
        if not event.success:  # the request was cancelled: the server is shutting down
            return
        started = time.perf_counter()
        method.series.started.inc()
        tag = _Received(method, event, started)
        call = event.call
        pending = self.fast.pending
        if pending is not None:
            peer = call.peer()
            tag.ticket = pending.admit(peer.decode("utf-8", "replace") if isinstance(peer, bytes) else str(peer),
                                       method.name, _canceller(call))
            if tag.ticket is None:
                self.finish(tag, None, grpc.StatusCode.RESOURCE_EXHAUSTED,
                            "server busy: too many calls waiting for their request message on this connection",
                            _UNCOUNTED)
                return
        if call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),), tag) != 0:
            if pending is not None and tag.ticket is not None:
                pending.arrived(tag.ticket)
            method.series.done("CANCELLED", started)

    def respond(self, tag: _Received, event: Any) -> None:
        method = tag.method
        code, details, body = grpc.StatusCode.OK, "", None
        data = event.batch_operations[0].message() if event.success else None
        pending = self.fast.pending
        if pending is not None and tag.ticket is not None and not pending.arrived(tag.ticket):
            data = None  # cancelled meanwhile (read deadline, or pushed out by newer calls)
        if data is None:  # the caller went away (or grpc refused the message, e.g. too large)
            self.finish(tag, None, grpc.StatusCode.CANCELLED, "no request message", _UNCOUNTED)
            return
        self.in_flight += 1
        try:
            context = Context(tag.event)
            for guard in self.fast.guards:
                guard(method.name, context)
            try:
                request = method.parse(data)
            except message.DecodeError:
                raise Abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from None
            body = method.behavior(request, context).SerializeToString()
        except Abort as exc:
            code, details = exc.code, exc.details
        except Exception:  # the servicer maps domain errors; this is a bug
            log.exception("fast path: unexpected error in %s", method.name)
            code, details = grpc.StatusCode.INTERNAL, "internal error"
        self.finish(tag, body, code, details, _FINISHED)

    def finish(self, tag: _Received, body: bytes | None, code: grpc.StatusCode, details: str,
               final: _Finished | _Uncounted) -> None:
        """Send initial metadata, the response (if any) and the status in one batch tagged ``final``."""
        ops = [cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS)]
        if body is not None:
            ops.append(cygrpc.SendMessageOperation(body, _NO_FLAGS))
        ops += (cygrpc.SendStatusFromServerOperation(None, code.value[0], details.encode(), _NO_FLAGS),
                cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS))
        tag.method.series.done(code.name, tag.started)  # before the caller can see the answer, as the stock path does
        if tag.event.call.start_server_batch(ops, final) != 0 and final is _FINISHED:
            self.in_flight -= 1


class FastPath:
    """Serves the unary ``IdentityService`` methods of ``server`` off their own completion queue.

    Build it after the server and before :meth:`grpc.Server.start`; call
    :meth:`start` after it, and :meth:`stop` once the server has stopped.
    """

    def __init__(self, server: grpc.Server, servicer: Any, interceptors: Sequence[grpc.ServerInterceptor],
                 threads: int = 1, pending: PendingCalls | None = None) -> None:
        """``interceptors``: the stock server's; each must be one this path can apply itself.
        ``pending``: the bound and read deadline of calls still waiting for their message."""
        reason = unavailable(server)
        if reason:
            raise RuntimeError(f"fast call path unavailable: {reason}")
        guards: list[Callable[[str, Any], None]] = []
        bounds: list[ConcurrencyLimit] = []
        rpc_metrics: RpcMetrics | None = None
        for interceptor in interceptors:
            if isinstance(interceptor, MetricsInterceptor):
                rpc_metrics = interceptor.metrics
            elif isinstance(interceptor, Guard):
                guards.append(interceptor.check)
                if isinstance(interceptor, ConcurrencyLimit):
                    bounds.append(interceptor)
            else:
                raise RuntimeError(f"fast call path cannot apply the interceptor {type(interceptor).__name__}")
        for bound in bounds:  # only once nothing can refuse: a refused path must leave no trace
            bound.counters.append(self)
        self.core_server = server._cy_server  # private: see the module docstring
        self.guards = tuple(guards)
        self.methods = [
            Method(m.name, GetMessageClass(m.input_type).FromString, getattr(servicer, m.name),
                   rpc_metrics.series(f"/{_SERVICE.full_name}/{m.name}", "unary") if rpc_metrics else _NO_SERIES)
            for m in _SERVICE.methods if not (m.client_streaming or m.server_streaming)
        ]
        for method in self.methods:
            self.core_server.register_method(method.path)
        self.queue = cygrpc.CompletionQueue()
        self.core_server.register_completion_queue(self.queue)
        self.stopping = False
        self.pending = pending
        self._loops = [_Loop(self, i) for i in range(max(1, threads))]

    @property
    def in_flight(self) -> int:
        """Calls accepted and not yet finished (read by the concurrency bound)."""
        return sum(loop.in_flight for loop in self._loops)

    def start(self) -> None:
        for loop in self._loops:
            loop.thread.start()

    def stop(self) -> None:
        """After the server's shutdown: end the polling threads."""
        self.stopping = True
        self.queue.shutdown()
        for loop in self._loops:
            loop.thread.join(timeout=10)


def defer_until_message(submit: Callable[..., futures.Future[Any]], pending: PendingCalls,
                        fn: Callable[..., Any], args: tuple[Any, ...]) -> futures.Future[Any]:
    """For the stock path's pool (:class:`~sidecar.transport.admission.CountingExecutor`): a unary
    call grpcio would submit at once (``fn(*args)``, its thread then blocking until the request
    message comes) waits in ``pending`` instead, taking no thread; ``submit`` runs it once the
    message has arrived. Runs on grpc's serving thread; reads grpcio's private ``grpc._server``.
    The returned future ends when the call does (grpc counts the call active until then)."""
    from grpc import _server

    in_pool, rpc_event, state, behavior, _thunk, deserializer, serializer = args
    call = rpc_event.call
    done: futures.Future[Any] = futures.Future()
    done.set_running_or_notify_cancel()
    method = rpc_event.call_details.method
    rpc = rpc_name(method.decode("utf-8", "replace") if isinstance(method, bytes) else str(method))
    peer = call.peer()
    ticket = pending.admit(peer.decode("utf-8", "replace") if isinstance(peer, bytes) else str(peer), rpc,
                           _canceller(call))
    if ticket is None:
        with state.condition:
            _server._abort(state, call, cygrpc.StatusCode.resource_exhausted,
                           b"server busy: too many calls waiting for their request message on this connection")
        done.set_result(None)
        return done
    receive = _server._receive_message(state, call, deserializer)

    def take() -> Any:
        with state.condition:
            request, state.request = state.request, None
            return request

    def arrived(event: Any) -> Any:
        still_pending = pending.arrived(ticket)
        result = receive(event)  # grpc's own: keeps the request, or notes the caller went away
        with state.condition:
            has_request = state.request is not None and still_pending
            if not has_request and state.client is _server._CLOSED and not state.statused:
                _server._abort(state, call, cygrpc.StatusCode.unimplemented,
                               b"a unary call requires exactly one request message")
        if not has_request:
            done.set_result(None)
            return result
        try:
            work = submit(fn, in_pool, rpc_event, state, behavior, take, deserializer, serializer)
        except RuntimeError:  # the pool is shut down
            done.set_result(None)
            return result
        work.add_done_callback(lambda _f: done.set_result(None))
        return result

    with state.condition:
        call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), arrived)
        state.due.add(_server._RECEIVE_MESSAGE_TOKEN)
    return done
