"""Limits through a real server: message size, concurrent calls, deadlines, rate limit."""


from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from hardening_util import UUID, Recorder, wait_for

from sidecar.cli.config import Config
from sidecar.cli.serve import server_options
from sidecar.transport import admission
from sidecar.transport.runtime import ServerOptions
from sidecar.v1 import identity_pb2 as pb

HOLD_EMAIL = "hold@example.com"


class Hold(grpc.ServerInterceptor):
    """Test harness: keeps calls for HOLD_EMAIL in flight until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if getattr(request, "email", "") == HOLD_EMAIL:
                self.release.wait(20)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(behavior, handler.request_deserializer, handler.response_serializer)


class Signed(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.signatures = 0

    def issued(self, rpc: str, token: Any, identity_hash: str, resolution: Any) -> None:
        self.signatures += 1


def _server(start_server, cfg: Config, *, max_workers: int = 8, hold: Hold | None = None):
    rec = Signed()
    # No self-check: its GetPublicKey calls would share the pool these tests count.
    opts = server_options(dataclasses.replace(cfg, threads=max_workers, self_check_timeout=timedelta(0)), rec)
    if hold is not None:
        opts.interceptors.append(hold)
    s = start_server(observer=rec, opts=opts)
    return s, rec, opts.executor


def _req(email: str = "customer@synerise.com", **kw: Any) -> pb.IssueTokenRequest:
    return pb.IssueTokenRequest(email=email, uuid=UUID, **kw)


def test_request_over_16_kib_is_refused_unprocessed(start_server) -> None:
    s, rec, _ = _server(start_server, Config())
    stub = s.stub()
    big = pb.ResolveIdentityRequest(email="a@b.c", cookie_header="x=" + "y" * (16 * 1024))
    with pytest.raises(grpc.RpcError) as err:
        stub.ResolveIdentity(big, timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rec.signatures == 0
    ok = pb.ResolveIdentityRequest(email="a@b.c", cookie_header="x=" + "y" * (15 * 1024))
    assert stub.ResolveIdentity(ok, timeout=5).token.jwt
    assert rec.signatures == 1


def test_concurrency_bound_answers_resource_exhausted(start_server) -> None:
    hold = Hold()
    s, rec, executor = _server(start_server, Config(max_concurrent_calls=2), hold=hold)
    stub = s.stub()
    held = [stub.IssueToken.future(_req(HOLD_EMAIL), timeout=20) for _ in range(2)]
    wait_for(lambda: executor.in_flight == 2, what="two calls in flight")
    with pytest.raises(grpc.RpcError) as err:
        stub.IssueToken(_req(), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "busy" in (err.value.details() or "")
    assert rec.rejections == [("IssueToken", "resource_exhausted")]
    hold.release.set()
    assert all(f.result().token.jwt for f in held)
    wait_for(lambda: executor.in_flight == 0, what="calls finished")
    assert stub.IssueToken(_req(), timeout=5).token.jwt


def test_calls_cancelled_in_the_queue_do_not_leak_capacity(start_server) -> None:
    hold = Hold()
    s, rec, executor = _server(start_server, Config(max_concurrent_calls=3), max_workers=1, hold=hold)
    stub = s.stub()
    held = stub.IssueToken.future(_req(HOLD_EMAIL), timeout=20)
    wait_for(lambda: executor.in_flight == 1, what="held call")
    # These wait behind the held call in the one-thread pool and time out there.
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as err:
            stub.IssueToken(_req(), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    hold.release.set()
    assert held.result().token.jwt
    wait_for(lambda: executor.in_flight == 0, what="queue drained")
    # The expired calls did no signing work; capacity is whole again.
    assert rec.signatures == 1
    futures_ = [stub.IssueToken.future(_req(), timeout=10) for _ in range(3)]
    assert all(f.result().token.jwt for f in futures_)


def test_health_is_not_bounded(start_server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    hold = Hold()
    s, _, executor = _server(start_server, Config(max_concurrent_calls=1), hold=hold)
    held = s.stub().IssueToken.future(_req(HOLD_EMAIL), timeout=20)
    wait_for(lambda: executor.in_flight == 1, what="held call")
    health = health_pb2_grpc.HealthStub(s.channel())
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    hold.release.set()
    held.result()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_per_caller(start_server) -> None:
    clock = Clock()
    rec = Signed()
    opts = ServerOptions(interceptors=[admission.RateLimit(rate=2, burst=3, observer=rec, clock=clock)])
    s = start_server(observer=rec, opts=opts)
    tcp, unix = s.stub("tcp"), s.stub("unix")
    for _ in range(3):
        assert tcp.IssueToken(_req(), timeout=5).token.jwt
    with pytest.raises(grpc.RpcError) as err:
        tcp.IssueToken(_req(), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (err.value.details() or "")
    assert rec.rejections == [("IssueToken", "rate_limited")]
    # Another caller (the Unix socket peer) has its own bucket.
    assert unix.GetPublicKey(pb.GetPublicKeyRequest(), timeout=5).key_id
    clock.now += 1.0  # two tokens come back
    assert tcp.IssueToken(_req(), timeout=5).token.jwt
    assert tcp.IssueToken(_req(), timeout=5).token.jwt
    with pytest.raises(grpc.RpcError):
        tcp.IssueToken(_req(), timeout=5)
    assert rec.signatures == 5


def test_token_bucket_and_bounded_caller_table() -> None:
    clock = Clock()
    rl = admission.RateLimit(rate=1, burst=0, observer=Recorder(), clock=clock)
    assert rl.burst == 1
    assert rl.allow("a") and not rl.allow("a")
    clock.now += 0.5
    assert not rl.allow("a")
    clock.now += 0.5
    assert rl.allow("a")
    for i in range(admission.MAX_BUCKETS + 10):
        rl.allow(f"c{i}")
    assert len(rl._buckets) == admission.MAX_BUCKETS


def test_deadline_guard_skips_expired_calls(start_server) -> None:
    """A call whose deadline passed while queued is refused before any work."""
    hold = Hold()
    rec = Signed()
    opts = ServerOptions(max_workers=1, interceptors=[hold, admission.Deadline(rec)])
    s = start_server(observer=rec, opts=opts)
    stub = s.stub()
    held = stub.IssueToken.future(_req(HOLD_EMAIL), timeout=20)
    time.sleep(0.2)
    late = stub.IssueToken.future(_req(), timeout=0.5)
    time.sleep(0.8)
    hold.release.set()
    held.result()
    with pytest.raises(grpc.RpcError) as err:
        late.result()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rec.signatures == 1
