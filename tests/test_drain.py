"""Graceful drain: SIGTERM under load goes NOT_SERVING at once, lets accepted
calls finish, refuses new ones cleanly and exits 0; a second SIGTERM exits now."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hardening_util import UUID, Load, wait_for
from test_admission_limits import HOLD_EMAIL, Hold

from sidecar.transport.runtime import ServerOptions
from sidecar.v1 import identity_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_in_flight_call_completes_and_new_calls_are_refused(start_server) -> None:
    hold = Hold()
    s = start_server(opts=ServerOptions(interceptors=[hold]))
    stub = s.stub()
    watch = health_pb2_grpc.HealthStub(s.channel("unix")).Watch(health_pb2.HealthCheckRequest(), timeout=20)
    assert next(watch).status == SERVING
    held = stub.IssueToken.future(pb.IssueTokenRequest(email=HOLD_EMAIL, uuid=UUID), timeout=20)
    time.sleep(0.2)
    drain = threading.Thread(target=s.runtime.drain, args=(10,))
    drain.start()
    assert next(watch).status == NOT_SERVING  # at once, while the held call is still running
    watch.cancel()
    wait_for(lambda: _refused(stub), what="new calls refused")
    assert drain.is_alive() and not held.done()
    hold.release.set()
    assert held.result().token.jwt  # the accepted call completed
    drain.join(timeout=15)
    assert not drain.is_alive()


def _refused(stub) -> bool:
    try:
        stub.IssueToken(pb.IssueTokenRequest(email="new@example.com", uuid=UUID), timeout=2)
    except grpc.RpcError as exc:
        # Never started: UNAVAILABLE once the connection has the GOAWAY, CANCELLED for a
        # stream that raced it (grpc core cancels streams it will not dispatch).
        assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load(workers, spawn_sidecar, openssl_keys) -> None:
    p = spawn_sidecar("--key-file", str(openssl_keys / "private.pem"), "--uuid-salt", "s",
                      "--workers", str(workers), "--grace", "20s")
    load = Load([p.addr], threads=16).start()
    try:
        load.wait_calls(300)
        with grpc.insecure_channel(p.addr) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert next(watch).status == SERVING
            sent = time.monotonic()
            p.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            watch.cancel()  # a watcher that lets go does not hold the drain up
        code = p.proc.wait(timeout=25)
        took = time.monotonic() - sent
    finally:
        result = load.stop()
    _, err = p.stop()
    assert code == 0, err
    assert took < 20, f"drain took {took:.1f}s, past the grace period"
    assert len(result.ok) >= 300
    # Calls in flight at SIGTERM completed after it.
    assert any(t > sent for t in result.ok_at)
    # The only failures are calls the server never started: refused by the closed
    # listener or GOAWAY (UNAVAILABLE), or a stream that reached the closing
    # connection and was never dispatched (CANCELLED). No call failed mid-way
    # (no INTERNAL, UNKNOWN or DEADLINE_EXCEEDED).
    assert {c for _, c, _ in result.failed} <= {"UNAVAILABLE", "CANCELLED"}, result.failed[:5]
    assert "Traceback" not in err


def test_second_sigterm_exits_at_once(spawn_sidecar, openssl_keys) -> None:
    p = spawn_sidecar("--key-file", str(openssl_keys / "private.pem"), "--uuid-salt", "s", "--grace", "60s")
    with grpc.insecure_channel(p.addr) as ch:
        # An open Watch stream keeps the first drain waiting for its grace period.
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=90)
        assert next(watch).status == SERVING
        p.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        time.sleep(0.3)
        assert p.proc.poll() is None  # still draining
        started = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        code = p.proc.wait(timeout=10)
    assert time.monotonic() - started < 5
    assert code == 1
    _, err = p.stop()
    assert "second SIGTERM: exiting now" in err


def test_sigterm_taken_by_another_thread_still_drains(spawn_sidecar, openssl_keys) -> None:
    """The kernel may hand a process's SIGTERM to any thread (grpc's own, granian's): the main thread,
    waiting for the drain, still runs the handler (it used to sleep on, the signal lost)."""
    import ctypes
    import os
    from pathlib import Path

    p = spawn_sidecar("--key-file", str(openssl_keys / "private.pem"), "--uuid-salt", "s", "--grace", "2s")
    tasks = os.listdir(f"/proc/{p.proc.pid}/task")
    names = {tid: Path(f"/proc/{p.proc.pid}/task/{tid}/comm").read_text().strip() for tid in tasks}
    native = sorted(tid for tid, name in names.items() if int(tid) != p.proc.pid and name != "python")
    assert native, names  # grpc core's threads (grpc_global_tim, event_engine, ...)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(p.proc.pid, int(native[0]), signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
    code = p.proc.wait(timeout=10)
    _, err = p.stop()
    assert code == 0, err
    assert "SIGTERM: draining" in err
