"""The audit log: one line per issued or rejected token, and never a token, email or key bytes."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from sidecar.cli import config
from sidecar.domain.errors import ConfigError
from sidecar.domain.identity import identity_hash
from sidecar.domain.keys import SigningKey
from sidecar.telemetry import audit
from sidecar.v1 import identity_pb2 as pb

EMAIL = "customer@synerise.com"
COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"


def flushed(stream: io.StringIO) -> str:
    audit.flush()
    return stream.getvalue()


def audited(start_server: Callable[..., object], level: str = "INFO", fmt: str = "json") -> tuple[io.StringIO, object]:
    stream = io.StringIO()
    observer = audit.AuditLog(audit.configure(level, fmt, stream))
    running = start_server(observer=observer)
    running.sidecar.observer = observer
    return stream, running


@pytest.fixture(autouse=True)
def _restore_audit_logger():
    yield
    audit.configure("INFO", "json")


def key_fragments(key: SigningKey) -> list[str]:
    """Pieces of the private key in every form it could leak in."""
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    der = key.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    nums = key.private_key.private_numbers()
    d = nums.d.to_bytes((nums.d.bit_length() + 7) // 8, "big")
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    return [*body, "PRIVATE KEY", base64.b64encode(der[:48]).decode(), str(nums.d)[:40], str(nums.p)[:40],
            format(nums.d, "x")[:40], base64.urlsafe_b64encode(d).rstrip(b"=").decode()[:40]]


def test_one_json_line_per_issued_or_rejected_token(start_server):
    stream, s = audited(start_server)
    stub = s.stub()
    r = stub.ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE))
    t = stub.IssueToken(pb.IssueTokenRequest(email="other@example.com", uuid=COOKIE))
    with pytest.raises(grpc.RpcError):
        stub.IssueToken(pb.IssueTokenRequest(email="no-at-sign", uuid=COOKIE))
    stub.GetPublicKey(pb.GetPublicKeyRequest())  # issues nothing: no line

    records = [json.loads(line) for line in flushed(stream).splitlines()]
    assert [rec["event"] for rec in records] == ["token_issued", "token_issued", "token_rejected"]
    first, second, third = records
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first == {
        "time": first["time"], "level": "INFO", "event": "token_issued", "rpc": "ResolveIdentity",
        "outcome": "new_identity", "key_id": s.sidecar.keys.current.key_id, "uuid": COOKIE,
        "identity_hash": identity_hash(EMAIL), "expires_at": r.token.expires_at.seconds, "set_identity": True,
        "pid": first["pid"],
    }
    assert second["rpc"] == "IssueToken" and second["outcome"] == "issued"
    assert second["uuid"] == COOKIE and second["identity_hash"] == identity_hash("other@example.com")
    assert second["expires_at"] == t.token.expires_at.seconds
    assert third == {"time": third["time"], "level": "WARNING", "event": "token_rejected", "rpc": "IssueToken",
                     "reason": "email_format", "pid": third["pid"]}


def test_audit_log_holds_no_token_email_or_key_material(start_server, signing_key):
    stream, s = audited(start_server)
    stub = s.stub()
    jwts = []
    emails = [EMAIL, "josé@example.com", "Another.One+tag@shop.example"]
    for email in emails:
        jwts.append(stub.ResolveIdentity(pb.ResolveIdentityRequest(email=email)).token.jwt)
        jwts.append(stub.IssueToken(pb.IssueTokenRequest(email=email, uuid=COOKIE)).token.jwt)
    bad = ["bad email@x.com", "a" * 300 + "@x.com"]
    for email in bad:
        with pytest.raises(grpc.RpcError):
            stub.IssueToken(pb.IssueTokenRequest(email=email, uuid=COOKIE))
    s.sidecar.observer.key_activated(signing_key)
    s.sidecar.observer.key_reload("failure")
    text = flushed(stream)
    assert text.count("\n") == 2 * len(emails) + len(bad) + 2
    for email in emails + bad:
        assert email not in text
        assert email.split("@")[0] not in text
    for jwt in jwts:
        for part in jwt.split("."):
            assert part not in text
    for fragment in key_fragments(signing_key):
        assert fragment not in text


def test_text_format_for_development(start_server):
    stream, s = audited(start_server, fmt="text")
    s.stub().ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE))
    line = flushed(stream).strip()
    assert re.fullmatch(
        r"\S+Z INFO token_issued rpc=ResolveIdentity outcome=new_identity key_id=\S+ "
        rf"uuid={COOKIE} identity_hash={identity_hash(EMAIL)} expires_at=\d+ set_identity=True pid=\d+", line), line
    assert EMAIL not in line


@pytest.mark.parametrize(("level", "events"), [
    ("INFO", ["token_issued", "token_rejected"]),
    ("WARNING", ["token_rejected"]),
    ("OFF", []),
])
def test_level_selects_records(start_server, level, events):
    stream, s = audited(start_server, level=level)
    s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE))
    with pytest.raises(grpc.RpcError):
        s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid="nope"))
    assert [json.loads(line)["event"] for line in flushed(stream).splitlines()] == events


def test_audit_settings_from_environment_and_flags():
    cfg = config.from_sources({}, {"SIDECAR_AUDIT_LEVEL": "warning", "SIDECAR_AUDIT_FORMAT": "TEXT"})
    assert (cfg.audit_level, cfg.audit_format) == ("WARNING", "text")
    cfg = config.from_sources({"audit_level": "off"}, {"SIDECAR_AUDIT_LEVEL": "INFO"})
    assert cfg.audit_level == "OFF"
    assert config.from_sources({}, {}).audit_format == "json"
    with pytest.raises(ConfigError, match=r"^SIDECAR_AUDIT_LEVEL: must be"):
        config.from_sources({}, {"SIDECAR_AUDIT_LEVEL": "loud"})
    with pytest.raises(ConfigError, match=r"^SIDECAR_AUDIT_FORMAT: must be json or text"):
        config.from_sources({}, {"SIDECAR_AUDIT_FORMAT": "xml"})


def test_spawned_sidecar_writes_audit_lines_to_stderr(spawn_sidecar):
    p = spawn_sidecar(env={"SIDECAR_AUDIT_FORMAT": "json"})
    with grpc.insecure_channel(p.addr) as ch:
        from sidecar.v1 import identity_pb2_grpc as pb_grpc

        r = pb_grpc.IdentityServiceStub(ch).ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL))
    code, err = p.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    issued = [rec for rec in lines if rec["event"] == "token_issued"]
    assert len(issued) == 1 and issued[0]["uuid"] == r.uuid and issued[0]["key_id"] == r.token.key_id
    assert [rec["event"] for rec in lines if rec["event"] == "key_activated"] == ["key_activated"]
    assert EMAIL not in err and r.token.jwt.split(".")[2] not in err


def test_a_broken_handler_never_breaks_a_call(start_server):
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("disk full")

    observer = audit.AuditLog(audit.configure("INFO", "json", Broken()))
    s = start_server(observer=observer)
    s.sidecar.observer = observer
    import logging

    logging.raiseExceptions, saved = False, logging.raiseExceptions
    try:
        assert s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE)).token.jwt
    finally:
        logging.raiseExceptions = saved


class CountingStream(io.StringIO):
    """Counts write() calls, to see batching."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def test_lines_are_written_in_batches_by_the_writer_thread_without_a_flush():
    import time

    stream = CountingStream()
    writer = audit.configure("INFO", "json", stream)
    log = audit.AuditLog(writer)
    for n in range(200):
        log.rejected("IssueToken", f"reason{n}")
    deadline = time.monotonic() + 5
    while stream.getvalue().count("\n") < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [rec["reason"] for rec in lines] == [f"reason{n}" for n in range(200)]  # all of them, in order
    assert stream.writes < 20  # batches, not a write per record


