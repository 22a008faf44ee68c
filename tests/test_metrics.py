"""Metrics read from a fresh CollectorRegistry after calls through a real server,
and the summed /metrics of a real pre-forked ``sidecar serve --workers 2``."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__
from sidecar.domain import keys, validation
from sidecar.domain.errors import ConfigError
from sidecar.domain.identity import customer_uuid, identity_hash
from sidecar.telemetry.metrics import REASONS, TOKEN_RPCS, Metrics, MetricsServer
from sidecar.telemetry.rpc_metrics import CODE_NAMES, RpcMetrics, service_methods
from sidecar.transport.interceptors import MetricsInterceptor
from sidecar.transport.runtime import ServerOptions
from sidecar.transport.servicer import SERVICE_NAME
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import SALT, free_port

EMAIL = "customer@synerise.com"
COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"
SERVICES = (pb.DESCRIPTOR.services_by_name["IdentityService"], health_pb2.DESCRIPTOR.services_by_name["Health"])


def instrumented(start_server: Callable[..., object]) -> tuple[CollectorRegistry, object]:
    reg = CollectorRegistry()
    opts = ServerOptions(interceptors=[MetricsInterceptor(RpcMetrics(reg, service_methods(*SERVICES)))])
    metrics = Metrics(reg)
    running = start_server(observer=metrics, opts=opts)
    running.sidecar.observer = metrics  # the fixture gives the observer to the servicer only; signing reports here
    return reg, running


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def rpc_labels(method: str, code: str | None = None) -> dict[str, str]:
    labels = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": method, "protocol": "grpc"}
    if code is not None:
        labels["grpc_code"] = code
    return labels


def test_known_series_start_at_zero(start_server):
    reg, _ = instrumented(start_server)
    for rpc in TOKEN_RPCS:
        assert value(reg, "sidecar_tokens_issued_total", rpc=rpc) == 0
        for reason in REASONS:
            assert value(reg, "sidecar_token_rejections_total", rpc=rpc, reason=reason) == 0, (rpc, reason)
    for outcome in ("new_identity", "same_identity", "switched_identity"):
        assert value(reg, "sidecar_identity_resolutions_total", outcome=outcome) == 0
    for result in ("success", "failure"):
        assert value(reg, "sidecar_key_reloads_total", result=result) == 0
    for result in ("hit", "miss"):
        assert value(reg, "sidecar_token_cache_requests_total", result=result) == 0
    assert value(reg, "sidecar_build_info", version=__version__) == 1
    assert value(reg, "sidecar_token_signing_seconds_count") == 0
    for method in ("ResolveIdentity", "IssueToken", "GetPublicKey"):
        assert value(reg, "grpc_server_started_total", **rpc_labels(method)) == 0
        assert value(reg, "grpc_server_handling_seconds_count", **rpc_labels(method)) == 0
        for code in CODE_NAMES.values():
            assert value(reg, "grpc_server_handled_total", **rpc_labels(method, code)) == 0


def test_reason_set_covers_every_validation_rule_and_later_issues():
    assert set(validation.REASONS) <= set(REASONS)
    assert {"no_key", "internal", "unauthenticated", "rate_limited", "resource_exhausted",
            "message_too_large", "deadline_exceeded"} <= set(REASONS)
    assert len(set(REASONS)) == len(REASONS)


#: One bad request per validation rule, through the real server, and the reason it must count.
BAD_REQUESTS: list[tuple[str, object, str]] = [
    ("IssueToken", pb.IssueTokenRequest(email="", uuid=COOKIE), "email_missing"),
    ("IssueToken", pb.IssueTokenRequest(email="a" * 250 + "@b.com", uuid=COOKIE), "email_too_long"),
    ("IssueToken", pb.IssueTokenRequest(email="no-at-sign", uuid=COOKIE), "email_format"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=""), "uuid_missing"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid="nope"), "uuid_format"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, identity_hash="x1"), "identity_hash_format"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, ttl=duration_pb2.Duration(seconds=-5)),
     "ttl_not_positive"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, ttl=duration_pb2.Duration(nanos=5000)),
     "ttl_too_short"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE, ttl=duration_pb2.Duration(seconds=7 * 86400)),
     "ttl_too_long"),
]


def test_counts_after_calls_through_a_real_server(start_server):
    reg, s = instrumented(start_server)
    stub = s.stub()
    other = str(customer_uuid("someone@else.com", SALT))
    stub.ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE))  # new
    stub.ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE,
                                                   identity_hash=identity_hash(EMAIL)))  # same
    stub.ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=other,
                                                   identity_hash=identity_hash("someone@else.com")))  # switched
    s.stub("unix").ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL))  # new, over the Unix socket
    for _ in range(2):
        stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE))
    stub.GetPublicKey(pb.GetPublicKeyRequest())
    for rpc, request, reason in BAD_REQUESTS:
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, rpc)(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, reason

    assert value(reg, "sidecar_tokens_issued_total", rpc="ResolveIdentity") == 4
    assert value(reg, "sidecar_tokens_issued_total", rpc="IssueToken") == 2
    assert value(reg, "sidecar_identity_resolutions_total", outcome="new_identity") == 2
    assert value(reg, "sidecar_identity_resolutions_total", outcome="same_identity") == 1
    assert value(reg, "sidecar_identity_resolutions_total", outcome="switched_identity") == 1
    for rpc, _, reason in BAD_REQUESTS:
        assert value(reg, "sidecar_token_rejections_total", rpc=rpc, reason=reason) == 1, reason
    total_rejections = sum(s.value for fam in text_string_to_metric_families(generate_latest(reg).decode())
                           if fam.name == "sidecar_token_rejections" for s in fam.samples)
    assert total_rejections == len(BAD_REQUESTS)
    assert value(reg, "sidecar_token_signing_seconds_count") == 6

    bad_resolve = sum(1 for rpc, _, _ in BAD_REQUESTS if rpc == "ResolveIdentity")
    bad_issue = len(BAD_REQUESTS) - bad_resolve
    assert value(reg, "grpc_server_started_total", **rpc_labels("ResolveIdentity")) == 4 + bad_resolve
    assert value(reg, "grpc_server_handled_total", **rpc_labels("ResolveIdentity", "OK")) == 4
    assert value(reg, "grpc_server_handled_total", **rpc_labels("ResolveIdentity", "InvalidArgument")) == bad_resolve
    assert value(reg, "grpc_server_started_total", **rpc_labels("IssueToken")) == 2 + bad_issue
    assert value(reg, "grpc_server_handled_total", **rpc_labels("IssueToken", "OK")) == 2
    assert value(reg, "grpc_server_handled_total", **rpc_labels("IssueToken", "InvalidArgument")) == bad_issue
    assert value(reg, "grpc_server_handled_total", **rpc_labels("GetPublicKey", "OK")) == 1
    assert value(reg, "grpc_server_handling_seconds_count", **rpc_labels("IssueToken")) == 2 + bad_issue
    assert value(reg, "grpc_server_handling_seconds_bucket", le="+Inf", **rpc_labels("IssueToken")) == 2 + bad_issue


def test_labels_never_carry_an_email_uuid_or_token(start_server):
    reg, s = instrumented(start_server)
    r = s.stub().ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE))
    with pytest.raises(grpc.RpcError):
        s.stub().IssueToken(pb.IssueTokenRequest(email="weird\u0000@x", uuid=COOKIE))
    text = generate_latest(reg).decode()
    for secret in (EMAIL, "weird", COOKIE, r.uuid, r.token.jwt, r.token.jwt.split(".")[2], r.identity_hash):
        assert secret not in text


def test_unavailable_and_unknown_codes_are_counted(start_server):
    reg = CollectorRegistry()
    s = start_server(key=None, observer=Metrics(reg),
                     opts=ServerOptions(interceptors=[MetricsInterceptor(RpcMetrics(reg, service_methods(*SERVICES)))]))
    with pytest.raises(grpc.RpcError) as err:
        s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert value(reg, "sidecar_token_rejections_total", rpc="IssueToken", reason="no_key") == 1
    assert value(reg, "grpc_server_handled_total", **rpc_labels("IssueToken", "Unavailable")) == 1


def test_unknown_methods_add_no_series_and_health_is_counted(start_server):
    reg, s = instrumented(start_server)
    before = generate_latest(reg)
    with pytest.raises(grpc.RpcError) as err:
        s.channel().unary_unary("/sidecar.v1.IdentityService/NoSuchMethod")(b"")
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert generate_latest(reg) == before
    health_pb2_grpc.HealthStub(s.channel()).Check(health_pb2.HealthCheckRequest())
    labels = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check",
              "protocol": "grpc"}
    assert value(reg, "grpc_server_handled_total", grpc_code="OK", **labels) == 1


def test_server_stream_cancelled_by_the_caller_counts_as_canceled(start_server):
    reg, s = instrumented(start_server)
    stream = health_pb2_grpc.HealthStub(s.channel()).Watch(health_pb2.HealthCheckRequest())
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()
    labels = {"grpc_type": "server_stream", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Watch",
              "protocol": "grpc"}
    deadline = time.monotonic() + 10
    while value(reg, "grpc_server_handled_total", grpc_code="Canceled", **labels) != 1:
        assert time.monotonic() < deadline, generate_latest(reg).decode()
        time.sleep(0.05)
    assert value(reg, "grpc_server_started_total", **labels) == 1


def test_key_info_follows_the_active_key(signing_key):
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.key_activated(signing_key)
    assert value(reg, "sidecar_signing_key_info", key_id=signing_key.key_id, bits="2048") == 1
    assert value(reg, "sidecar_signing_key_loaded_timestamp_seconds") == signing_key.loaded_at
    new = replace(keys.generate(), loaded_at=signing_key.loaded_at + 60)
    m.key_reload("success")
    m.key_activated(new)
    assert value(reg, "sidecar_signing_key_info", key_id=new.key_id, bits="2048") == 1
    assert value(reg, "sidecar_signing_key_info", key_id=signing_key.key_id, bits="2048") is None
    assert value(reg, "sidecar_signing_key_loaded_timestamp_seconds") == new.loaded_at
    m.key_reload("failure")
    m.key_reload("exploded")  # outside the fixed set
    assert value(reg, "sidecar_key_reloads_total", result="success") == 1
    assert value(reg, "sidecar_key_reloads_total", result="failure") == 1
    assert value(reg, "sidecar_key_reloads_total", result="other") == 1


def test_label_values_stay_in_fixed_sets():
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.rejected("IssueToken", "customer@synerise.com")
    m.rejected("/evil/Rpc", "email_format")
    m.event_decision("accepted", "anonymous_allowed")
    m.event_decision("Customer@Synerise.com", "x y")
    m.token_cache(True)
    m.token_cache(False)
    m.token_cache(False)
    assert value(reg, "sidecar_token_rejections_total", rpc="IssueToken", reason="other") == 1
    assert value(reg, "sidecar_token_rejections_total", rpc="other", reason="email_format") == 1
    assert value(reg, "sidecar_event_decisions_total", decision="accepted", rule="anonymous_allowed") == 1
    assert value(reg, "sidecar_event_decisions_total", decision="other", rule="other") == 1
    assert value(reg, "sidecar_token_cache_requests_total", result="hit") == 1
    assert value(reg, "sidecar_token_cache_requests_total", result="miss") == 2
    assert "Synerise" not in generate_latest(reg).decode()


def test_metrics_server_serves_the_registry_and_refuses_a_busy_port():
    reg = CollectorRegistry()
    Metrics(reg).rejected("IssueToken", "uuid_format")
    server = MetricsServer("127.0.0.1:0", reg)
    try:
        body = urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5).read().decode()
        assert 'sidecar_token_rejections_total{reason="uuid_format",rpc="IssueToken"} 1.0' in body
        with pytest.raises(ConfigError, match="SIDECAR_METRICS_ADDR: cannot listen on"):
            MetricsServer(server.address, CollectorRegistry())
    finally:
        server.close()


# --- across processes -----------------------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(addr: str) -> Samples:
    body = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def traffic(addr: str, channels: int) -> tuple[int, int]:
    """One issued and one rejected call on each of ``channels`` fresh connections."""
    for _ in range(channels):
        with grpc.insecure_channel(addr) as ch:
            stub = pb_grpc.IdentityServiceStub(ch)
            # wait_for_ready: a connection reset by a worker just killed is retried, not failed
            stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE), timeout=10, wait_for_ready=True)
            with pytest.raises(grpc.RpcError) as err:
                stub.IssueToken(pb.IssueTokenRequest(email="bad", uuid=COOKIE), timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return channels, channels


def audit_pids(stderr_path: Path) -> set[int]:
    pids = set()
    for line in stderr_path.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == "token_issued":
                pids.add(rec["pid"])
    return pids


def test_two_workers_report_summed_metrics(tmp_path, signing_key, openssl_keys):
    """``--workers 2``: the master's /metrics is the sum over both workers, survives a worker dying,
    and keeps one active-key series; the private multiprocess directory is removed at exit."""
    import subprocess

    from tests.conftest import ROOT, sidecar_cmd, wait_serving

    grpc_addr, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "PROMETHEUS_"))}
    env.update(SIDECAR_LISTEN=grpc_addr, SIDECAR_METRICS_ADDR=metrics_addr, SIDECAR_WORKERS="2",
               SIDECAR_KEY_FILE=str(openssl_keys / "private.pem"), SIDECAR_UUID_SALT=SALT,
               PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    err = tmp_path / "stderr"
    with err.open("wb") as err_file:
        proc = subprocess.Popen(sidecar_cmd("serve"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        wait_serving(grpc_addr, proc)
        issued = rejected = 0
        deadline = time.monotonic() + 30
        while len(audit_pids(err)) < 2:  # worker 1 may start listening a moment after worker 0
            assert time.monotonic() < deadline, f"connections did not reach both workers: {audit_pids(err)}"
            more_issued, more_rejected = traffic(grpc_addr, 8)
            issued, rejected = issued + more_issued, rejected + more_rejected
        pids = audit_pids(err)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("sidecar-metrics-")]

        def check(samples: Samples, issued: int, rejected: int) -> None:
            assert sample(samples, "sidecar_tokens_issued_total", rpc="IssueToken") == issued
            assert sample(samples, "sidecar_token_rejections_total",
                          rpc="IssueToken", reason="email_format") == rejected
            assert sample(samples, "sidecar_token_rejections_total", rpc="IssueToken", reason="uuid_format") == 0
            assert sample(samples, "grpc_server_handled_total", **rpc_labels("IssueToken", "OK")) == issued
            assert sample(samples, "grpc_server_handled_total",
                          **rpc_labels("IssueToken", "InvalidArgument")) == rejected
            assert sample(samples, "grpc_server_started_total", **rpc_labels("IssueToken")) == issued + rejected
            # Every token was either signed or reused from a worker's token cache.
            hits = sample(samples, "sidecar_token_cache_requests_total", result="hit")
            assert sample(samples, "sidecar_token_signing_seconds_count") + hits == issued
            assert sample(samples, "sidecar_token_cache_requests_total", result="miss") == \
                sample(samples, "sidecar_token_signing_seconds_count")
            # gauges: one series per label set, not one per worker
            assert series(samples, "sidecar_signing_key_info") == {
                (("bits", "2048"), ("key_id", signing_key.key_id)): 1.0}
            assert series(samples, "sidecar_build_info") == {(("version", __version__),): 1.0}
            assert sample(samples, "sidecar_signing_key_loaded_timestamp_seconds") is not None

        check(scrape(metrics_addr), issued, rejected)

        # A worker dies: the supervisor restarts it; what it counted stays in the sum.
        killed, survivor = sorted(pids)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(audit_pids(err) - {killed}) < 2:
            assert time.monotonic() < deadline, "no traffic reached a restarted worker"
            more_issued, more_rejected = traffic(grpc_addr, 4)
            issued, rejected = issued + more_issued, rejected + more_rejected
        check(scrape(metrics_addr), issued, rejected)
        # the dead worker's live gauges are gone, its counters kept
        mp_dir = next(p for p in tmp_path.iterdir() if p.name.startswith("sidecar-metrics-"))
        files = {p.name for p in mp_dir.iterdir()}
        assert f"gauge_livemax_{killed}.db" not in files, files
        assert f"counter_{killed}.db" in files, files
        assert f"gauge_livemax_{survivor}.db" in files, files
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, err.read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("sidecar-metrics-")]
