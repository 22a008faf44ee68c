"""The Python client package (clients/python) against real sidecars: in-process servers on
127.0.0.1 and a Unix socket, a ``sidecar serve`` process that restarts, and a TLS/mTLS server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from sidecar_client import (
    NO_RETRY,
    TLS,
    AsyncSidecarClient,
    DeadlineExceeded,
    InvalidArgument,
    Outcome,
    Retry,
    SidecarClient,
    SidecarClientError,
    Unavailable,
    Unimplemented,
)

from sidecar.domain import keys
from sidecar.domain.keys import KeyHolder
from sidecar.service.observer import Observer
from sidecar.service.usecases import Sidecar
from sidecar.transport.servicer import IdentityServicer
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import ROOT, SALT, Proc, Running, free_port, openssl

EMAIL = "customer@synerise.com"
EMAIL_HASH = "-374943845"  # Java String.hashCode of EMAIL (SPEC vector)
EMAIL_UUID5 = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"  # uuid5(url, "someString" + EMAIL)
COOKIE_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER_HASH = "97"  # hash("a"): somebody else
FAST_RETRY = Retry(attempts=120, initial_backoff=0.05, max_backoff=0.25)  # up to ~30 s: a loaded CI machine


class Counting(Observer):
    """Counts rejected calls per RPC, to see how often the server was really called."""

    def __init__(self) -> None:
        self.rejections: list[tuple[str, str]] = []

    def rejected(self, rpc: str, reason: str) -> None:
        self.rejections.append((rpc, reason))


def address(server: Running, transport: str) -> str:
    return server.tcp if transport == "tcp" else server.unix


def verify(token: str, public_pem: bytes) -> dict[str, object]:
    """Check a JWT with joserfc (not the PyJWT that signed it) against the openssl-made public key."""
    decoded = jose_jwt.decode(token, RSAKey.import_key(public_pem), algorithms=["RS256"])
    assert decoded.header == {"alg": "RS256", "typ": "JWT"}
    assert set(decoded.claims) == {"exp", "uuid", "email"}
    return dict(decoded.claims)


def test_committed_stubs_match_the_proto() -> None:
    r = subprocess.run([sys.executable, "gen_stubs.py", "--check"], check=False, cwd=ROOT / "clients/python",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_wheel_installs_by_its_scoped_name_and_imports_as_sidecar_client(
        start_server: Callable[..., Running], tmp_path: Path) -> None:
    """Built and installed as a backend would (a wheel, not the checkout), then used from a clean import path."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                    str(ROOT / "clients/python")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("synerise_sidecar_client-")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    server = start_server()
    script = (
        "import importlib.metadata as md, sidecar_client, sys\n"
        "from sidecar_client import SidecarClient\n"
        f"assert sidecar_client.__file__.startswith({str(tmp_path / 'site')!r}), sidecar_client.__file__\n"
        "assert md.version('synerise-sidecar-client') == sidecar_client.__version__\n"
        "assert set(md.requires('synerise-sidecar-client')) == {'grpcio<2,>=1.85', 'protobuf<8,>=7.35.1'}\n"
        "with SidecarClient(sys.argv[1]) as c:\n"
        f"    print(c.resolve_identity({EMAIL!r}, cookie_uuid={COOKIE_UUID!r}).uuid)\n"
    )
    # -I: no current directory, no user site, no PYTHONPATH; the wheel's folder first, the venv's grpcio after it.
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); "
                        f"exec({script!r})", server.unix], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == COOKIE_UUID


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_resolve_identity_three_branches(start_server: Callable[..., Running], openssl_keys: Path,
                                         transport: str) -> None:
    server = start_server()
    public = (openssl_keys / "public.pem").read_bytes()
    with SidecarClient(address(server, transport)) as client:
        new = client.resolve_identity(EMAIL, cookie_uuid=COOKIE_UUID)
        same = client.resolve_identity(EMAIL, identity_hash=EMAIL_HASH, cookie_uuid=COOKIE_UUID)
        switched = client.resolve_identity(EMAIL, identity_hash=OTHER_HASH, cookie_uuid=COOKIE_UUID)
    assert (new.outcome, new.uuid, new.set_identity) == (Outcome.NEW_IDENTITY, COOKIE_UUID, True)
    assert (same.outcome, same.uuid, same.set_identity) == (Outcome.SAME_IDENTITY, COOKIE_UUID, False)
    assert (switched.outcome, switched.uuid, switched.set_identity) == (Outcome.SWITCHED_IDENTITY, EMAIL_UUID5, True)
    for who in (new, same, switched):
        assert who.identity_hash == EMAIL_HASH
        claims = verify(who.token.jwt, public)
        assert claims["uuid"] == who.uuid and claims["email"] == EMAIL
        assert who.token.expires_at == datetime.fromtimestamp(int(str(claims["exp"])), tz=UTC)
        assert who.token.key_id == server.sidecar.public_keys()[0].key_id


