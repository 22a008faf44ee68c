"""gRPC server interceptors: the RPC metrics of the stock call path.

:class:`MetricsInterceptor` reports every call of the stock grpc server into
:class:`~sidecar.telemetry.rpc_metrics.RpcMetrics`; the fast call path
reports into the same series itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from sidecar.telemetry.rpc_metrics import RpcMetrics, Series

_B = TypeVar("_B")


def _grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    if not context.is_active():  # the caller cancelled or its deadline passed
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Count and time every call into ``metrics``. Put it first among the interceptors so it sees every refusal."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED; not a label we keep
            return None
        series = self.metrics.series(handler_call_details.method, _grpc_type(handler))
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


def _wrap_unary(behavior: Callable[[Any, grpc.ServicerContext], Any], series: Series
                ) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        series.start()
        try:
            response = behavior(request, context)
        except BaseException:
            series.done(_code(context, failed=True).name, started)
            raise
        series.done(_code(context, failed=False).name, started)
        return response

    return _same_pool(wrapped, behavior)


def _wrap_stream(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], series: Series
                 ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        series.start()
        try:
            yield from behavior(request, context)
        except GeneratorExit:  # the caller went away mid-stream
            series.done("CANCELLED", started)
            raise
        except BaseException:
            series.done(_code(context, failed=True).name, started)
            raise
        series.done(_code(context, failed=False).name, started)

    return _same_pool(wrapped, behavior)


def _same_pool(wrapped: _B, behavior: Any) -> _B:
    """Keep the thread pool a behaviour asked grpc for (health runs on pools of its own)."""
    pool = getattr(behavior, "experimental_thread_pool", None)
    if pool is not None:
        wrapped.experimental_thread_pool = pool  # type: ignore[attr-defined]  # read by grpc._server
    return wrapped


