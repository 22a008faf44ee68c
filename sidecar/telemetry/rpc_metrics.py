"""The go-grpc-prometheus RPC metrics, whichever transport carried the call.

``grpc_server_started_total``, ``grpc_server_handled_total`` and
``grpc_server_handling_seconds``, labelled ``grpc_type``, ``grpc_service``,
``grpc_method``, ``protocol`` (``grpc``, or ``connect`` / ``grpc_web`` for the
HTTP listener: a call is a call, whichever protocol) and ``grpc_code`` once handled. Codes are spelled as Go's
``codes.Code.String()`` does (``OK``, ``InvalidArgument``, ...), so dashboards
and alerts written for Go services work unchanged. Only registered methods are
counted, so labels come from a fixed set. The transports report into a
:class:`Series` per method (:mod:`sidecar.transport.interceptors`,
:mod:`sidecar.transport.fastpath`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import Counter as _CounterChild
from prometheus_client.metrics import Gauge as _GaugeChild
from prometheus_client.metrics import Histogram as _HistogramChild

#: grpc_server_handling_seconds buckets: 0.5 ms .. 5 s.
HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Canonical status code name (``grpc.StatusCode.X.name``) -> the ``grpc_code`` label value (Go's spelling).
CODE_NAMES: dict[str, str] = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}


class Series:
    """The label children of one method, resolved once so a call does no label look-ups."""

    def __init__(self, m: RpcMetrics, grpc_type: str, service: str, method: str, protocol: str = "grpc") -> None:
        labels = (grpc_type, service, method, protocol)
        self.started: _CounterChild = m.started.labels(*labels)
        self.in_flight: _GaugeChild = m.in_flight
        self.seconds: _HistogramChild = m.seconds.labels(*labels)
        self.handled: dict[str, _CounterChild] = {
            code: m.handled.labels(*labels, name) for code, name in CODE_NAMES.items()
        }

    def start(self) -> None:
        """A call of this method started (answer it with :meth:`done`)."""
        self.started.inc()
        self.in_flight.inc()

    def done(self, code: str, started: float) -> None:
        """The call ended with status ``code`` (canonical name); ``started`` is its ``perf_counter()``."""
        self.in_flight.dec()
        self.handled[code].inc()
        self.seconds.observe(time.perf_counter() - started)


class RpcMetrics:
    """The three RPC metric families on ``registry``, with a :class:`Series` per method."""

    def __init__(self, registry: CollectorRegistry, methods: Iterable[tuple[str, str, str]] = (),
                 protocols: Iterable[str] = ("grpc",)) -> None:
        """``methods``: ``(grpc_type, service, method)`` triples whose series start at 0 for each of ``protocols``."""
        labels = ["grpc_type", "grpc_service", "grpc_method", "protocol"]
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                               [*labels, "grpc_code"], registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds",
                                 "Time from the start of an RPC to its status, on the server.",
                                 labels, buckets=HANDLING_BUCKETS, registry=registry)
        # One series for the process (the sum over workers with --workers): how many calls
        # the sidecar is working on, the figure the admission limits act on.
        self.in_flight = Gauge("sidecar_rpcs_in_flight", "RPCs started and not yet answered.",
                               multiprocess_mode="livesum", registry=registry)
        self._series: dict[tuple[str, str], Series] = {}
        for protocol in protocols:
            for grpc_type, service, method in methods:
                self._series[f"/{service}/{method}", protocol] = Series(self, grpc_type, service, method, protocol)

    def series(self, full_method: str, grpc_type: str, protocol: str = "grpc") -> Series:
        """The series of ``full_method`` (``/service/Method``) over ``protocol``, created on first use."""
        series = self._series.get((full_method, protocol))
        if series is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            series = self._series[full_method, protocol] = Series(self, grpc_type, service, method, protocol)
        return series


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
