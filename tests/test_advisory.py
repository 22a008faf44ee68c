"""Named security regressions for token verification.

Each attack token is refused three ways: by the verifier, by ``VerifyToken``
over the wire, and by ``EvaluateEvent`` for ``form.submit`` (on the JWT list by
default), where it must count as no token at all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from token_forge import (  # noqa: F401  (foreign_key is a fixture)
    DAY,
    HOUR,
    NOW,
    alg_none,
    b64json,
    claims,
    foreign_key,
    hs256_with_public_key,
    replace_part,
    rs256,
)

from sidecar.domain import keys
from sidecar.domain.verify import Verifier
from sidecar.v1 import identity_pb2 as pb


@pytest.fixture
def refused(start_server, signing_key: keys.SigningKey) -> Callable[[str, str], None]:
    server = start_server(clock=lambda: NOW)
    stub = server.stub()

    def check(token: str, reason: str) -> None:
        assert Verifier(lambda: signing_key, clock=lambda: NOW).verify(token).reason == reason
        r = stub.VerifyToken(pb.VerifyTokenRequest(jwt=token), timeout=5)
        assert (r.valid, r.reason, r.email, r.uuid) == (False, reason, "", "")
        e = stub.EvaluateEvent(pb.EvaluateEventRequest(action="form.submit", changes_customer_data=True, jwt=token),
                               timeout=5)
        assert (e.accepted, e.requires_jwt, e.rule) == (False, True, "jwt_list")
        assert reason in e.reason

    # The control: the same server accepts a genuine token, so a refusal means something.
    genuine = rs256(signing_key, claims())
    assert stub.VerifyToken(pb.VerifyTokenRequest(jwt=genuine), timeout=5).valid
    return check


def test_alg_none_is_refused(refused: Callable[[str, str], None]) -> None:
    for alg in ("none", "None", "NONE", "nOnE"):
        refused(alg_none(claims(), alg), "wrong_alg")


def test_alg_none_with_a_copied_rs256_signature_is_refused(refused: Callable[[str, str], None],
                                                           signing_key: keys.SigningKey) -> None:
    genuine = rs256(signing_key, claims())
    refused(replace_part(genuine, 0, {"alg": "none", "typ": "JWT"}), "wrong_alg")


def test_hs256_signed_with_the_public_key_bytes_is_refused(refused: Callable[[str, str], None],
                                                           signing_key: keys.SigningKey) -> None:
    # Key confusion: the attacker knows the public key (it is pasted into Synerise)
    # and uses its text as an HMAC secret, in every form the sidecar publishes.
    for secret in (signing_key.public_pem, signing_key.public_pem.strip(), signing_key.certificate_code,
                   signing_key.certificate_code_bare):
        refused(hs256_with_public_key(secret.encode(), claims()), "wrong_alg")


def test_other_algorithms_are_refused(refused: Callable[[str, str], None], signing_key: keys.SigningKey) -> None:
    for alg in ("RS512", "PS256", "ES256", "rs256", ""):
        refused(replace_part(rs256(signing_key, claims()), 0, {"alg": alg, "typ": "JWT"}), "wrong_alg")
    refused(replace_part(rs256(signing_key, claims()), 0, {"typ": "JWT"}), "wrong_alg")


def test_tampered_payload_is_refused(refused: Callable[[str, str], None], signing_key: keys.SigningKey) -> None:
    genuine = rs256(signing_key, claims())
    refused(replace_part(genuine, 1, claims(email="attacker@example.com")), "bad_signature")
    refused(replace_part(genuine, 1, claims(exp=NOW + 6 * DAY)), "bad_signature")


def test_tampered_header_is_refused(refused: Callable[[str, str], None], signing_key: keys.SigningKey) -> None:
    genuine = rs256(signing_key, claims())
    refused(replace_part(genuine, 0, {"alg": "RS256", "typ": "JWT", "kid": "attacker"}), "bad_signature")
    refused(replace_part(genuine, 0, {"typ": "JWT", "alg": "RS256", "x5u": "https://attacker.example/k"}),
            "bad_signature")


def test_expired_token_is_refused(refused: Callable[[str, str], None], signing_key: keys.SigningKey) -> None:
    refused(rs256(signing_key, claims(exp=NOW - 1)), "expired")
    refused(rs256(signing_key, claims(exp=NOW)), "expired")


def test_exp_eight_days_ahead_is_refused(refused: Callable[[str, str], None], signing_key: keys.SigningKey) -> None:
    refused(rs256(signing_key, claims(exp=NOW + 8 * DAY)), "lifetime_too_long")


def test_missing_uuid_is_refused(refused: Callable[[str, str], None], signing_key: keys.SigningKey) -> None:
    refused(rs256(signing_key, claims(uuid=None)), "missing_claim")


def test_token_from_another_rsa_key_is_refused(refused: Callable[[str, str], None],
                                               foreign_key: keys.SigningKey) -> None:  # noqa: F811
    refused(rs256(foreign_key, claims()), "bad_signature")


def test_unsigned_payload_swap_keeps_no_claims(refused: Callable[[str, str], None],
                                               signing_key: keys.SigningKey) -> None:
    # A valid signature glued onto another token's header and payload.
    a = rs256(signing_key, claims()).split(".")
    b = rs256(signing_key, claims(email="other@example.com", exp=NOW + 2 * HOUR)).split(".")
    refused(".".join([a[0], b[1], a[2]]), "bad_signature")
    refused(f"{b64json({'alg': 'RS256', 'typ': 'JWT'})}.{a[1]}.", "bad_signature")


# --- Issue 16: the outside attack on input, key files and listeners ----------------------------------------------
# Each test names the finding; each failed before its fix.

import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import grpc  # noqa: E402
from hardening_util import Recorder  # noqa: E402

from sidecar.domain.errors import UnusableKey  # noqa: E402
from sidecar.domain.keys import KeyHolder  # noqa: E402
from sidecar.ops import keyfile  # noqa: E402
from sidecar.ops.rotation import KeyRotator  # noqa: E402
from tests.conftest import openssl  # noqa: E402

FAST_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
METHODS = ("ResolveIdentity", "IssueToken", "GetPublicKey", "VerifyToken", "EvaluateEvent")
#: Bytes no request message parses from: a length past the end, a bad tag, a cut varint, tag 0.
NOT_A_MESSAGE = (b"\x0a\xff\xff\xff\xff\x0f", b"\xff", b"\x08", b"\x00", b"\x0c")


@pytest.mark.parametrize("call_path", ["fast", "stock"])
def test_i16_1_malformed_request_bytes_are_invalid_argument_not_internal(start_server, call_path, caplog) -> None:
    """Finding 1 (medium): bytes that are not a request message were answered INTERNAL ("Exception
    deserializing request!") on all five RPCs, counted only as a server error, and on the stock path
    each logged an ERROR with a traceback. Now INVALID_ARGUMENT, counted as malformed_request, no log."""
    rec = Recorder()
    s = start_server(observer=rec)
    channel = s.channel()
    with caplog.at_level(logging.DEBUG):
        for method in METHODS:
            raw = channel.unary_unary(f"/sidecar.v1.IdentityService/{method}")  # bytes go out as they are
            for data in NOT_A_MESSAGE:
                with pytest.raises(grpc.RpcError) as err:
                    raw(data, timeout=10)
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, data)
                assert err.value.details() == f"request: is not a valid sidecar.v1.{method}Request message"
    assert rec.rejections == [(m, "malformed_request") for m in METHODS for _ in NOT_A_MESSAGE]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text
    # The server is unharmed: a real request right after is served.
    assert s.stub().GetPublicKey(pb.GetPublicKeyRequest(), timeout=5).key_id == s.sidecar.keys.current.key_id


def test_i16_1_malformed_requests_release_their_streams(start_server) -> None:
    """Found while merging issues 15 and 16: the servicer raised the parser's own MalformedRequest,
    whose traceback then held the frame that held it, so each malformed call (and its HTTP/2 stream)
    lived until the garbage collector ran. Under a stream limit, new calls were refused (UNAVAILABLE,
    REFUSED_STREAM) once a few had piled up. With the collector off, 40 in a row on a limit of 4."""
    import gc

    from sidecar.transport.runtime import ServerOptions

    s = start_server(opts=ServerOptions(options=[("grpc.max_concurrent_streams", 4)]))
    raw = s.channel().unary_unary("/sidecar.v1.IdentityService/IssueToken")
    gc.collect()
    gc.disable()
    try:
        codes = []
        for _ in range(40):
            with pytest.raises(grpc.RpcError) as err:
                raw(b"\xff", timeout=10)
            codes.append(err.value.code())
    finally:
        gc.enable()
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}, codes


def test_i16_1_malformed_bytes_to_health_are_invalid_argument_too(start_server, caplog) -> None:
    """Finding 1, beside the five RPCs: health ``Check`` and ``Watch`` answered bytes that are no
    ``HealthCheckRequest`` INTERNAL with a traceback. Now INVALID_ARGUMENT and counted, no log."""
    rec = Recorder()
    s = start_server(observer=rec)
    channel = s.channel()
    with caplog.at_level(logging.DEBUG):
        for data in NOT_A_MESSAGE:
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary("/grpc.health.v1.Health/Check")(data, timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, data
            assert err.value.details() == "request: is not a valid grpc.health.v1.HealthCheckRequest message"
            with pytest.raises(grpc.RpcError) as err:
                next(iter(channel.unary_stream("/grpc.health.v1.Health/Watch")(data, timeout=10)))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, data
    assert rec.rejections == [(rpc, "malformed_request") for _ in NOT_A_MESSAGE for rpc in ("Check", "Watch")]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


def test_i16_1_malformed_request_has_a_fixed_metrics_series() -> None:
    """Finding 1: the rejection is a labelled series of its own (pre-created, so an alert can read 0)."""
    from prometheus_client import CollectorRegistry

    from sidecar.telemetry.metrics import Metrics

    reg = CollectorRegistry()
    m = Metrics(reg)
    labels = {"rpc": "IssueToken", "reason": "malformed_request"}
    assert reg.get_sample_value("sidecar_token_rejections_total", labels) == 0
    m.rejected("IssueToken", "malformed_request")
    assert reg.get_sample_value("sidecar_token_rejections_total", labels) == 1


@pytest.mark.parametrize("mode", [0o602, 0o620])
def test_i16_2_key_file_writable_by_group_or_others_is_refused(openssl_keys, tmp_path, mode) -> None:
    """Finding 2 (medium): a key file of mode 0602 or 0620 was loaded, at start and by the 1 s watcher,
    so anyone who could write it swapped the signing key. Refused at start and on reload, flag or not."""
    # The file holds another key than the active one, so a reload that is let through swaps keys.
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "private.pem", cwd=tmp_path)
    path = tmp_path / "private.pem"
    os.chmod(path, mode)
    for allow in (False, True):
        with pytest.raises(UnusableKey, match="lets group or others write it"):
            keyfile.load_key(str(path), None, allow_insecure=allow)
    good = keys.load(str(openssl_keys / "private.pem"))
    holder, rec = KeyHolder(good), Recorder()
    rot = KeyRotator(holder, rec, str(path), allow_insecure_permissions=True)
    assert rot.reload("file change") is False
    assert holder.current is good and rec.reloads == ["failure"]
    os.chmod(path, 0o600)
    assert rot.reload("file change") is True and rec.reloads == ["failure", "success"]
    assert holder.current.key_id != good.key_id


def test_i16_3_tcp_off_loopback_with_server_only_tls_is_refused(tmp_path) -> None:
    """Finding 3 (medium): a non-loopback TCP listener with server-only TLS was accepted: no client
    certificates, so anyone who reached the port minted tokens. Now mTLS or the logged opt-out."""
    from hardening_util import make_pki

    from sidecar.cli.config import Config
    from sidecar.domain.errors import ConfigError

    pki = make_pki(tmp_path / "pki")
    tls = {"tls_cert": str(pki["server"]), "tls_key": str(pki["server.key"])}
    for addr in ("0.0.0.0:50051", "10.1.2.3:50051", "[::]:50051"):
        with pytest.raises(ConfigError, match=r"not a loopback address, so callers must present client certificates"):
            Config(listen=(addr,), **tls)
        assert Config(listen=(addr,), tls_client_ca=str(pki["test-ca"]), **tls).tls_client_ca
        assert Config(listen=(addr,), insecure_tcp=True, **tls).insecure_tcp
    assert Config(listen=("127.0.0.1:50051",), **tls).tls_cert  # loopback: server-only TLS is fine


def test_i16_3_insecure_tcp_opt_out_is_logged_loudly(spawn_sidecar) -> None:
    """Finding 3: the opt-out for meshes stays, and says so at start."""
    from conftest import free_port

    p = spawn_sidecar("--insecure-tcp", addr=f"0.0.0.0:{free_port()}")
    err = p.wait_for_stderr("INSECURE TCP")
    assert "accept callers without a client certificate (plaintext)" in err
    p.stop()


def test_i16_3_insecure_tcp_warns_for_the_connect_listener_too(spawn_sidecar) -> None:
    """An exposed Connect listener (SIDECAR_HTTP_LISTEN) under --insecure-tcp gets the same warning at start."""
    from conftest import free_port

    http = f"0.0.0.0:{free_port()}"
    p = spawn_sidecar("--insecure-tcp", env={"SIDECAR_HTTP_LISTEN": http})
    err = p.wait_for_stderr("INSECURE TCP")
    assert f"INSECURE TCP (--insecure-tcp): {http} accept callers" in err
    p.stop()


def test_connect_unix_path_that_cannot_be_a_socket_is_refused_before_start(tmp_path) -> None:
    """Like SIDECAR_LISTEN's: one line naming SIDECAR_HTTP_LISTEN, exit 2, before anything is served."""
    import os
    import subprocess

    from conftest import ROOT, sidecar_cmd

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"PYTHONPATH": str(ROOT), "SIDECAR_METRICS_ADDR": "",
                "SIDECAR_HTTP_LISTEN": f"unix://{tmp_path}/missing/h.sock"})
    done = subprocess.run(sidecar_cmd("serve"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"sidecar: error: SIDECAR_HTTP_LISTEN: directory {tmp_path}/missing of "
                     f"unix://{tmp_path}/missing/h.sock does not exist"], done.stderr


def test_i16_4_unix_socket_is_never_more_open_than_its_mode(short_tmp) -> None:
    """Finding 4 (low): the socket was bound under the process umask and chmod-ed after, so with a
    permissive umask connections got in before it became 0660. Now it is born with at most that mode.
    A thread watches every socket from the moment it appears while the process umask is 0."""
    import stat
    import threading

    from sidecar.domain import keys as keys_mod
    from sidecar.service.usecases import Sidecar
    from sidecar.transport.runtime import ServerOptions, build

    paths = [short_tmp / f"u{i}.sock" for i in range(40)]
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for path in paths:
                try:
                    seen.add(stat.S_IMODE(os.stat(path).st_mode))
                except FileNotFoundError:
                    pass

    import sys

    sidecar = Sidecar(KeyHolder(keys_mod.generate()), salt="s")
    watcher = threading.Thread(target=watch)
    old, interval = os.umask(0), sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # let the watcher in between any two steps of the bind
    watcher.start()
    runtimes = []
    try:
        for path in paths:
            runtimes.append(build(sidecar, [f"unix://{path}"], ServerOptions(socket_mode=0o660)))
    finally:
        done.set()
        watcher.join()
        sys.setswitchinterval(interval)
        os.umask(old)
        for r in runtimes:
            r.drain(0)
    assert os.umask(old) == old  # the process umask is back as it was
    assert seen and all(mode & ~0o660 == 0 for mode in seen), sorted(oct(m) for m in seen)


def test_i16_7_a_grpcio_whose_private_api_changed_falls_back_to_the_stock_path(start_server, caplog,
                                                                              monkeypatch) -> None:
    """Finding 7: ``fastpath.unavailable()`` checked that 15 private names exist, not how they behave;
    a changed signature raised TypeError at start-up. The self-test makes a real call: a changed
    signature (here the status operation's, as a future grpcio might) is one warning and the stock path."""
    from sidecar.transport import fastpath

    def changed(*_args: object) -> None:
        raise TypeError("SendStatusFromServerOperation() takes 5 positional arguments")

    monkeypatch.setattr(fastpath, "_self_test_result", None)  # this process's cached outcome: run it again
    monkeypatch.setattr(fastpath.cygrpc, "SendStatusFromServerOperation", changed)
    with caplog.at_level(logging.WARNING):
        s = start_server()
    monkeypatch.undo()
    assert s.runtime.fast is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "sidecar.runtime"]
    assert len(warnings) == 1 and "fast call path self-test failed" in warnings[0], warnings
    assert "served by the stock grpc server" in warnings[0]
    r = s.stub().IssueToken(pb.IssueTokenRequest(email="a@b.example", uuid=FAST_UUID), timeout=10)
    assert r.token.key_id == s.sidecar.keys.current.key_id