def test_resolve_identity_from_the_cookie_header(start_server: Callable[..., Running]) -> None:
    server = start_server()
    header = f"a=1; _snrs_uuid={COOKIE_UUID}; _snrs_p=host:shop.example&uuid:{COOKIE_UUID}&identityHash:{EMAIL_HASH}"
    with SidecarClient(server.unix) as client:
        who = client.resolve_identity(EMAIL, cookie_header=header, ttl=timedelta(minutes=10))
    assert (who.outcome, who.uuid, who.set_identity) == (Outcome.SAME_IDENTITY, COOKIE_UUID, False)
    left = who.token.expires_at - datetime.now(UTC)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10, seconds=1)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_issue_token_and_public_key(start_server: Callable[..., Running], openssl_keys: Path, transport: str) -> None:
    server = start_server()
    public = (openssl_keys / "public.pem").read_bytes()
    with SidecarClient(address(server, transport)) as client:
        token = client.issue_token(EMAIL, COOKIE_UUID, ttl=300)
        key = client.get_public_key()
    claims = verify(token.jwt, public)
    assert claims == {"exp": int(token.expires_at.timestamp()), "uuid": COOKIE_UUID, "email": EMAIL}
    assert key.pem.encode() == public
    assert key.certificate_code == "".join(public.decode().splitlines())
    assert key.certificate_code_bare == key.certificate_code.removeprefix("-----BEGIN PUBLIC KEY-----") \
        .removesuffix("-----END PUBLIC KEY-----")
    assert key.bits == 2048 and key.key_id == token.key_id == key.jwk["kid"]
    assert key.next_key is None
    # the JWK the client parsed verifies the token on its own
    jose_jwt.decode(token.jwt, RSAKey.import_key(key.jwk), algorithms=["RS256"])


def test_public_key_carries_the_scheduled_next_key(start_server: Callable[..., Running]) -> None:
    from sidecar.domain import keys

    server = start_server()
    nxt = keys.generate()
    t = int(datetime.now(UTC).timestamp()) + 3600
    server.sidecar.keys.schedule(nxt, t)
    with SidecarClient(server.unix) as client:
        key = client.get_public_key()
    assert key.next_key is not None
    assert (key.next_key.key_id, key.next_key.pem, key.next_key.activates_at) == (
        nxt.key_id, nxt.public_pem, datetime.fromtimestamp(t, UTC))
    assert key.next_key.certificate_code == nxt.certificate_code
    assert key.next_key.certificate_code_bare == nxt.certificate_code_bare


@pytest.mark.parametrize("call, field", [
    (lambda c: c.resolve_identity("no-at-sign", cookie_uuid=COOKIE_UUID), "email"),
    (lambda c: c.resolve_identity(EMAIL, cookie_uuid="not-a-uuid"), "cookie_uuid"),
    (lambda c: c.resolve_identity(EMAIL, identity_hash="12x"), "identity_hash"),
    (lambda c: c.issue_token(EMAIL, "nope"), "uuid"),
    (lambda c: c.issue_token(EMAIL, COOKIE_UUID, ttl=timedelta(days=8)), "ttl"),
])
def test_invalid_argument_carries_field_and_rule_and_is_not_retried(
        start_server: Callable[..., Running], call: Callable[[SidecarClient], object], field: str) -> None:
    observer = Counting()
    server = start_server(observer=observer)
    with SidecarClient(server.tcp, retry=Retry(attempts=5, initial_backoff=0.01)) as client, \
            pytest.raises(InvalidArgument) as err:
        call(client)
    assert err.value.field == field
    assert err.value.rule and ": " not in err.value.rule
    assert err.value.details == f"{field}: {err.value.rule}"
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert len(observer.rejections) == 1  # the server saw exactly one call