def test_a_burst_past_the_queue_bound_is_dropped_and_counted_never_written_by_the_caller():
    stream = CountingStream()
    writer = audit.AuditWriter("INFO", "text", stream, interval=None)  # no writer thread: only flush writes
    counted: list[tuple[str, int]] = []
    writer.on_drop = lambda reason, n: counted.append((reason, n))
    log = audit.AuditLog(writer)
    for _ in range(audit.MAX_PENDING + 10):
        log.rejected("IssueToken", "email_format")
    assert stream.writes == 0  # the caller never waits for the sink
    assert writer.dropped["queue_full"] == 10
    assert counted == [("queue_full", 1)] * 10
    writer.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == audit.MAX_PENDING + 1  # and one warning that records were dropped
    assert "records dropped" in lines[-1] and "WARNING" in lines[-1]


def test_a_closed_or_failing_sink_is_survived_and_counted():
    import io

    closed = io.StringIO()
    closed.close()
    writer = audit.AuditWriter("INFO", "json", closed, interval=None)
    audit.AuditLog(writer).rejected("IssueToken", "email_format")
    assert writer.flush()
    assert writer.dropped["closed"] == 1

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(28, "No space left on device")

    writer = audit.AuditWriter("INFO", "json", Full(), interval=None)
    audit.AuditLog(writer).rejected("IssueToken", "email_format")
    assert writer.flush()
    assert writer.dropped["write_failed"] >= 1


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_own_log_lines_share_the_audit_format(fmt, spawn_sidecar):
    """Start-up, key and drain lines are audit-format records too: one parser reads all of stderr."""
    p = spawn_sidecar(env={"SIDECAR_AUDIT_FORMAT": fmt})
    with grpc.insecure_channel(p.addr) as ch:
        from sidecar.v1 import identity_pb2_grpc as pb_grpc

        pb_grpc.IdentityServiceStub(ch).ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL))
    code, err = p.stop()
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line, not just the audit ones
        logs = [r for r in records if r["event"] == "log"]
        assert all(set(r) >= {"time", "level", "logger", "message", "pid"} for r in logs)
        messages = [r["message"] for r in logs]
    else:
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ \S+ ", line) for line in lines), err
        messages = [line for line in lines if " log " in line]
    assert any("DEVELOPMENT MODE" in m for m in messages)
    assert any("drained" in m for m in messages)
    assert any("token_issued" in line for line in lines)
