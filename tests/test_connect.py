"""The Connect protocol listener (SPEC §7) against real ``sidecar serve`` processes, over TCP and a Unix socket.

Plain HTTP clients only (http.client, curl): what a PHP or shell backend has.
Each answer is compared with the gRPC path's for the same input.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from sidecar.domain import identity
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import SALT, Proc, free_port

BASE = "/sidecar.v1.IdentityService/"
EMAIL = "customer@synerise.com"
UUID_OTHER = "0b0ebd4c-3c4b-4cdf-9a53-3a1e1d8b7d2a"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


_OPEN: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


class Http:
    """One keep-alive HTTP/1.1 connection to the Connect listener (closed after the test)."""

    def __init__(self, target: str) -> None:
        self.conn = (UnixHTTPConnection(target.removeprefix("unix://")) if target.startswith("unix://")
                     else http.client.HTTPConnection(target, timeout=10))
        _OPEN.append(self.conn)

    def post(self, method: str, body: bytes | dict[str, Any], ctype: str = "application/json",
             headers: dict[str, str] | None = None, path: str | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.conn.request("POST", path or BASE + method, data, {"Content-Type": ctype, **(headers or {})})
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def call(self, method: str, body: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        status, _, data = self.post(method, body, **kw)
        return status, json.loads(data)

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.status, r.read()


@pytest.fixture
def connect_sidecar(spawn_sidecar, short_tmp: Path, openssl_keys: Path):  # type: ignore[no-untyped-def]
    """A production-mode ``sidecar serve`` with gRPC on TCP and Connect on a Unix socket and on TCP."""

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> tuple[Proc, dict[str, str]]:
        sock = short_tmp / f"connect{len(list(short_tmp.iterdir()))}.sock"
        http_port, metrics_port = free_port(), free_port()
        full_env = {"SIDECAR_KEY_FILE": str(openssl_keys / "private.pem"), "SIDECAR_UUID_SALT": SALT,
                    "SIDECAR_HTTP_LISTEN": f"unix://{sock},127.0.0.1:{http_port}",
                    "SIDECAR_METRICS_ADDR": f"127.0.0.1:{metrics_port}", **(env or {})}
        proc = spawn_sidecar(*args, env=full_env, wait=wait)
        proc.wait_for_stderr("Connect protocol on")
        targets = {"unix": f"unix://{sock}", "tcp": f"127.0.0.1:{http_port}", "grpc": proc.addr,
                   "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "socket": str(sock)}
        return proc, targets

    return start


@pytest.fixture
def served(connect_sidecar) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    _, targets = connect_sidecar()
    yield targets


def grpc_stub(addr: str) -> pb_grpc.IdentityServiceStub:
    channel = grpc.insecure_channel(addr)
    _OPEN.append(channel)
    return pb_grpc.IdentityServiceStub(channel)


def metric(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    want = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and want <= set(m.group(1).split(",")):
            total += float(m.group(2))
    return total


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_resolve_identity_three_branches_as_over_grpc(served: dict[str, str], transport: str) -> None:
    c = Http(served[transport])
    stub = grpc_stub(served["grpc"])
    own_hash = identity.identity_hash(EMAIL)
    cases = [({"email": EMAIL}, "OUTCOME_NEW_IDENTITY"),
             ({"email": EMAIL, "identityHash": own_hash, "cookieUuid": UUID_OTHER}, "OUTCOME_SAME_IDENTITY"),
             ({"email": EMAIL, "identity_hash": "12345", "cookie_uuid": UUID_OTHER}, "OUTCOME_SWITCHED_IDENTITY")]
    jwk = json.loads(c.call("GetPublicKey", {})[1]["jwk"])
    key = RSAKey.import_key(jwk)
    for body, outcome in cases:
        status, got = c.call("ResolveIdentity", body)
        assert status == 200, got
        assert got["outcome"] == outcome
        want = stub.ResolveIdentity(pb.ResolveIdentityRequest(
            email=EMAIL, identity_hash=body.get("identityHash", body.get("identity_hash", "")),
            cookie_uuid=body.get("cookieUuid", body.get("cookie_uuid", ""))))
        assert got["uuid"] == want.uuid and got["identityHash"] == want.identity_hash
        assert got.get("setIdentity", False) == want.set_identity
        claims = jose_jwt.decode(got["token"]["jwt"], key, algorithms=["RS256"]).claims
        assert claims["email"] == EMAIL and claims["uuid"] == got["uuid"]
        assert got["token"]["keyId"] == want.token.key_id


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_the_other_four_rpcs_json_and_binary(served: dict[str, str], transport: str) -> None:
    c = Http(served[transport])
    status, tok = c.call("IssueToken", {"email": EMAIL, "uuid": UUID_OTHER, "ttl": "600s"})
    assert status == 200, tok
    status, v = c.call("VerifyToken", {"jwt": tok["token"]["jwt"]})
    assert status == 200 and v["valid"] and v["uuid"] == UUID_OTHER and v["email"] == EMAIL
    status, bad = c.call("VerifyToken", {"jwt": "not.a.token"})
    assert status == 200 and not bad.get("valid", False) and bad["reason"]
    status, ev = c.call("EvaluateEvent", {"action": "form.submit", "changesCustomerData": True})
    assert status == 200 and not ev.get("accepted", False) and ev["requiresJwt"]
    status, ev = c.call("EvaluateEvent", {"action": "form.submit", "changes_customer_data": True,
                                          "jwt": tok["token"]["jwt"]})
    assert status == 200 and ev["accepted"], ev
    status, key = c.call("GetPublicKey", {})
    assert status == 200 and key["bits"] == 2048 and key["certificateCode"].startswith("-----BEGIN")
    # application/proto: the same RPC in binary.
    status, headers, data = c.post("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=UUID_OTHER).SerializeToString(),
                                   ctype="application/proto", headers={"Connect-Protocol-Version": "1"})
    assert status == 200 and headers["content-type"] == "application/proto"
    assert pb.IssueTokenResponse.FromString(data).token.key_id == key["keyId"]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_errors_are_connect_bodies_with_the_grpc_message(served: dict[str, str], transport: str) -> None:
    c = Http(served[transport])
    stub = grpc_stub(served["grpc"])
    for method, body, request in [
        ("ResolveIdentity", {"email": "nope"}, pb.ResolveIdentityRequest(email="nope")),
        ("IssueToken", {"email": EMAIL, "uuid": "zzz"}, pb.IssueTokenRequest(email=EMAIL, uuid="zzz")),
        ("IssueToken", {"email": EMAIL, "uuid": UUID_OTHER, "ttl": "604800s"},
         pb.IssueTokenRequest(email=EMAIL, uuid=UUID_OTHER, ttl={"seconds": 604800})),
        ("ResolveIdentity", {"email": EMAIL, "identityHash": "x1"}, pb.ResolveIdentityRequest(email=EMAIL, identity_hash="x1")),
        ("VerifyToken", {}, pb.VerifyTokenRequest()),
    ]:
        status, got = c.call(method, body)
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, method)(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (status, got) == (400, {"code": "invalid_argument", "message": err.value.details()})


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_malformed_bodies_are_invalid_argument_never_500_and_counted(served: dict[str, str], transport: str) -> None:
    c = Http(served[transport])
    before = metric(served["metrics"], "sidecar_token_rejections_total", reason="malformed_request")
    for body, ctype in [(b'{"email": ', "application/json"), (b"[1, 2]", "application/json"),
                        (b'{"email": 5}', "application/json"), (b'{"ttl": "forever"}', "application/json"),
                        (b"\xff\xff\xff\xff", "application/proto"), (b"\x0a\xff", "application/proto")]:
        status, _, data = c.post("IssueToken", body, ctype=ctype)
        got = json.loads(data)
        assert status == 400 and got["code"] == "invalid_argument", (body, got)
        assert got["message"].startswith("request: not a valid sidecar.v1.IssueTokenRequest"), got
    after = metric(served["metrics"], "sidecar_token_rejections_total", reason="malformed_request")
    assert after - before == 6
    # Neither a wrong media type nor an unknown method is a 500.
    status, _, _ = c.post("IssueToken", b"email=x", ctype="application/x-www-form-urlencoded")
    assert status == 415
    status, _, _ = c.post("NoSuchMethod", {})
    assert status == 404


def test_metrics_count_connect_calls_in_the_grpc_series(served: dict[str, str]) -> None:
    c = Http(served["tcp"])
    url = served["metrics"]
    labels = {"grpc_service": "sidecar.v1.IdentityService", "grpc_method": "IssueToken"}
    ok0 = metric(url, "grpc_server_handled_total", protocol="connect", grpc_code="OK", **labels)
    bad0 = metric(url, "grpc_server_handled_total", protocol="connect", grpc_code="InvalidArgument", **labels)
    issued0 = metric(url, "sidecar_tokens_issued_total", rpc="IssueToken")
    for _ in range(3):
        assert c.call("IssueToken", {"email": EMAIL, "uuid": UUID_OTHER})[0] == 200  # the 2nd and 3rd: cache hits
    assert c.call("IssueToken", {"email": "x"})[0] == 400
    grpc_stub(served["grpc"]).IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=UUID_OTHER))
    assert metric(url, "grpc_server_handled_total", protocol="connect", grpc_code="OK", **labels) - ok0 == 3
    assert metric(url, "grpc_server_handled_total", protocol="connect", grpc_code="InvalidArgument", **labels) - bad0 == 1
    assert metric(url, "grpc_server_started_total", protocol="grpc", **labels) >= 1
    assert metric(url, "sidecar_tokens_issued_total", rpc="IssueToken") - issued0 == 4  # every token returned


def test_the_docs_curl_command_over_the_unix_socket_and_h2c(served: dict[str, str]) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is needed (scripts/apt.d)"
    out = subprocess.run([curl, "-s", "--unix-socket", served["socket"], "-H", "Content-Type: application/json",
                          "-d", json.dumps({"email": EMAIL}), "http://localhost/sidecar.v1.IdentityService/ResolveIdentity"],
                         check=True, capture_output=True, timeout=30).stdout
    assert json.loads(out)["outcome"] == "OUTCOME_NEW_IDENTITY"
    out = subprocess.run([curl, "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", "-H",
                          "Content-Type: application/json", "-d", "{}",
                          f"http://{served['tcp']}/sidecar.v1.IdentityService/GetPublicKey"],
                         check=True, capture_output=True, timeout=30).stdout.decode()
    body, _, version = out.rpartition("\n")
    assert version == "2" and json.loads(body)["bits"] == 2048


def test_unix_socket_mode_and_health(served: dict[str, str]) -> None:
    assert stat.S_IMODE(Path(served["socket"]).stat().st_mode) == 0o660
    for transport in ("tcp", "unix"):
        c = Http(served[transport])
        assert c.get("/healthz") == (200, b"SERVING\n")
        assert c.call("", {}, path="/grpc.health.v1.Health/Check") == (200, {"status": "SERVING"})
        status, got = c.call("", {"service": "nope"}, path="/grpc.health.v1.Health/Check")
        assert status == 404 and got["code"] == "not_found"


def test_guards_apply_rate_limit_and_deadline(connect_sidecar) -> None:  # type: ignore[no-untyped-def]
    # No self-check: its one GetPublicKey a second comes from loopback too and takes from the same bucket.
    _, targets = connect_sidecar("--rate-limit", "1", "--rate-burst", "2", "--self-check-timeout", "0")
    c = Http(targets["tcp"])
    answers = [c.call("GetPublicKey", {}) for _ in range(4)]
    assert [a[0] for a in answers[:2]] == [200, 200]
    assert answers[3] == (429, {"code": "resource_exhausted", "message": "rate limit: at most 1 calls/s per caller"})
    time.sleep(1.1)
    status, got = c.call("GetPublicKey", {}, headers={"Connect-Timeout-Ms": "0"})
    assert status == 504 and got["code"] == "deadline_exceeded"
    status, got = c.call("GetPublicKey", {}, headers={"Connect-Timeout-Ms": "5000"})
    assert status == 200


def test_drain_answers_503_then_closes(connect_sidecar) -> None:  # type: ignore[no-untyped-def]
    proc, targets = connect_sidecar()
    c = Http(targets["tcp"])
    assert c.get("/healthz")[0] == 200
    code, err = proc.stop()
    assert code == 0, err
    assert not Path(targets["socket"]).exists()


def test_workers_each_serve_the_http_listener(connect_sidecar) -> None:  # type: ignore[no-untyped-def]
    _, targets = connect_sidecar("--workers", "2")
    for transport in ("tcp", "unix"):
        for _ in range(4):
            c = Http(targets[transport])  # a new connection each time: SO_REUSEPORT spreads connections
            assert c.call("IssueToken", {"email": EMAIL, "uuid": UUID_OTHER})[0] == 200


def test_tls_and_client_certificates_on_the_tcp_listener(connect_sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hardening_util import make_pki

    pki = make_pki(tmp_path)
    _, targets = connect_sidecar(env={"SIDECAR_TLS_CERT": str(pki["server"]), "SIDECAR_TLS_KEY": str(pki["server.key"]),
                                      "SIDECAR_TLS_CLIENT_CA": str(pki["test-ca"])}, wait=False)
    url = f"https://{targets['tcp']}/sidecar.v1.IdentityService/GetPublicKey"

    def curl(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-s", "--cacert", str(pki["test-ca"]), *extra, "-H",
                               "Content-Type: application/json", "-d", "{}", url],
                              capture_output=True, text=True, timeout=30)

    ok = curl("--cert", str(pki["client-a"]), "--key", str(pki["client-a.key"]))
    assert ok.returncode == 0 and json.loads(ok.stdout)["bits"] == 2048, ok
    assert curl().returncode != 0  # no client certificate: the handshake fails
    assert curl("--cert", str(pki["stranger"]), "--key", str(pki["stranger.key"])).returncode != 0
    plain = subprocess.run(["curl", "-s", "-d", "{}", url.replace("https", "http")], capture_output=True, timeout=30)
    assert b'"bits"' not in plain.stdout
    c = Http(targets["unix"])  # the Unix socket stays plaintext, its file mode is the access control
    assert c.call("GetPublicKey", {})[0] == 200


def test_grpc_web_is_served_too_and_counted_as_such(served: dict[str, str]) -> None:
    import struct

    c = Http(served["tcp"])
    msg = pb.IssueTokenRequest(email=EMAIL, uuid=UUID_OTHER).SerializeToString()
    status, headers, body = c.post("IssueToken", b"\x00" + struct.pack(">I", len(msg)) + msg,
                                   ctype="application/grpc-web+proto")
    assert status == 200 and headers["content-type"] == "application/grpc-web+proto"
    flags, length = body[0], struct.unpack(">I", body[1:5])[0]
    assert flags == 0 and pb.IssueTokenResponse.FromString(body[5:5 + length]).token.jwt
    assert b"grpc-status: 0" in body[5 + length:]
    assert metric(served["metrics"], "grpc_server_handled_total", protocol="grpc_web", grpc_method="IssueToken",
                  grpc_code="OK") == 1


def test_correlation_headers_reach_the_audit_record(connect_sidecar) -> None:  # type: ignore[no-untyped-def]
    """A backend's traceparent and x-request-id sent over Connect land in the token's audit record,
    as over gRPC (tests/test_correlation.py)."""
    proc, targets = connect_sidecar(env={"SIDECAR_AUDIT_FORMAT": "json"})
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, body = Http(targets["unix"]).call(
        "IssueToken", {"email": EMAIL, "uuid": UUID_OTHER},
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01", "x-request-id": "php-req-81"})
    assert status == 200 and body["token"]["jwt"]
    (line,) = [ln for ln in proc.wait_for_stderr("php-req-81").splitlines() if "php-req-81" in ln]
    record = json.loads(line)
    assert (record["event"], record["trace_id"], record["request_id"]) == ("token_issued", trace, "php-req-81")


def test_scheduled_next_key_over_connect(connect_sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SPEC §8 over Connect: GetPublicKey carries nextKey, and a token asked for a day is capped at T."""
    from tests.conftest import openssl

    openssl("genpkey", "-out", "next.pem", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", cwd=tmp_path)
    (tmp_path / "next.pem").chmod(0o600)
    t = int(time.time()) + 3600
    instant = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    _, targets = connect_sidecar(env={"SIDECAR_NEXT_KEY_FILE": str(tmp_path / "next.pem"),
                                      "SIDECAR_NEXT_KEY_ACTIVATES_AT": instant})
    c = Http(targets["unix"])
    deadline = time.monotonic() + 10
    while True:  # the watcher reads the schedule right after start
        status, key = c.call("GetPublicKey", {})
        if "nextKey" in key or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200 and key["nextKey"]["activatesAt"] == instant
    assert key["nextKey"]["keyId"] != key["keyId"] and "BEGIN PUBLIC KEY" in key["nextKey"]["pem"]
    status, body = c.call("IssueToken", {"email": EMAIL, "uuid": UUID_OTHER, "ttl": "86400s"})
    assert status == 200
    claims = jose_jwt.decode(body["token"]["jwt"], RSAKey.import_key(key["pem"]), algorithms=["RS256"]).claims
    assert claims["exp"] <= t


def test_unix_addresses_that_cannot_be_sockets_are_refused_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Connect listener's Unix paths follow the gRPC listener's rules, in errors naming SIDECAR_HTTP_LISTEN."""
    from sidecar.domain.errors import ConfigError
    from sidecar.transport import httpserver

    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    for addr, rule in ((f"unix://{tmp_path}/missing/h.sock", "does not exist"),
                       (f"unix://{plain}", "exists and is not a socket; refusing to replace it")):
        with pytest.raises(ConfigError) as exc:
            httpserver.bind(addr, socket_mode=0o660, reuse_port=False)
        assert str(exc.value).startswith("SIDECAR_HTTP_LISTEN: ") and rule in str(exc.value)
    assert plain.read_text() == "keep me"


def test_health_over_connect_takes_no_call_slot_and_runs_on_healths_own_threads() -> None:
    """As over gRPC: a Connect ``Health/Check`` is not counted by the concurrency bound and is answered on
    the health servicer's pool, so a full call pool or bound never delays a probe; IdentityService calls
    are counted and run on the call pool."""
    import asyncio
    import threading
    from concurrent import futures
    from types import SimpleNamespace

    from sidecar.transport.connect import HEALTH_SERVICE, ConnectService

    calls = futures.ThreadPoolExecutor(1, thread_name_prefix="calls")
    probes = futures.ThreadPoolExecutor(1, thread_name_prefix="probes")
    service = ConnectService(None, (), None, calls)  # type: ignore[arg-type]
    ctx = SimpleNamespace(request_headers={}, timeout_ms=None)

    def seen(_request: object, _context: object) -> tuple[int, str]:
        return service.in_flight, threading.current_thread().name

    async def both() -> tuple[tuple[int, str], tuple[int, str]]:
        probe = await service.run("Check", seen, None, ctx, service=HEALTH_SERVICE, guarded=False,  # type: ignore[arg-type]
                                  pool=probes)
        call = await service.run("GetPublicKey", seen, None, ctx)  # type: ignore[arg-type]
        return probe, call

    try:
        (probe_count, probe_thread), (call_count, call_thread) = asyncio.run(both())
    finally:
        calls.shutdown()
        probes.shutdown()
    assert (probe_count, call_count) == (0, 1)
    assert probe_thread.startswith("probes") and call_thread.startswith("calls")
    assert service.in_flight == 0