class _BrokenSeries:
    """A metrics series that fails when the answer is sent: an error of ours while the call is open."""

    def __init__(self, series: object) -> None:
        self.started = series.started  # type: ignore[attr-defined]
        self.start = series.start  # type: ignore[attr-defined]
        self.failures = 0

    def done(self, code: str, started: float) -> None:
        self.failures += 1
        raise RuntimeError("metrics backend gone")


def test_i16_7_an_error_while_a_call_is_open_answers_internal_and_frees_its_slot(start_server, caplog) -> None:
    """Finding 7: an exception outside the servicer (here in the metrics, when the answer is sent) left the call
    unanswered until its deadline and its in-flight slot taken for good: enough of them and the
    concurrency bound refused every call."""
    s = start_server()
    fast = s.runtime.fast
    assert fast is not None
    method = next(m for m in fast.methods if m.name == "IssueToken")
    healthy, method.series = method.series, _BrokenSeries(method.series)
    stub = s.stub()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="sidecar.fastpath"):
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as err:
                stub.IssueToken(pb.IssueTokenRequest(email="a@b.example", uuid=FAST_UUID), timeout=10)
            assert err.value.code() is grpc.StatusCode.INTERNAL
    assert time.monotonic() - started < 5  # answered, not left to the deadline
    deadline = time.monotonic() + 5
    while fast.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fast.in_flight == 0
    assert "cannot answer a call of IssueToken" in caplog.text
    method.series = healthy
    assert stub.IssueToken(pb.IssueTokenRequest(email="a@b.example", uuid=FAST_UUID), timeout=10).token.jwt