def test_unimplemented_rpcs_raise_unimplemented(short_tmp: Path) -> None:
    """An older server without VerifyToken/EvaluateEvent: a real gRPC server with the service but no methods."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("sidecar.v1.IdentityService", {})])
    sock = f"unix://{short_tmp / 'old.sock'}"
    server.add_insecure_port(sock)
    server.start()
    try:
        with SidecarClient(sock, retry=Retry(attempts=5, initial_backoff=0.01)) as client:
            with pytest.raises(Unimplemented, match="VerifyToken") as err:
                client.verify_token("a.b.c")
            assert err.value.rpc == "VerifyToken" and "older sidecar" in str(err.value)
            with pytest.raises(Unimplemented, match="EvaluateEvent"):
                client.evaluate_event("form.submit", changes_customer_data=True)
    finally:
        server.stop(0)


def test_verify_token_and_evaluate_event(start_server: Callable[..., Running]) -> None:
    """The results of VerifyToken and EvaluateEvent come back as dataclasses."""
    server = start_server()
    with SidecarClient(server.tcp) as client:
        token = client.issue_token(EMAIL, COOKIE_UUID)
        try:
            verdict = client.verify_token(token.jwt)
        except Unimplemented:
            pytest.skip("this build of the sidecar does not implement VerifyToken yet")
        assert (verdict.valid, verdict.reason, verdict.email, verdict.uuid) == (True, "", EMAIL, COOKIE_UUID)
        assert verdict.expires_at == token.expires_at and verdict.key_id == token.key_id
        assert client.verify_token(token.jwt[:-4] + "AAAA").valid is False
        decision = client.evaluate_event("form.submit", changes_customer_data=True)
        assert (decision.accepted, decision.requires_jwt) == (False, True)
        assert client.evaluate_event("form.submit", jwt=token.jwt, changes_customer_data=True).accepted


def test_deadline_and_unreachable_server() -> None:
    closed = f"127.0.0.1:{free_port()}"
    with SidecarClient(closed, retry=Retry(attempts=3, initial_backoff=0.01)) as client, \
            pytest.raises(Unavailable) as err:
        client.get_public_key()
    assert err.value.attempts == 3 and err.value.code is grpc.StatusCode.UNAVAILABLE
    with SidecarClient(closed, retry=NO_RETRY) as client, pytest.raises(Unavailable) as err:
        client.get_public_key()
    assert err.value.attempts == 1


def test_deadline_exceeded() -> None:
    """A real gRPC server whose GetPublicKey answers after 3 s: the 0.3 s deadline must fire."""
    import threading
    from concurrent import futures

    import grpc

    release = threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(3)
        return b""

    handler = grpc.method_handlers_generic_handler(
        "sidecar.v1.IdentityService", {"GetPublicKey": grpc.unary_unary_rpc_method_handler(slow)})
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with SidecarClient(f"127.0.0.1:{port}", timeout=0.3) as client, pytest.raises(DeadlineExceeded):
            client.get_public_key()
    finally:
        release.set()
        server.stop(0)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="address"):
        SidecarClient("http://127.0.0.1:50051")
    with pytest.raises(ValueError, match="cert and key"):
        TLS(cert=b"x")
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_async_client(start_server: Callable[..., Running], openssl_keys: Path, transport: str) -> None:
    server = start_server()
    public = (openssl_keys / "public.pem").read_bytes()

    async def main() -> None:
        async with AsyncSidecarClient(address(server, transport)) as client:
            who = await client.resolve_identity(EMAIL, identity_hash=OTHER_HASH, cookie_uuid=COOKIE_UUID)
            assert (who.outcome, who.uuid, who.set_identity) == (Outcome.SWITCHED_IDENTITY, EMAIL_UUID5, True)
            assert verify(who.token.jwt, public)["uuid"] == EMAIL_UUID5
            token = await client.issue_token(EMAIL, COOKIE_UUID, ttl=60)
            assert verify(token.jwt, public)["uuid"] == COOKIE_UUID
            assert (await client.get_public_key()).key_id == token.key_id
            with pytest.raises(InvalidArgument) as err:
                await client.issue_token(EMAIL + " ", COOKIE_UUID)
            assert err.value.field == "email"
        async with AsyncSidecarClient(f"127.0.0.1:{free_port()}", retry=Retry(attempts=2, initial_backoff=0.01)) as c:
            with pytest.raises(Unavailable) as down:
                await c.get_public_key()
            assert down.value.attempts == 2

    asyncio.run(main())


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_retry_rides_out_a_restarted_sidecar(spawn_sidecar: Callable[..., Proc], openssl_keys: Path,
                                            short_tmp: Path, transport: str) -> None:
    tcp, unix = f"127.0.0.1:{free_port()}", f"unix://{short_tmp / 'restart.sock'}"
    env = {"SIDECAR_KEY_FILE": str(openssl_keys / "private.pem"), "SIDECAR_UUID_SALT": SALT}
    first = spawn_sidecar(addr=f"{tcp},{unix}", env=env)
    target = tcp if transport == "tcp" else unix
    with SidecarClient(target, retry=FAST_RETRY) as client, SidecarClient(target, retry=NO_RETRY) as once:
        before = client.resolve_identity(EMAIL, cookie_uuid=COOKIE_UUID)
        code, _ = first.stop()
        assert code == 0
        with pytest.raises(Unavailable):
            once.get_public_key()  # down: without retries the call fails
        restarted: list[Proc] = []
        later = threading.Timer(0.3, lambda: restarted.append(spawn_sidecar(addr=f"{tcp},{unix}", env=env)))
        later.start()
        try:
            after = client.resolve_identity(EMAIL, cookie_uuid=COOKIE_UUID)  # retried until the new process serves
        finally:
            later.join()
        assert restarted and restarted[0].proc.poll() is None
    assert after.uuid == before.uuid == COOKIE_UUID and after.token.key_id == before.token.key_id


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for ``sidecar.test`` and a client certificate, made by openssl."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:sidecar.test\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", *ext, cwd=d)
    return d


def test_tls_and_mutual_tls(tls_files: Path, signing_key: keys.SigningKey) -> None:
    """The real servicer behind a TLS port that requires client certificates."""
    d = tls_files
    creds = grpc.ssl_server_credentials([((d / "server.key").read_bytes(), (d / "server.pem").read_bytes())],
                                        root_certificates=(d / "ca.pem").read_bytes(), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(Sidecar(KeyHolder(signing_key), salt=SALT)), server)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        mtls = TLS(ca=d / "ca.pem", cert=d / "client.pem", key=str(d / "client.key"), server_name="sidecar.test")
        with SidecarClient(f"127.0.0.1:{port}", tls=mtls) as client:
            who = client.resolve_identity(EMAIL, cookie_uuid=COOKIE_UUID)
        assert (who.outcome, who.uuid) == (Outcome.NEW_IDENTITY, COOKIE_UUID)
        no_cert = TLS(ca=(d / "ca.pem").read_bytes(), server_name="sidecar.test")
        with SidecarClient(f"127.0.0.1:{port}", tls=no_cert, retry=NO_RETRY, timeout=5) as client, \
                pytest.raises(SidecarClientError):
            client.get_public_key()
        wrong_name = TLS(ca=d / "ca.pem", cert=d / "client.pem", key=d / "client.key", server_name="other.test")
        with SidecarClient(f"127.0.0.1:{port}", tls=wrong_name, retry=NO_RETRY, timeout=5) as client, \
                pytest.raises(Unavailable):
            client.get_public_key()
    finally:
        server.stop(0)


def test_uuid5_vector_is_what_the_client_documents() -> None:
    assert str(uuid.uuid5(uuid.NAMESPACE_URL, SALT + EMAIL)) == EMAIL_UUID5


