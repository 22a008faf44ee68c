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
public API. grpcio is pinned for the image (the ``pinned`` extra) and a CI step
runs the contract tests on the newest one; :func:`unavailable` names what is
missing if a future grpcio removes it, and :func:`self_test` makes one real
call through this path on an internal Unix socket before a server uses it: any
failure there (a changed signature, a changed behaviour) is one warning and
the stock path. ``SIDECAR_CALL_PATH=stock`` serves everything through the stock
server. Once serving, any error while a call is open answers it ``INTERNAL``
and releases its in-flight slot.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.message_factory import GetMessageClass

from sidecar.telemetry.rpc_metrics import RpcMetrics
from sidecar.transport.admission import ConcurrencyLimit, Guard, PendingCalls, rpc_name
from sidecar.transport.interceptors import MetricsInterceptor
from sidecar.transport.servicer import request_parser
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
        return _text(self._call.peer())

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


def _text(value: bytes | str) -> str:
    """A peer or method name as grpc core hands it (bytes, or str in some versions), as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _canceller(call: Any) -> Callable[[], None]:
    return lambda: call.cancel(_CANCELLED, "request message not received in time")


class _NoCounter:
    def inc(self) -> None:
        pass


class _NoSeries:
    """Stands in for a metrics series when the server has no :class:`RpcMetrics`."""

    started = _NoCounter()

    def start(self) -> None:
        pass

    def done(self, code: str, started: float) -> None:
        pass


_NO_SERIES = _NoSeries()


class _Loop:
    """One polling thread with its own in-flight count, so no lock is shared.

    Any thread may take any event of the queue, so one loop can count a call in
    and another count it out: a single count can go negative, their sum is exact.

    ``gate`` is held while this loop posts an operation to the queue;
    :meth:`FastPath.stop` takes every loop's gate to shut the queue down, so no
    operation is ever posted to a shut-down queue (grpc core aborts the process).
    Only ``stop`` contends for it.
    """

    def __init__(self, fast: FastPath, index: int) -> None:
        self.fast = fast
        self.in_flight = 0
        self.gate = threading.Lock()
        self.thread = threading.Thread(target=self.run, name=f"fastpath-{index}", daemon=True)

    def request(self, method: Method) -> None:
        """Ask core for the next call of ``method`` (not once the server is shutting down)."""
        fast = self.fast
        with self.gate:
            if fast.stopping:
                return
            try:
                fast.core_server.request_registered_call(fast.queue, fast.queue, method.path, method)
            except ValueError:  # the server began shutting down meanwhile
                pass

    def run(self) -> None:
        fast = self.fast
        queue = fast.queue
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
            except Exception:  # respond and accept answer and count their own calls; this is the last net
                log.exception("fast path: unexpected error")
            event = None  # drop the call before blocking again

    def accept(self, method: Method, event: Any) -> None:
        self.request(method)  # keep the requests topped up (refused once the server shuts down)
        if not event.success:  # the request was cancelled: the server is shutting down
            return
        started = time.perf_counter()
        tag = _Received(method, event, started)
        pending = self.fast.pending
        try:
            method.series.start()
            call = event.call
            if pending is not None:
                tag.ticket = pending.admit(_text(call.peer()), method.name, _canceller(call))
                if tag.ticket is None:
                    self.finish(tag, None, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "server busy: too many calls waiting for their request message on this connection",
                                _UNCOUNTED)
                    return
            with self.gate:
                refused = (self.fast.stopping
                           or call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),), tag) != 0)
        except Exception:
            log.exception("fast path: cannot read the request of %s", method.name)
            self._abandon(tag, "INTERNAL", counted=False)
            return
        if refused:
            if pending is not None and tag.ticket is not None:
                pending.arrived(tag.ticket)
            method.series.done("CANCELLED", started)

    def respond(self, tag: _Received, event: Any) -> None:
        """The request message arrived (or the call ended): run the call, answer it.

        Only from here does the call hold a slot of the concurrency bound (``in_flight``):
        a call still waiting for its message is the :class:`PendingCalls` bound's business.
        """
        method = tag.method
        code, details, body = grpc.StatusCode.OK, "", None
        final: _Finished | _Uncounted = _UNCOUNTED
        try:
            data = event.batch_operations[0].message() if event.success else None
            pending = self.fast.pending
            if pending is not None and tag.ticket is not None and not pending.arrived(tag.ticket):
                data = None  # cancelled meanwhile (read deadline, or pushed out by newer calls)
            if data is None:  # the caller went away (or grpc refused the message, e.g. too large)
                code, details = grpc.StatusCode.CANCELLED, "no request message"
            else:
                self.in_flight += 1
                final = _FINISHED
                context = Context(tag.event)
                for guard in self.fast.guards:
                    guard(method.name, context)
                # Bytes that are no message parse to a MalformedRequest, which the servicer refuses.
                body = method.behavior(method.parse(data), context).SerializeToString()
        except Abort as exc:
            code, details = exc.code, exc.details
        except Exception:  # the servicer maps domain errors; this is a bug
            log.exception("fast path: unexpected error in %s", method.name)
            code, details, body = grpc.StatusCode.INTERNAL, "internal error", None
        self.finish(tag, body, code, details, final)

    def finish(self, tag: _Received, body: bytes | None, code: grpc.StatusCode, details: str,
               final: _Finished | _Uncounted) -> None:
        """Send initial metadata, the response (if any) and the status in one batch tagged ``final``
        (``_FINISHED`` releases the call's slot when it completes).

        If that fails (a bug of ours, a changed grpcio), the call is cancelled ``INTERNAL`` and its
        slot released at once, so no call stays open and the concurrency bound never fills up.
        """
        reported = False
        try:
            ops = [cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS)]
            if body is not None:
                ops.append(cygrpc.SendMessageOperation(body, _NO_FLAGS))
            ops += (cygrpc.SendStatusFromServerOperation(None, code.value[0], details.encode(), _NO_FLAGS),
                    cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS))
            tag.method.series.done(code.name, tag.started)  # before the caller can see the answer, as on stock
            reported = True
            with self.gate:
                posted = not self.fast.stopping and tag.event.call.start_server_batch(ops, final) == 0
            if not posted and final is _FINISHED:
                self.in_flight -= 1
        except Exception:
            log.exception("fast path: cannot answer a call of %s", tag.method.name)
            self._abandon(tag, None if reported else "INTERNAL", counted=final is _FINISHED)

    def _abandon(self, tag: _Received, code: str | None, *, counted: bool) -> None:
        """After an error of ours around an open call: end it ``INTERNAL``, free its slot (``counted``)
        and its place among the calls waiting for a message, report ``code``."""
        if counted:
            self.in_flight -= 1
        pending = self.fast.pending
        if pending is not None and tag.ticket is not None:
            pending.arrived(tag.ticket)
        try:
            tag.event.call.cancel(grpc.StatusCode.INTERNAL.value[0], b"internal error")
        except Exception:  # noqa: BLE001 - nothing more can be done for this call; its deadline ends it
            log.warning("fast path: could not cancel a call of %s", tag.method.name)
        if code is not None:
            try:
                tag.method.series.done(code, tag.started)
            except Exception:  # noqa: BLE001 - the metrics failed already; the call is answered
                pass


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
        self.core_server = server._cy_server  # private: see the module docstring
        self.guards = tuple(guards)
        self.methods = [
            Method(m.name, request_parser(GetMessageClass(m.input_type)), getattr(servicer, m.name),
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
        for bound in bounds:  # only once nothing can refuse: a refused path must leave no trace
            bound.counters.append(self)

    @property
    def in_flight(self) -> int:
        """Calls accepted and not yet finished (read by the concurrency bound)."""
        return sum(loop.in_flight for loop in self._loops)

    def start(self) -> None:
        # The first requests are posted here, before start() returns: a loop thread posting them
        # while the server is already being stopped (a drain right after start) crashed grpc core.
        for loop in self._loops:
            for _ in range(_REQUESTS):
                for method in self.methods:
                    loop.request(method)
        for loop in self._loops:
            loop.thread.start()

    def stop(self) -> None:
        """After the server's shutdown: end the polling threads."""
        for loop in self._loops:  # no loop is posting to the queue while it shuts down
            loop.gate.acquire()
        try:
            self.stopping = True
            self.queue.shutdown()
        finally:
            for loop in self._loops:
                loop.gate.release()
        for loop in self._loops:
            loop.thread.join(timeout=10)


class _Probe:
    """What :func:`self_test` serves: every method echoes what it read through :class:`Context`."""

    def __getattr__(self, name: str) -> Callable[[Any, Context], Any]:
        if name not in _SERVICE.methods_by_name:
            raise AttributeError(name)
        return self.probe

    @staticmethod
    def probe(request: Any, context: Context) -> pb.GetPublicKeyResponse:
        # Everything the guards and the servicer read off a call, through the private API.
        metadata = dict(context.invocation_metadata())
        context.peer_identities()
        context.auth_context()
        peer, remaining = context.peer(), context.time_remaining()
        if not peer.startswith("unix:") or not 0 < remaining <= 2 * _SELF_TEST_TIMEOUT:  # core rounds deadlines
            raise RuntimeError(f"call details read back wrong: peer {peer!r}, {remaining:.1f} s left")
        if not isinstance(request, pb.GetPublicKeyRequest):
            raise RuntimeError(f"request parsed as {type(request).__name__}")
        return pb.GetPublicKeyResponse(key_id=metadata.get("x-self-test", ""), bits=7)


_SELF_TEST_TIMEOUT = 10.0
#: The outcome of this process's self-test ("" passed); ``None``: not run yet.
_self_test_result: str | None = None
_self_test_lock = threading.Lock()


def self_test() -> str:
    """Make one real call through the fast path, on a throwaway server and an internal Unix socket.

    Returns why the fast path must not be used ("" when the call came back right).
    It checks behaviour, not names: registration, the completion queue, the
    request, the metadata, peer and deadline reads, the answer and the status.
    Run once per process (the grpcio in it does not change); any exception is
    a failure.
    """
    global _self_test_result
    with _self_test_lock:
        if _self_test_result is None:
            try:
                problem = _run_self_test()
            except Exception as exc:  # noqa: BLE001 - whatever a changed grpcio raises, the stock path serves
                problem = f"{type(exc).__name__}: {exc}"
            _self_test_result = f"fast call path self-test failed: {problem}" if problem else ""
        return _self_test_result


def _run_self_test() -> str:
    reason = "grpcio has no grpc._cython.cygrpc" if cygrpc is None else ""
    if reason:
        return reason
    directory = tempfile.mkdtemp(prefix="sidecar-fastpath-")  # mode 0700: nobody else can connect
    pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastpath-self-test")
    server = grpc.server(pool)
    fast: FastPath | None = None
    try:
        fast = FastPath(server, _Probe(), (), threads=1)
        address = f"unix://{directory}/self-test.sock"
        if server.add_insecure_port(address) == 0:
            return "cannot listen on an internal socket"
        server.start()
        fast.start()
        nonce = str(time.monotonic_ns())
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(f"/{_SERVICE.full_name}/GetPublicKey",
                                       request_serializer=pb.GetPublicKeyRequest.SerializeToString,
                                       response_deserializer=pb.GetPublicKeyResponse.FromString)
            response = call(pb.GetPublicKeyRequest(), timeout=_SELF_TEST_TIMEOUT, metadata=(("x-self-test", nonce),))
        if (response.key_id, response.bits) != (nonce, 7):
            return "the answer came back wrong"
        if fast.in_flight != 0 and not _settles(fast):
            return "the call was not released"
        return ""
    finally:
        server.stop(0).wait()
        if fast is not None:
            fast.stop()
        pool.shutdown(wait=False)
        shutil.rmtree(directory, ignore_errors=True)


def _settles(fast: FastPath) -> bool:
    deadline = time.monotonic() + 2
    while fast.in_flight and time.monotonic() < deadline:
        time.sleep(0.001)
    return fast.in_flight == 0


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
    ticket = pending.admit(_text(call.peer()), rpc_name(_text(method)), _canceller(call))
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