@pytest.mark.parametrize("call_path", ["fast", "stock"])
def test_i16_5_upper_case_uuids_are_signed_in_lower_case(start_server, call_path) -> None:
    """Finding 5 (low): upper-case UUIDs were signed verbatim, giving one visitor two ``uuid`` claims.
    Accepted and lower-cased in every field and cookie (SPEC §9)."""
    from token_forge import EMAIL as FORGE_EMAIL

    from sidecar.domain.validation import customer_uuid

    s = start_server()
    stub = s.stub()
    lower = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"
    upper = lower.upper()

    def claim(jwt: str) -> str:
        v = stub.VerifyToken(pb.VerifyTokenRequest(jwt=jwt), timeout=5)
        assert v.valid
        return v.uuid

    t = stub.IssueToken(pb.IssueTokenRequest(email=FORGE_EMAIL, uuid=upper), timeout=5).token
    assert claim(t.jwt) == lower and customer_uuid(upper) == lower
    r = stub.ResolveIdentity(pb.ResolveIdentityRequest(email=FORGE_EMAIL, cookie_uuid=upper), timeout=5)
    assert r.uuid == lower and claim(r.token.jwt) == lower
    r = stub.ResolveIdentity(pb.ResolveIdentityRequest(email=FORGE_EMAIL, cookie_header=f"_snrs_uuid={upper}"),
                             timeout=5)
    assert r.uuid == lower and claim(r.token.jwt) == lower


