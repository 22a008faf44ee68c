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
import shutil  # noqa: E402

import grpc  # noqa: E402
from hardening_util import Recorder  # noqa: E402

from sidecar.domain.errors import UnusableKey  # noqa: E402
from sidecar.domain.keys import KeyHolder  # noqa: E402
from sidecar.ops import keyfile  # noqa: E402
from sidecar.ops.rotation import KeyRotator  # noqa: E402

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
    path = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", path)
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


def test_i16_4_unix_socket_is_never_more_open_than_its_mode(short_tmp) -> None:
    """Finding 4 (low): the socket was bound under the process umask and chmod-ed after, so with a
    permissive umask connections got in before it became 0660. Now it is born with at most that mode.
    A thread watches every socket from the moment it appears while the process umask is 0."""
    import stat
    import threading

    from sidecar.domain import keys as keys_mod
    from sidecar.service.usecases import Sidecar
    from sidecar.transport.runtime import ServerOptions, build

    paths = [short_tmp / f"u{i}.sock" for i in range(20)]
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for path in paths:
                try:
                    seen.add(stat.S_IMODE(os.stat(path).st_mode))
                except FileNotFoundError:
                    pass

    sidecar = Sidecar(KeyHolder(keys_mod.generate()), salt="s")
    watcher = threading.Thread(target=watch)
    old = os.umask(0)
    watcher.start()
    runtimes = []
    try:
        for path in paths:
            runtimes.append(build(sidecar, [f"unix://{path}"], ServerOptions(socket_mode=0o660)))
    finally:
        done.set()
        watcher.join()
        os.umask(old)
        for r in runtimes:
            r.drain(0)
    assert os.umask(old) == old  # the process umask is back as it was
    assert seen and all(mode & ~0o660 == 0 for mode in seen), sorted(oct(m) for m in seen)
