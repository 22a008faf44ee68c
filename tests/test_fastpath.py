"""The fast call path (sidecar.fastpath): which path serves a call, and how it behaves at the edges.

The contract tests (test_servicer.py) run on both paths; here are the things
only the fast path can get wrong: it really serves IdentityService, falls back
to the stock path when it cannot apply an interceptor, survives callers that
go away, refuses bytes that are not a request exactly as stock grpc does, and
ends its threads on drain.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from sidecar.domain import keys
from sidecar.domain.tokens import Token
from sidecar.service.observer import Observer
from sidecar.transport import admission
from sidecar.transport.runtime import ServerOptions
from sidecar.v1 import identity_pb2 as pb

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
ISSUE = "/sidecar.v1.IdentityService/IssueToken"


class Threads(Observer):
    """Records the thread each token was issued on; can hold the caller for a while."""

    def __init__(self, delay: float = 0.0) -> None:
        self.names: list[str] = []
        self.delay = delay

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: object) -> None:
        self.names.append(threading.current_thread().name)
        time.sleep(self.delay)


class Foreign(grpc.ServerInterceptor):  # type: ignore[misc]
    """An interceptor the fast path knows nothing about."""

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        return continuation(details)


@pytest.mark.parametrize("call_path, thread_prefix", [("fast", "fastpath-"), ("stock", "rpc")])
def test_each_path_serves_identity_service_on_its_own_threads(start_server, call_path, thread_prefix,
                                                              signing_key: keys.SigningKey) -> None:
    seen = Threads()
    s = start_server(observer=seen)
    assert (s.runtime.fast is not None) is (call_path == "fast")
    for transport in ("tcp", "unix"):
        stub = s.stub(transport)
        token = stub.IssueToken(pb.IssueTokenRequest(email="a@b.example", uuid=UUID), timeout=10).token
        claims = jose_jwt.decode(token.jwt, RSAKey.import_key(signing_key.public_pem)).claims
        assert claims["uuid"] == UUID
        stub.ResolveIdentity(pb.ResolveIdentityRequest(email="a@b.example"), timeout=10)
    assert len(seen.names) == 4
    assert all(name.startswith(thread_prefix) for name in seen.names), seen.names


def test_an_interceptor_it_cannot_apply_falls_back_to_the_stock_path(start_server, caplog) -> None:
    seen = Threads()
    with caplog.at_level(logging.WARNING, logger="sidecar.runtime"):
        s = start_server(observer=seen, opts=ServerOptions(interceptors=[Foreign()]))
    assert s.runtime.fast is None
    assert "cannot apply the interceptor Foreign" in caplog.text
    s.stub().IssueToken(pb.IssueTokenRequest(email="a@b.example", uuid=UUID), timeout=10)
    assert seen.names and seen.names[0].startswith("rpc")


def test_a_caller_that_gives_up_leaves_the_path_serving(start_server) -> None:
    seen = Threads(delay=0.3)
    s = start_server(observer=seen)
    stub = s.stub()
    with pytest.raises(grpc.RpcError) as err:
        stub.IssueToken(pb.IssueTokenRequest(email="slow@b.example", uuid=UUID), timeout=0.05)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    seen.delay = 0
    for n in range(20):
        stub.IssueToken(pb.IssueTokenRequest(email=f"u{n}@b.example", uuid=UUID), timeout=10)
    assert s.runtime.fast is not None
    deadline = time.monotonic() + 5
    while s.runtime.fast.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.runtime.fast.in_flight == 0


@pytest.mark.parametrize("call_path", ["fast", "stock"])
def test_bytes_that_are_not_a_request_get_the_same_answer_on_both_paths(start_server, call_path) -> None:
    s = start_server()
    raw = s.channel().unary_unary(ISSUE)  # no serializers: bytes go out as they are
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # field 1, a length far past the end
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "request: is not a valid sidecar.v1.IssueTokenRequest message"


class Rejections(Observer):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def rejected(self, rpc: str, reason: str) -> None:
        self.reasons.append(reason)


@pytest.mark.parametrize("call_path", ["fast", "stock"])
def test_deadline_guard_applies_on_both_paths(start_server, call_path) -> None:
    """Calls whose deadline passed while they waited behind slow ones are refused, counted, never signed."""
    seen, refused = Threads(delay=0.4), Rejections()
    s = start_server(observer=seen, opts=ServerOptions(max_workers=2, interceptors=[admission.Deadline(refused)]))
    assert (s.runtime.fast is not None) is (call_path == "fast")
    stub = s.stub()
    slow = [stub.IssueToken.future(pb.IssueTokenRequest(email=f"s{n}@b.example", uuid=UUID), timeout=10)
            for n in range(2)]  # both threads busy for 0.4 s
    time.sleep(0.1)
    waiting = [stub.IssueToken.future(pb.IssueTokenRequest(email=f"w{n}@b.example", uuid=UUID), timeout=0.15)
               for n in range(4)]
    for f in slow:
        f.result()
    assert all(f.exception() is not None and f.exception().code() is grpc.StatusCode.DEADLINE_EXCEEDED
               for f in waiting)
    time.sleep(0.5)  # let the server get to the waiting calls
    assert len(seen.names) == 2  # only the slow calls were signed
    if call_path == "fast":  # the guard refuses and counts them
        assert refused.reasons == ["deadline_exceeded"] * 4
    else:  # grpc's pool drops a call cancelled while queued before any interceptor runs
        assert set(refused.reasons) <= {"deadline_exceeded"}


def test_drain_ends_the_fast_path_threads(start_server) -> None:
    s = start_server()
    s.stub().IssueToken(pb.IssueTokenRequest(email="a@b.example", uuid=UUID), timeout=10)
    assert s.runtime.fast is not None
    threads = [t for t in threading.enumerate() if t.name.startswith("fastpath-")]
    assert threads
    s.runtime.drain(1)
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()


def test_concurrency_bound_counts_fast_path_calls(start_server) -> None:
    """With a bound of 1, a second call accepted while the first still runs is refused and counted."""
    seen, refused = Threads(delay=0.5), Rejections()
    bound = admission.ConcurrencyLimit(1, admission.CountingExecutor(2), refused)
    s = start_server(observer=seen, opts=ServerOptions(interceptors=[bound]))
    assert s.runtime.fast is not None and s.runtime.fast in bound.counters
    stub = s.stub()
    first = stub.IssueToken.future(pb.IssueTokenRequest(email="first@b.example", uuid=UUID), timeout=10)
    time.sleep(0.2)  # the first call holds one fast-path thread; the other takes the second call
    with pytest.raises(grpc.RpcError) as err:
        stub.IssueToken(pb.IssueTokenRequest(email="second@b.example", uuid=UUID), timeout=10)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 1 calls at once" in (err.value.details() or "")
    assert first.result().token.jwt
    assert refused.reasons == ["resource_exhausted"] and len(seen.names) == 1
    stub.IssueToken(pb.IssueTokenRequest(email="third@b.example", uuid=UUID), timeout=10)  # room again


def test_the_self_test_passes_on_this_grpcio() -> None:
    from sidecar.transport import fastpath

    assert fastpath._run_self_test() == ""
