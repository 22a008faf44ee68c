"""The Connect protocol listener (SPEC §7): the five RPCs over plain HTTP, for backends without gRPC.

``POST /sidecar.v1.IdentityService/<Method>`` with ``application/json``
(proto3 JSON) or ``application/proto``, HTTP/1.1 or cleartext HTTP/2, served
by connectrpc's ASGI application generated from the proto
(:mod:`sidecar.v1.identity_connect`) under granian, embedded in this process
(:mod:`sidecar.transport.httpserver`). connectrpc also answers gRPC-Web on the
same paths, counted as ``protocol="grpc_web"`` (native gRPC needs HTTP trailers,
which granian's ASGI does not offer: that is the gRPC listener's job).

A call here is the call over gRPC: :class:`ConnectService` runs the very
:class:`~sidecar.transport.servicer.IdentityServicer` and guards (allow-list,
concurrency bound, rate limit, deadline) of the gRPC path through
:class:`CallContext`, which offers the part of ``grpc.ServicerContext`` they
use. So the use cases, messages, audit records and token counters are the
same; the RPC metrics go to the same ``grpc_server_*`` series with
``protocol="connect"``. ``Connect-Timeout-Ms`` is the call's deadline: the
deadline guard refuses a call whose deadline has passed, and connectrpc ends
one that runs past it with ``deadline_exceeded``.

A body that is not a valid message is ``invalid_argument`` (counted as a
rejection, reason ``malformed_request``), never a 500. ``GET /healthz``
answers ``200 SERVING`` or ``503 NOT_SERVING``; ``/grpc.health.v1.Health/Check``
is served over Connect too, from the gRPC server's health status.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format
from google.protobuf import message as pb_message
from grpc_health.v1 import health_pb2

from sidecar.service.observer import Observer
from sidecar.telemetry import correlation
from sidecar.telemetry.rpc_metrics import RpcMetrics, Series
from sidecar.transport import health
from sidecar.transport.admission import ConcurrencyLimit, Guard
from sidecar.transport.health import Health
from sidecar.transport.servicer import IdentityServicer
from sidecar.v1 import identity_connect

log = logging.getLogger("sidecar.connect")

#: gRPC status -> Connect code (the same names, Connect spells them lower case; CANCELLED is ``canceled``).
CODE_FOR: dict[grpc.StatusCode, Code] = {
    s: Code.CANCELED if s is grpc.StatusCode.CANCELLED else Code[s.name]
    for s in grpc.StatusCode if s is not grpc.StatusCode.OK
}

HEALTH_SERVICE = health.SERVICE

#: The peer of the call being served, in grpc's spelling (``ipv4:127.0.0.1:5000``, ``unix:``); set per listener.
_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("sidecar_connect_peer", default="unix:")

T = TypeVar("T")


class Abort(Exception):
    """What :meth:`CallContext.abort` raises: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def protocol_of(headers: Mapping[str, str]) -> str:
    """The ``protocol`` metric label of a request: ``connect``, ``grpc`` or ``grpc_web``."""
    ctype = headers.get("content-type", "")
    if ctype.startswith("application/grpc-web"):
        return "grpc_web"
    if ctype.startswith("application/grpc"):
        return "grpc"
    return "connect"


class CallContext:
    """The part of ``grpc.ServicerContext`` the servicer, the guards and the health servicer use."""

    __slots__ = ("_deadline", "_metadata", "_peer", "code", "details")

    def __init__(self, peer: str, timeout_ms: float | None, headers: Mapping[str, str] | None = None) -> None:
        self._peer = peer
        # The correlation headers only (traceparent, x-request-id): what the servicer reads of the metadata.
        self._metadata = tuple((k, headers[k]) for k in correlation.HEADERS if headers and k in headers)
        self._deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def is_active(self) -> bool:
        return True

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None  # the Connect listener serves plaintext: no client certificates

    def auth_context(self) -> dict[str, Sequence[bytes]]:
        return {}