@pytest.mark.parametrize("call_path", ["fast", "stock"])
def test_i16_5_non_canonical_identity_hashes_are_refused(start_server, call_path) -> None:
    """Finding 5: identity hashes ``-0`` and ``007`` were accepted (and compared as text), also inside
    the ``_snrs_p`` cookie. Now INVALID_ARGUMENT naming the field."""
    s = start_server()
    stub = s.stub()
    for bad in ("-0", "007", "-007", "+97", "097"):
        for request, field in (
            (pb.ResolveIdentityRequest(email="a@b.example", identity_hash=bad), "identity_hash"),
            (pb.ResolveIdentityRequest(email="a@b.example", cookie_header=f"_snrs_p=uuid:x&identityHash:{bad}"),
             "cookie_header._snrs_p.identityHash"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.ResolveIdentity(request, timeout=5)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (err.value.details() or "").startswith(f"{field}: must be empty or a signed 32-bit integer")
    r = stub.ResolveIdentity(pb.ResolveIdentityRequest(email="a@b.example", identity_hash="0"), timeout=5)
    assert r.outcome == pb.OUTCOME_SWITCHED_IDENTITY  # "0" is canonical, and not this email's hash


@pytest.mark.parametrize("call_path", ["fast", "stock"])
def test_i16_5_a_valid_token_with_padding_appended_is_malformed(start_server, call_path,
                                                                signing_key: keys.SigningKey) -> None:
    """Finding 5: a valid token with ``==`` appended verified as valid (PyJWT pads before decoding).
    JWT parts must be strict unpadded base64url (RFC 7515): ``malformed``."""
    s = start_server(clock=lambda: NOW)
    stub = s.stub()
    genuine = rs256(signing_key, claims())
    assert stub.VerifyToken(pb.VerifyTokenRequest(jwt=genuine), timeout=5).valid
    for respelled in (genuine + "==", genuine + "=", genuine.replace(".", "=.", 1)):
        r = stub.VerifyToken(pb.VerifyTokenRequest(jwt=respelled), timeout=5)
        assert (r.valid, r.reason) == (False, "malformed")
        e = stub.EvaluateEvent(pb.EvaluateEventRequest(action="form.submit", changes_customer_data=True,
                                                       jwt=respelled), timeout=5)
        assert not e.accepted and "malformed" in e.reason


@pytest.mark.parametrize(("flags", "setting", "rule"), [
    (("--rate-limit", "inf"), "SIDECAR_RATE_LIMIT", "must be a finite number"),
    (("--rate-limit", "nan"), "SIDECAR_RATE_LIMIT", "must be a finite number"),
    (("--max-message-bytes", "1099511627776"), "SIDECAR_MAX_MESSAGE_BYTES", "at most 67108864"),
    (("--grace", "99999999999999999999d"), "SIDECAR_GRACE", "must be at most 1h"),
    (("--log-level", "bogus"), "SIDECAR_LOG_LEVEL", "must be one of DEBUG, INFO, WARNING, ERROR"),
    # Settings naming files are checked before the first log line, too.
    (("--listen", "unix:///nonexistent-i16/x.sock"), "SIDECAR_LISTEN", "does not exist"),
    (("--tls-cert", "/nonexistent-i16.pem", "--tls-key", "/nonexistent-i16.pem"), "SIDECAR_TLS_CERT", "cannot read"),
])
def test_i16_6_bad_setting_values_are_one_line_and_exit_2(flags, setting, rule) -> None:
    """Finding 6 (low): these values gave a traceback and exit 1, and ``--rate-limit nan`` silently
    turned rate limiting off. Now one stderr line naming the setting and the rule, exit 2."""
    from conftest import ROOT, sidecar_cmd

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({"SIDECAR_METRICS_ADDR": "", "PYTHONPATH": str(ROOT)})
    p = subprocess.run(sidecar_cmd("serve", *flags), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"sidecar: error: {setting}: ") and rule in lines[0] and flags[1] in lines[0]
