"""Token verification the way Synerise does it: the verifier, VerifyToken over the
wire, the previous-key grace after a rotation, and ``sidecar verify``."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from token_forge import DAY, EMAIL, HOUR, NOW, UUID, claims, foreign_key, replace_part, rs256  # noqa: F401

from sidecar.domain import keys, tokens
from sidecar.domain.keys import KeyHolder
from sidecar.domain.verify import REASONS, Verifier
from sidecar.v1 import identity_pb2 as pb


def verifier(key: keys.PublicKeyInfo, now: float = NOW) -> Verifier:
    return Verifier(lambda: key, clock=lambda: now)


def test_our_own_token_is_valid_and_joserfc_agrees(signing_key: keys.SigningKey) -> None:
    tok = tokens.sign(signing_key, EMAIL, UUID, timedelta(hours=24), lambda: NOW)
    v = verifier(signing_key, NOW + 10).verify(tok.jwt)
    assert (v.valid, v.reason, v.email, v.uuid, v.expires_at, v.key_id) == (
        True, "", EMAIL, UUID, NOW + 24 * HOUR, signing_key.key_id)
    # The independent library reads the same claims with the public key alone.
    pub = RSAKey.import_key(signing_key.public_pem)
    assert jose_jwt.decode(tok.jwt, pub, algorithms=["RS256"]).claims == {
        "exp": NOW + 24 * HOUR, "uuid": UUID, "email": EMAIL}


def test_a_token_signed_by_joserfc_is_valid(signing_key: keys.SigningKey) -> None:
    v = verifier(signing_key).verify(rs256(signing_key, claims(exp=NOW + 6 * DAY)))
    assert v.valid and v.email == EMAIL


@pytest.mark.parametrize(("exp", "reason"), [
    (NOW - 100, "expired"),
    (NOW, "expired"),  # "exp in the future": now is not the future
    (NOW + 1, ""),
    (NOW + 7 * DAY - 1, ""),  # "less than 7 days away"
    (NOW + 7 * DAY, "lifetime_too_long"),
    (NOW + 8 * DAY, "lifetime_too_long"),
])
def test_exp_boundaries(signing_key: keys.SigningKey, exp: int, reason: str) -> None:
    v = verifier(signing_key).verify(rs256(signing_key, claims(exp=exp)))
    assert (v.valid, v.reason) == (reason == "", reason)


@pytest.mark.parametrize(("payload", "reason"), [
    (claims(exp=None), "missing_claim"),
    (claims(uuid=None), "missing_claim"),
    (claims(email=None), "missing_claim"),
    (claims(exp=str(NOW + HOUR)), "bad_claim"),  # type: ignore[arg-type]
    (claims(exp=NOW + HOUR + 0.5), "bad_claim"),  # type: ignore[arg-type]
    (claims(exp=True), "bad_claim"),  # type: ignore[arg-type]
    (claims(uuid="not-a-uuid"), "bad_claim"),
    (claims(uuid=""), "bad_claim"),
    (claims(email="no-at-sign"), "bad_claim"),
    (claims(email="a b@c.d"), "bad_claim"),
    (claims(email=7), "bad_claim"),  # type: ignore[arg-type]
])
def test_claims_must_be_present_and_well_formed(signing_key: keys.SigningKey, payload: dict[str, object],
                                                reason: str) -> None:
    v = verifier(signing_key).verify(rs256(signing_key, payload))
    assert (v.valid, v.reason, v.email, v.uuid) == (False, reason, "", "")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "a.b.c.d", "!!!.###.$$$", "x" * 9000 + ".a.b"])
def test_garbage_is_malformed(signing_key: keys.SigningKey, token: str) -> None:
    assert verifier(signing_key).verify(token).reason == "malformed"


def test_payload_that_is_not_an_object_is_malformed(signing_key: keys.SigningKey) -> None:
    import jwt as pyjwt

    # A JWS whose (signed) payload is a JSON array.
    tok = pyjwt.api_jws.PyJWS().encode(b"[1,2]", signing_key.private_key, algorithm="RS256")
    assert verifier(signing_key).verify(tok).reason == "malformed"


def test_typ_other_than_jwt_is_malformed(signing_key: keys.SigningKey) -> None:
    assert verifier(signing_key).verify(rs256(signing_key, claims(), {"typ": "at+jwt"})).reason == "malformed"


def test_reasons_are_a_fixed_set() -> None:
    assert REASONS == ("malformed", "wrong_alg", "bad_signature", "missing_claim", "bad_claim", "expired",
                       "lifetime_too_long")


# --- rotation: the previous key ------------------------------------------------------

def rotated(signing_key: keys.SigningKey, foreign_key: keys.SigningKey,  # noqa: F811
            grace: timedelta) -> tuple[Verifier, list[float]]:
    now = [float(NOW)]
    holder = KeyHolder(signing_key)
    v = Verifier(lambda: holder.current, clock=lambda: now[0], previous_key_grace=grace)
    holder.on_swap(v.remember_previous)
    holder.swap(foreign_key)  # rotation at NOW: foreign_key is now the active key
    return v, now


def test_previous_key_is_refused_by_default_as_synerise_does(signing_key: keys.SigningKey,
                                                             foreign_key: keys.SigningKey) -> None:  # noqa: F811
    # "JWT tokens signed with the old certificate are rejected!"
    v, _ = rotated(signing_key, foreign_key, timedelta(0))
    assert v.verify(rs256(signing_key, claims())).reason == "bad_signature"
    assert v.verify(rs256(foreign_key, claims())).key_id == foreign_key.key_id


def test_previous_key_grace_accepts_old_tokens_for_a_while(signing_key: keys.SigningKey,
                                                           foreign_key: keys.SigningKey) -> None:  # noqa: F811
    v, now = rotated(signing_key, foreign_key, timedelta(minutes=30))
    old = rs256(signing_key, claims(exp=NOW + 2 * HOUR))
    now[0] = NOW + 29 * 60
    r = v.verify(old)
    assert (r.valid, r.key_id) == (True, signing_key.key_id)
    now[0] = NOW + 30 * 60
    assert v.verify(old).reason == "bad_signature"
    assert v.verify(rs256(foreign_key, claims(exp=NOW + 2 * HOUR))).valid


def test_grace_must_be_at_most_seven_days(signing_key: keys.SigningKey) -> None:
    with pytest.raises(ValueError):
        Verifier(lambda: signing_key, previous_key_grace=timedelta(days=8))


def test_config_reads_the_grace_setting() -> None:
    from sidecar.cli import config
    from sidecar.domain.errors import ConfigError

    assert config.from_sources({}, {}).previous_key_grace == timedelta(0)
    cfg = config.from_sources({}, {"SIDECAR_VERIFY_PREVIOUS_KEY_GRACE": "1h"})
    assert cfg.previous_key_grace == timedelta(hours=1)
    with pytest.raises(ConfigError, match="SIDECAR_VERIFY_PREVIOUS_KEY_GRACE: must be between 0 and 7 days"):
        config.from_sources({}, {"SIDECAR_VERIFY_PREVIOUS_KEY_GRACE": "8d"})
    with pytest.raises(ConfigError, match="SIDECAR_VERIFY_PREVIOUS_KEY_GRACE: duration must be"):
        config.from_sources({"previous_key_grace": "soon"}, {})


# --- over the wire ---------------------------------------------------------------------

def test_verify_token_over_the_wire(start_server, signing_key: keys.SigningKey,
                                    foreign_key: keys.SigningKey) -> None:  # noqa: F811
    s = start_server(clock=lambda: NOW)
    issued = s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=UUID), timeout=5).token
    for transport in ("tcp", "unix"):
        r = s.stub(transport).VerifyToken(pb.VerifyTokenRequest(jwt=issued.jwt), timeout=5)
        assert (r.valid, r.reason, r.email, r.uuid, r.expires_at.seconds, r.key_id) == (
            True, "", EMAIL, UUID, issued.expires_at.seconds, issued.key_id)
    r = s.stub().VerifyToken(pb.VerifyTokenRequest(jwt=rs256(foreign_key, claims())), timeout=5)
    assert (r.valid, r.reason, r.email, r.uuid, r.key_id, r.HasField("expires_at")) == (
        False, "bad_signature", "", "", "", False)


def test_verify_token_after_a_rotation_of_the_running_server(start_server, signing_key: keys.SigningKey,
                                                             foreign_key: keys.SigningKey) -> None:  # noqa: F811
    now = [float(NOW)]
    s = start_server(clock=lambda: now[0], previous_key_grace=timedelta(minutes=5))
    old = rs256(signing_key, claims())
    s.sidecar.keys.swap(foreign_key)
    stub = s.stub()
    assert stub.VerifyToken(pb.VerifyTokenRequest(jwt=old), timeout=5).key_id == signing_key.key_id
    now[0] += 300
    assert stub.VerifyToken(pb.VerifyTokenRequest(jwt=old), timeout=5).reason == "bad_signature"


def test_verify_token_without_a_token_is_invalid_argument(start_server) -> None:
    s = start_server()
    with pytest.raises(grpc.RpcError) as err:
        s.stub().VerifyToken(pb.VerifyTokenRequest(), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "jwt: is required"


def test_verify_token_without_a_key_is_unavailable(start_server, signing_key: keys.SigningKey) -> None:
    s = start_server(key=None)
    with pytest.raises(grpc.RpcError) as err:
        s.stub().VerifyToken(pb.VerifyTokenRequest(jwt=rs256(signing_key, claims())), timeout=5)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


# --- sidecar verify TOKEN -----------------------------------------------------------------

def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    from conftest import ROOT, sidecar_cmd

    return subprocess.run(sidecar_cmd(*args), cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_cli_verify_with_the_public_key_file(openssl_keys: Path, signing_key: keys.SigningKey) -> None:
    tok = tokens.sign(signing_key, EMAIL, UUID, timedelta(hours=1), __import__("time").time)
    r = run_cli("verify", tok.jwt, "--key-file", str(openssl_keys / "public.pem"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["valid", f"uuid: {UUID}", f"email: {EMAIL}"]
    assert lines[4] == f"key_id: {signing_key.key_id}"
    r = run_cli("verify", "-", "--key-file", str(openssl_keys / "private.der"), stdin=tok.jwt + "\n")
    assert r.returncode == 0 and r.stdout.startswith("valid\n")


def test_cli_verify_invalid_token_exits_1(openssl_keys: Path, signing_key: keys.SigningKey) -> None:
    r = run_cli("verify", rs256(signing_key, claims(exp=NOW)), "--key-file", str(openssl_keys / "public.pem"))
    assert (r.returncode, r.stdout) == (1, "invalid: expired\n")


def test_cli_verify_asks_the_server(start_server, foreign_key: keys.SigningKey) -> None:  # noqa: F811
    import time

    s = start_server()
    good = s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=UUID), timeout=5).token.jwt
    r = run_cli("verify", good, "--addr", s.unix)
    assert r.returncode == 0, r.stderr
    assert f"email: {EMAIL}" in r.stdout
    r = run_cli("verify", rs256(foreign_key, claims(exp=int(time.time()) + HOUR)), "--addr", s.tcp)
    assert (r.returncode, r.stdout) == (1, "invalid: bad_signature\n")



_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _respell(part: str, how: str) -> str:
    """The same bytes as ``part`` (to a lenient decoder), spelled another way."""
    if how == "padded":
        return part + "=" * (-len(part) % 4 or 4)
    if how == "standard_alphabet":
        return part.replace("-", "+").replace("_", "/")
    if how == "unused_bits":  # the last character's low bits carry nothing: setting one keeps the bytes
        assert len(part) % 4 in (2, 3)
        return part[:-1] + _ALPHABET[_ALPHABET.index(part[-1]) | 1]
    assert how == "whitespace"
    return part[:10] + "\n" + part[10:]


@pytest.mark.parametrize("how", ["padded", "standard_alphabet", "unused_bits", "whitespace"])
def test_signature_must_be_strict_unpadded_base64url(signing_key: keys.SigningKey, how: str) -> None:
    """A genuine token with its signature respelled (``==`` appended, ...) verified as valid."""
    import jwt as pyjwt

    for n in range(200):  # a signature with '-' or '_' in it, for the alphabet case
        genuine = rs256(signing_key, claims(exp=NOW + HOUR + n))
        head, body, sig = genuine.split(".")
        if how != "standard_alphabet" or "-" in sig or "_" in sig:
            break
    respelled = f"{head}.{body}.{_respell(sig, how)}"
    assert verifier(signing_key).verify(genuine).valid and respelled != genuine
    if how == "padded":  # the library underneath reads it as the genuine signature
        pyjwt.api_jws.PyJWS().decode_complete(respelled, signing_key.public_key, algorithms=["RS256"])
    assert verifier(signing_key).verify(respelled).reason == "malformed"


@pytest.mark.parametrize("how", ["padded", "whitespace"])
@pytest.mark.parametrize("index", [0, 1])
def test_header_and_payload_must_be_strict_unpadded_base64url(signing_key: keys.SigningKey, index: int,
                                                              how: str) -> None:
    parts = rs256(signing_key, claims()).split(".")
    parts[index] = _respell(parts[index], how)
    assert verifier(signing_key).verify(".".join(parts)).reason == "malformed"


def test_strict_b64url() -> None:
    from sidecar.domain.verify import strict_b64url

    assert strict_b64url("") and strict_b64url("AA") and strict_b64url("AAA") and strict_b64url("AAAA")
    for bad in ("A", "AB", "AAB", "AA==", "AA=", "+/", "A A", "AA\n", "é", "AAAAA"):
        assert not strict_b64url(bad), bad