def peer_of(scope: Mapping[str, Any], unix: bool) -> str:
    """grpc's spelling of the ASGI caller: what the rate limit and the allow-list key on."""
    client = scope.get("client")
    if unix:
        return "unix:"
    if not client:
        return "unknown:"
    host, port = client[0], client[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class ConnectService:
    """``sidecar.v1.IdentityService`` for connectrpc, over the gRPC servicer and guards."""

    def __init__(self, servicer: IdentityServicer, guards: Iterable[Any], rpc_metrics: RpcMetrics | None,
                 pool: futures.Executor) -> None:
        self.servicer = servicer
        self.guards: list[Guard] = [g for g in guards if isinstance(g, Guard)]
        self.metrics = rpc_metrics
        self.pool = pool
        #: Calls accepted here and not finished: the concurrency bound counts them with the gRPC paths'.
        self.in_flight = 0
        for g in self.guards:
            if isinstance(g, ConcurrencyLimit):
                g.counters.append(self)

    def series(self, service: str, method: str, ctx: RequestContext[Any, Any]) -> Series | None:
        if self.metrics is None:
            return None
        return self.metrics.series(f"/{service}/{method}", "unary", protocol_of(ctx.request_headers))

    async def run(self, rpc: str, fn: Callable[[Any, Any], T], request: Any, ctx: RequestContext[Any, Any],
                  *, service: str = "sidecar.v1.IdentityService", guarded: bool = True,
                  pool: futures.Executor | None = None) -> T:
        """Serve one call on ``pool`` (default: the call pool). ``guarded=False`` (health): no guards, and
        the call is not counted in flight, so probes never take a slot of the concurrency bound."""
        series = self.series(service, rpc, ctx)
        started = time.perf_counter()
        if series is not None:
            series.start()
        context = CallContext(_PEER.get(), ctx.timeout_ms, ctx.request_headers)
        code = "UNKNOWN"
        if guarded:
            self.in_flight += 1
        try:
            if guarded:
                for guard in self.guards:
                    guard.check(rpc, context)
            response = await asyncio.get_running_loop().run_in_executor(pool or self.pool, fn, request, context)
            if context.code is not None:  # set_code without abort: the health servicer's NOT_FOUND
                raise Abort(context.code, context.details or context.code.name.lower().replace("_", " "))
            code = "OK"
            return response
        except Abort as exc:
            code = exc.code.name
            raise ConnectError(CODE_FOR[exc.code], exc.details) from None
        except asyncio.CancelledError:  # connectrpc's deadline (Connect-Timeout-Ms), or the caller left
            remaining = context.time_remaining()
            code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
            raise
        except Exception:  # a bug outside the servicer's own net: never sent, never a bare 500
            log.exception("unexpected error in %s over Connect", rpc)
            code = "INTERNAL"
            raise ConnectError(Code.INTERNAL, "internal error") from None
        finally:
            if guarded:
                self.in_flight -= 1
            if series is not None:
                series.done(code, started)

    async def resolve_identity(self, request: Any, ctx: RequestContext[Any, Any], /) -> Any:
        return await self.run("ResolveIdentity", self.servicer.ResolveIdentity, request, ctx)

    async def issue_token(self, request: Any, ctx: RequestContext[Any, Any], /) -> Any:
        return await self.run("IssueToken", self.servicer.IssueToken, request, ctx)

    async def get_public_key(self, request: Any, ctx: RequestContext[Any, Any], /) -> Any:
        return await self.run("GetPublicKey", self.servicer.GetPublicKey, request, ctx)

    async def verify_token(self, request: Any, ctx: RequestContext[Any, Any], /) -> Any:
        return await self.run("VerifyToken", self.servicer.VerifyToken, request, ctx)

    async def evaluate_event(self, request: Any, ctx: RequestContext[Any, Any], /) -> Any:
        return await self.run("EvaluateEvent", self.servicer.EvaluateEvent, request, ctx)


class _Codec:
    """A google.protobuf codec whose decode failures are the caller's mistake: ``invalid_argument``, counted."""

    def __init__(self, inner: Any, label: str, on_malformed: Callable[[str], None]) -> None:
        self.inner = inner
        self.label = label
        self.on_malformed = on_malformed

    def name(self) -> str:
        return str(self.inner.name())

    def encode(self, message: Any) -> bytes:
        if self.label == "JSON":  # one line: connectrpc's google codec indents by two spaces
            return str(json_format.MessageToJson(message, indent=None)).encode()
        return bytes(self.inner.encode(message))

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self.inner.decode(data, message_class)
        except (json_format.ParseError, pb_message.DecodeError, ValueError, TypeError, RecursionError) as exc:
            full_name = message_class.DESCRIPTOR.full_name
            self.on_malformed(full_name)
            detail = f": {exc}" if self.label == "JSON" and str(exc) else ""
            raise ConnectError(Code.INVALID_ARGUMENT,
                               f"request: not a valid {full_name} ({self.label}){detail}"[:300]) from None


def _rpc_of_request(full_name: str) -> tuple[str, str]:
    """``sidecar.v1.IssueTokenRequest`` -> (``sidecar.v1.IdentityService``, ``IssueToken``)."""
    if full_name.startswith("grpc.health.v1."):
        return HEALTH_SERVICE, "Check"
    return "sidecar.v1.IdentityService", full_name.rpartition(".")[2].removesuffix("Request")


def codecs(observer: Observer, rpc_metrics: RpcMetrics | None) -> list[Any]:
    """Binary and JSON codecs that answer a malformed body with ``invalid_argument`` and count it."""

    def malformed(full_name: str) -> None:
        service, rpc = _rpc_of_request(full_name)
        if service != HEALTH_SERVICE:
            observer.rejected(rpc, "malformed_request")
        if rpc_metrics is not None:
            series = rpc_metrics.series(f"/{service}/{rpc}", "unary", "connect")
            series.start()
            series.done("INVALID_ARGUMENT", time.perf_counter())

    return [_Codec(google_protobuf_binary_codec(), "binary", malformed),
            _Codec(google_protobuf_json_codec(ignore_unknown_fields=True), "JSON", malformed)]


class _HealthApplication(ConnectASGIApplication[Any]):
    @property
    def path(self) -> str:
        return f"/{HEALTH_SERVICE}"


def health_application(status: Health, service: ConnectService, codec_list: list[Any],
                       read_max_bytes: int) -> ConnectASGIApplication[Any]:
    """``/grpc.health.v1.Health/Check`` over Connect, answered by the gRPC server's health servicer."""

    async def check(request: health_pb2.HealthCheckRequest, ctx: RequestContext[Any, Any]) -> Any:
        # On health's own threads, as over gRPC: a full call pool never delays a probe.
        return await service.run("Check", status.Check, request, ctx, service=HEALTH_SERVICE, guarded=False,
                                 pool=status.check_pool)

    method = MethodInfo(name="Check", service_name=HEALTH_SERVICE, input=health_pb2.HealthCheckRequest,
                        output=health_pb2.HealthCheckResponse, idempotency_level=IdempotencyLevel.NO_SIDE_EFFECTS,
                        stream_type=StreamType.UNARY)
    return _HealthApplication(service=status, endpoints=lambda _svc: {
        f"/{HEALTH_SERVICE}/Check": Endpoint.unary(method=method, function=check)},
        read_max_bytes=read_max_bytes, codecs=codec_list)


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Application:
    """The ASGI application of the Connect listener: ``/healthz``, health over Connect, ``IdentityService``."""

    def __init__(self, servicer: IdentityServicer, status: Health, guards: Iterable[Any],
                 rpc_metrics: RpcMetrics | None, pool: futures.Executor, max_message_bytes: int) -> None:
        self.status = status
        self.service = ConnectService(servicer, guards, rpc_metrics, pool)
        codec_list = codecs(servicer.observer, rpc_metrics)
        self.identity = identity_connect.IdentityServiceASGIApplication(
            self.service, read_max_bytes=max_message_bytes, codecs=codec_list)
        self.health = health_application(status, self.service, codec_list, max_message_bytes)

    def serving(self) -> bool:
        return bool(self.status.status("") == health.SERVING)

    def for_listener(self, unix: bool) -> ASGIApp:
        """The application as one listener serves it (the caller's peer spelled for that listener)."""

        async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
            if scope["type"] != "http":
                return
            _PEER.set(peer_of(scope, unix))
            path = scope["path"]
            if path == "/healthz":
                await self._healthz(scope, send)
            elif path.startswith(f"/{HEALTH_SERVICE}/"):
                await self.health(scope, receive, send)
            else:
                await self.identity(scope, receive, send)

        return app

    async def _healthz(self, scope: dict[str, Any], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed: GET /healthz\n"
        elif self.serving():
            status, body = 200, b"SERVING\n"
        else:
            status, body = 503, b"NOT_SERVING\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
