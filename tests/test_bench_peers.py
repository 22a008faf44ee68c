"""The bench's peers (bench/peers: Node and Go, what a team would write instead) issue the sidecar's token.

Each peer is built or installed as ``bench/run.py`` does it (``bench/peerproc.py``) and started as its
own process on 127.0.0.1 with an openssl-made key; a real sidecar with the same key answers the same
request. The peer's token verifies with joserfc under the openssl public key, carries the same header
and claims in the same order, and, signed in the same second for an ASCII email, is the sidecar's token
byte for byte (RSASSA-PKCS1-v1_5 is deterministic; for a non-ASCII email the JSON differs only in
spelling: the sidecar escapes it as PyJWT does, Node and Go write UTF-8). So the bench compares like
with like. A missing ``node`` or ``go`` fails these tests: they are not skipped.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from joserfc import jwt
from joserfc.jwk import RSAKey

from bench import peerproc
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import Running

EMAIL = "josé.peer@example.com"
UUID = "0F8FAD5B-D9CB-469F-A165-70867728950E"


def parts(token: str) -> tuple[dict[str, object], list[tuple[str, object]]]:
    """The header, and the payload's members in their order."""
    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header, payload, _ = token.split(".")
    return json.loads(decode(header)), json.loads(decode(payload), object_pairs_hook=list)


@pytest.fixture(scope="module", params=["node", "go"])
def peer(request: pytest.FixtureRequest, openssl_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running peer with the session's openssl key: its ``host:port``."""
    work = tmp_path_factory.mktemp(f"peer-{request.param}")
    cmd = peerproc.prepare(request.param, work)
    with peerproc.serve(cmd, openssl_keys / "private.pem", work / "peer.log") as (_proc, addr):
        yield addr


@pytest.fixture
def peer_stub(peer: str) -> Iterator[pb_grpc.IdentityServiceStub]:
    with grpc.insecure_channel(peer) as channel:
        yield pb_grpc.IdentityServiceStub(channel)


@pytest.mark.parametrize("email", ["peer@example.com", EMAIL])
def test_peer_token_verifies_and_matches_the_sidecars(peer_stub: pb_grpc.IdentityServiceStub, openssl_keys: Path,
                                                      start_server: Callable[..., Running], email: str) -> None:
    sidecar = start_server().stub()
    req = pb.IssueTokenRequest(email=email, uuid=UUID, ttl=duration_pb2.Duration(seconds=600))
    for _ in range(5):  # until both sign within the same second (then the tokens must be equal)
        before = sidecar.IssueToken(req, timeout=10).token
        got = peer_stub.IssueToken(req, timeout=10).token
        after = sidecar.IssueToken(req, timeout=10).token
        if before.expires_at.seconds == after.expires_at.seconds:
            break
    public = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    decoded = jwt.decode(got.jwt, public, algorithms=["RS256"])
    assert decoded.header == {"alg": "RS256", "typ": "JWT"}
    assert decoded.claims == {"exp": got.expires_at.seconds, "uuid": UUID.lower(), "email": email}
    assert abs(got.expires_at.seconds - (time.time() + 600)) < 30
    header, payload = parts(got.jwt)
    ours_header, ours_payload = parts(after.jwt)
    assert header == ours_header
    assert [name for name, _ in payload] == [name for name, _ in ours_payload] == ["exp", "uuid", "email"]
    assert got.key_id == after.key_id
    if got.expires_at.seconds == after.expires_at.seconds:
        assert payload == ours_payload
        if email.isascii():
            assert got.jwt == after.jwt
    else:  # five tries straddled a second boundary: the same claims, a second apart
        assert before.expires_at.seconds <= got.expires_at.seconds <= after.expires_at.seconds


def test_peer_default_lifetime_is_the_sidecars(peer_stub: pb_grpc.IdentityServiceStub) -> None:
    got = peer_stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=UUID), timeout=10).token
    assert abs(got.expires_at.seconds - (time.time() + 24 * 3600)) < 30


@pytest.mark.parametrize(("email", "uuid", "ttl", "field"), [
    ("", UUID, 0, "email"),
    ("no-at.example.com", UUID, 0, "email"),
    (EMAIL, "not-a-uuid", 0, "uuid"),
    (EMAIL, UUID, 7 * 86400, "ttl"),
])
def test_peer_refuses_bad_input_naming_the_field(peer_stub: pb_grpc.IdentityServiceStub, email: str, uuid: str,
                                                 ttl: int, field: str) -> None:
    req = pb.IssueTokenRequest(email=email, uuid=uuid)
    if ttl:
        req.ttl.seconds = ttl
    with pytest.raises(grpc.RpcError) as err:
        peer_stub.IssueToken(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


def test_go_peer_is_gofmt_clean() -> None:
    done = subprocess.run(["gofmt", "-l", str(peerproc.GO_DIR)], capture_output=True, text=True, check=True)
    assert done.stdout == ""


@pytest.mark.parametrize("listen", ["tcp", "unix"])
def test_the_floors_answer_and_the_sign_floor_signs_a_real_token(openssl_keys: Path, short_tmp: Path,
                                                                 tmp_path: Path, listen: str) -> None:
    """The floors under the sidecar (bench/peers/floor) serve IssueToken over its fast path: the fixed
    answer is the same response every time; the sign-only floor's token verifies under the openssl key
    with the request's claims (so its row measures a real signature)."""
    address = "127.0.0.1:0" if listen == "tcp" else f"unix://{short_tmp / 'floor.sock'}"
    public = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    for kind in ("floor-answer", "floor-sign"):
        cmd = peerproc.prepare(kind, tmp_path)
        with peerproc.serve(cmd, openssl_keys / "private.pem", tmp_path / "floor.log", listen=address) as (_p, addr), \
                grpc.insecure_channel(addr) as channel:
            stub = pb_grpc.IdentityServiceStub(channel)
            first, second = (stub.IssueToken(pb.IssueTokenRequest(email=f"f{n}@example.com", uuid=UUID.lower()),
                                             timeout=10).token for n in range(2))
        if kind == "floor-answer":
            assert first == second and len(first.jwt) > 500
            continue
        claims = jwt.decode(second.jwt, public, algorithms=["RS256"]).claims
        assert claims == {"exp": second.expires_at.seconds, "uuid": UUID.lower(), "email": "f1@example.com"}
        assert first.jwt != second.jwt
