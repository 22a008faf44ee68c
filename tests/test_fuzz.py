"""Property-based fuzzing of every RPC through one real server (limits installed).

Arbitrary unicode, byte-like strings, NULs, huge fields, invalid durations and
malformed cookie headers: the only answers allowed are OK, INVALID_ARGUMENT
and RESOURCE_EXHAUSTED, every token returned obeys Synerise's rules and
verifies with joserfc, and the server stays healthy. The example counts add up
to more than 10,000 per run (``SIDECAR_FUZZ_SCALE`` scales them for local runs).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from hardening_util import verifies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.cli.config import Config
from sidecar.cli.serve import server_options
from sidecar.domain import keys
from sidecar.domain.keys import KeyHolder
from sidecar.service.observer import Observer
from sidecar.service.usecases import Sidecar
from sidecar.transport.runtime import build
from sidecar.transport.servicer import IdentityServicer
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc

SCALE = float(os.environ.get("SIDECAR_FUZZ_SCALE", "1"))
#: Examples per test; the sum is the CI total (at least 10,000 at scale 1).
EXAMPLES = {"resolve": 3000, "issue": 2400, "cookie": 1600, "verify": 1500, "event": 1500, "public_key": 50,
            "raw": 400}
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
MAX_LIFETIME = 7 * 86400


def fuzz_settings(name: str) -> settings:
    return settings(max_examples=max(1, int(EXAMPLES[name] * SCALE)), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# Text protobuf can carry (no lone surrogates), NULs and controls included.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
byte_text = st.binary(max_size=80).map(lambda b: b.decode("latin-1"))
huge_text = st.integers(250, 12_000).map(lambda n: ("é\x00" * n)[:n])
# Over the 16 KiB limit: refused by grpc before parsing. Each such call costs the
# client ~0.2 s of waiting (no server CPU), so they are 1 in 40 of the fields.
oversize_text = st.integers(17_000, 40_000).map(lambda n: "x" * n)
_texts = st.one_of(st.just(""), any_text, byte_text, huge_text,
                   st.sampled_from(["customer@synerise.com", "a@b", "@", "a@b@c", "\x00@\x00", "josé@example.com"]))
texts = st.integers(0, 39).flatmap(lambda i: oversize_text if i == 17 else _texts)  # not 0: hypothesis favours bounds
uuids = st.one_of(texts, st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()))
hashes = st.one_of(texts, st.integers(-(2**40), 2**40).map(str), st.sampled_from(["-374943845", "-", "+1", "0x1"]))
durations = st.one_of(
    st.none(),
    st.builds(duration_pb2.Duration, seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(-(2**31), 2**31 - 1)),
    st.builds(duration_pb2.Duration, seconds=st.integers(-10, 8 * 86400), nanos=st.integers(-10**9, 10**9)),
)
cookie_piece = st.one_of(
    st.sampled_from(["_snrs_uuid=", "_snrs_p=", "_snrs_token=", ";", "; ", "=", "&", ":", "identityHash:", "uuid:",
                     "host:shop.example", "%00", "%ZZ", '"', "345d4c8f-5aff-591d-a19c-1ca48923d9ee", "-374943845"]),
    any_text, byte_text,
)
cookie_headers = st.one_of(texts, st.lists(cookie_piece, max_size=30).map("".join))
jwt_like = st.one_of(
    texts,
    st.lists(st.one_of(st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
                       any_text), min_size=1, max_size=5).map(".".join),
)


@pytest.fixture(scope="module")
def fuzz_server(openssl_keys: Path) -> Iterator[tuple[pb_grpc.IdentityServiceStub, keys.SigningKey, IdentityServicer,
                                                      grpc.Channel]]:
    key = keys.load(str(openssl_keys / "private.pem"))
    opts = server_options(Config(), Observer())
    d = Path(tempfile.mkdtemp(prefix="fz-", dir="/tmp"))
    runtime = build(Sidecar(KeyHolder(key), salt="someString"), ["127.0.0.1:0", f"unix://{d}/f.sock"], opts)
    runtime.start()
    channel = grpc.insecure_channel(runtime.addresses[0])
    try:
        yield pb_grpc.IdentityServiceStub(channel), key, runtime.servicer, channel
    finally:
        channel.close()
        runtime.drain(0)
        shutil.rmtree(d, ignore_errors=True)


def call(fn: Any, request: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        return grpc.StatusCode.OK, fn(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def check_token(token: pb.Token, key: keys.SigningKey, email: str) -> None:
    header, payload, _ = token.jwt.split(".")
    assert _b64json(header) == {"alg": "RS256", "typ": "JWT"}
    claims = _b64json(payload)
    assert set(claims) == {"exp", "uuid", "email"} and claims["email"] == email
    assert 0 < claims["exp"] - time.time() < MAX_LIFETIME
    assert token.key_id == key.key_id
    assert verifies(token.jwt, key.public_pem)


def _implemented(servicer: IdentityServicer, name: str) -> bool:
    return getattr(type(servicer), name) is not getattr(pb_grpc.IdentityServiceServicer, name)


@fuzz_settings("resolve")
@given(email=texts, identity_hash=hashes, cookie_uuid=uuids, cookie_header=cookie_headers, ttl=durations)
def test_fuzz_resolve_identity(fuzz_server, email, identity_hash, cookie_uuid, cookie_header, ttl) -> None:
    stub, key, *_ = fuzz_server
    req = pb.ResolveIdentityRequest(email=email, identity_hash=identity_hash, cookie_uuid=cookie_uuid,
                                    cookie_header=cookie_header, ttl=ttl)
    code, resp = call(stub.ResolveIdentity, req)
    assert code in ALLOWED, (code, resp)
    if code == grpc.StatusCode.OK:
        check_token(resp.token, key, email)
    elif code == grpc.StatusCode.INVALID_ARGUMENT:
        assert ": " in resp  # "field: rule"


@fuzz_settings("issue")
@given(email=texts, uuid_=uuids, ttl=durations)
def test_fuzz_issue_token(fuzz_server, email, uuid_, ttl) -> None:
    stub, key, *_ = fuzz_server
    code, resp = call(stub.IssueToken, pb.IssueTokenRequest(email=email, uuid=uuid_, ttl=ttl))
    assert code in ALLOWED, (code, resp)
    if code == grpc.StatusCode.OK:
        check_token(resp.token, key, email)
        assert _b64json(resp.token.jwt.split(".")[1])["uuid"] == uuid_.lower()  # SPEC §9: lower case


@fuzz_settings("cookie")
@given(cookie_header=cookie_headers, identity_hash=st.sampled_from(["", "-374943845", "97"]))
def test_fuzz_cookie_headers(fuzz_server, cookie_header, identity_hash) -> None:
    stub, key, *_ = fuzz_server
    req = pb.ResolveIdentityRequest(email="customer@synerise.com", identity_hash=identity_hash,
                                    cookie_header=cookie_header)
    code, resp = call(stub.ResolveIdentity, req)
    assert code in ALLOWED, (code, resp)
    if code == grpc.StatusCode.OK:
        check_token(resp.token, key, "customer@synerise.com")


@fuzz_settings("verify")
@given(jwt=jwt_like)
def test_fuzz_verify_token(fuzz_server, jwt) -> None:
    stub, _, servicer, _ = fuzz_server
    code, resp = call(stub.VerifyToken, pb.VerifyTokenRequest(jwt=jwt))
    allowed = ALLOWED if _implemented(servicer, "VerifyToken") else ALLOWED | {grpc.StatusCode.UNIMPLEMENTED}
    assert code in allowed, (code, resp)
    if code == grpc.StatusCode.OK:
        assert not resp.valid  # nothing random is a token signed by our key


@fuzz_settings("event")
@given(action=texts, jwt=jwt_like, changes=st.booleans())
def test_fuzz_evaluate_event(fuzz_server, action, jwt, changes) -> None:
    stub, _, servicer, _ = fuzz_server
    code, resp = call(stub.EvaluateEvent, pb.EvaluateEventRequest(action=action, jwt=jwt,
                                                                  changes_customer_data=changes))
    allowed = ALLOWED if _implemented(servicer, "EvaluateEvent") else ALLOWED | {grpc.StatusCode.UNIMPLEMENTED}
    assert code in allowed, (code, resp)


@fuzz_settings("public_key")
@given(metadata=st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), any_text.map(
    lambda t: "".join(ch for ch in t if 0x20 <= ord(ch) < 0x7f))), max_size=4))
def test_fuzz_get_public_key(fuzz_server, metadata) -> None:
    stub, key, *_ = fuzz_server
    try:
        resp = stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, exc
        return
    assert resp.key_id == key.key_id and "PRIVATE" not in resp.pem


_METHODS = ("ResolveIdentity", "IssueToken", "GetPublicKey", "VerifyToken", "EvaluateEvent")
_VALID = pb.ResolveIdentityRequest(email="customer@synerise.com", identity_hash="-374943845",
                                   cookie_uuid="345d4c8f-5aff-591d-a19c-1ca48923d9ee",
                                   cookie_header="_snrs_p=identityHash:97").SerializeToString()
raw_bytes = st.one_of(st.binary(max_size=120),
                      st.integers(0, len(_VALID)).map(lambda n: _VALID[:n]),  # cut short
                      st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 7)).map(  # one bit flipped
                          lambda p: _VALID[:p[0]] + bytes([_VALID[p[0]] ^ (1 << p[1])]) + _VALID[p[0] + 1:]))


@pytest.fixture(scope="module")
def raw_servers(openssl_keys: Path) -> Iterator[dict[str, grpc.Channel]]:
    """One server per call path, built as ``sidecar serve`` builds them."""
    key = keys.load(str(openssl_keys / "private.pem"))
    d = Path(tempfile.mkdtemp(prefix="fzr-", dir="/tmp"))
    runtimes, channels = [], {}
    for path in ("fast", "stock"):
        opts = server_options(Config(call_path=path), Observer())
        opts.fast_path_threads = 2 if path == "fast" else 0
        runtime = build(Sidecar(KeyHolder(key), salt="someString"), ["127.0.0.1:0", f"unix://{d}/{path}.sock"], opts)
        runtime.start()
        assert (runtime.fast is not None) is (path == "fast")
        runtimes.append(runtime)
        channels[path] = grpc.insecure_channel(runtime.addresses[0])
    try:
        yield channels
    finally:
        for ch in channels.values():
            ch.close()
        for r in runtimes:
            r.drain(0)
        shutil.rmtree(d, ignore_errors=True)


@fuzz_settings("raw")
@given(data=raw_bytes, method=st.sampled_from(_METHODS))
def test_fuzz_raw_request_bytes_on_both_paths(raw_servers, data, method, caplog) -> None:
    """Bytes past the client's serializer: never INTERNAL/UNKNOWN, never a traceback (bench/fuzz.py: the big run)."""
    import logging

    with caplog.at_level(logging.DEBUG):
        for channel in raw_servers.values():
            code, details = call(channel.unary_unary(f"/sidecar.v1.IdentityService/{method}"), data)
            assert code in ALLOWED, (code, details)
            if code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("request: "):
                assert details == f"request: is not a valid sidecar.v1.{method}Request message"
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_examples_add_up_to_ten_thousand() -> None:
    assert sum(EXAMPLES.values()) >= 10_000


def test_server_is_healthy_after_fuzzing(fuzz_server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub, key, _, channel = fuzz_server
    resp = stub.IssueToken(pb.IssueTokenRequest(email="customer@synerise.com",
                                                uuid="345d4c8f-5aff-591d-a19c-1ca48923d9ee"), timeout=5)
    check_token(resp.token, key, "customer@synerise.com")
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
