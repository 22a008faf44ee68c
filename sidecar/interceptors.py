"""gRPC server interceptors for cross-cutting concerns.

:class:`RpcMetrics` records the go-grpc-prometheus metrics for every call:
``grpc_server_started_total``, ``grpc_server_handled_total`` and
``grpc_server_handling_seconds``, labelled ``grpc_type``, ``grpc_service``,
``grpc_method`` (and ``grpc_code`` once handled). Codes are spelled as Go's
``codes.Code.String()`` does (``OK``, ``InvalidArgument``, ...), so dashboards
and alerts written for Go services work unchanged. Only registered methods are
counted, so labels come from a fixed set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import Counter as _CounterChild
from prometheus_client.metrics import Histogram as _HistogramChild

#: grpc_server_handling_seconds buckets: 0.5 ms .. 5 s.
HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Python status code -> the ``grpc_code`` label value (Go's spelling).
CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def _grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class _Series:
    """The label children of one method, resolved once so a call does no label look-ups."""

    def __init__(self, m: RpcMetrics, grpc_type: str, service: str, method: str) -> None:
        labels = (grpc_type, service, method)
        self.started: _CounterChild = m.started.labels(*labels)
        self.seconds: _HistogramChild = m.seconds.labels(*labels)
        self.handled: dict[grpc.StatusCode, _CounterChild] = {
            code: m.handled.labels(*labels, name) for code, name in CODE_NAMES.items()
        }

    def done(self, code: grpc.StatusCode | None, started: float) -> None:
        self.handled[code or grpc.StatusCode.OK].inc()
        self.seconds.observe(time.perf_counter() - started)


def _code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    if not context.is_active():  # the caller cancelled or its deadline passed
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class RpcMetrics(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Count and time every call. Put it first among the interceptors so it sees every refusal."""

    def __init__(self, registry: CollectorRegistry, methods: Iterable[tuple[str, str, str]] = ()) -> None:
        """``methods``: ``(grpc_type, service, method)`` triples whose series start at 0."""
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                               [*labels, "grpc_code"], registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds",
                                 "Time from the start of an RPC to its status, on the server.",
                                 labels, buckets=HANDLING_BUCKETS, registry=registry)
        self._series: dict[str, _Series] = {}
        for grpc_type, service, method in methods:
            self._series[f"/{service}/{method}"] = _Series(self, grpc_type, service, method)

    def series(self, full_method: str, grpc_type: str) -> _Series:
        """The series of ``full_method`` (``/service/Method``), created on first use."""
        series = self._series.get(full_method)
        if series is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            series = self._series[full_method] = _Series(self, grpc_type, service, method)
        return series

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED; not a label we keep
            return None
        series = self.series(handler_call_details.method, _grpc_type(handler))
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, series),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, series),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, series),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, series),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _wrap_unary(behavior: Callable[[Any, grpc.ServicerContext], Any], series: _Series
                ) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        series.started.inc()
        try:
            response = behavior(request, context)
        except BaseException:
            series.done(_code(context, failed=True), started)
            raise
        series.done(_code(context, failed=False), started)
        return response

    return wrapped


def _wrap_stream(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], series: _Series
                 ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        series.started.inc()
        try:
            yield from behavior(request, context)
        except GeneratorExit:  # the caller went away mid-stream
            series.done(grpc.StatusCode.CANCELLED, started)
            raise
        except BaseException:
            series.done(_code(context, failed=True), started)
            raise
        series.done(_code(context, failed=False), started)

    return wrapped


def service_methods(*services: Any) -> list[tuple[str, str, str]]:
    """``(grpc_type, service, method)`` for every method of protobuf ``ServiceDescriptor`` objects."""
    out = []
    for svc in services:
        for m in svc.methods:
            kind = {(False, False): "unary", (True, False): "client_stream",
                    (False, True): "server_stream", (True, True): "bidi_stream"}[(m.client_streaming,
                                                                                   m.server_streaming)]
            out.append((kind, svc.full_name, m.name))
    return out
