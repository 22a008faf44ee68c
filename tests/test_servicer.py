"""Every rule of SPEC §2, §3 and §5 (for the implemented RPCs) over the wire,
on loopback TCP and on a Unix socket."""

import json
import threading

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from joserfc import jwt
from joserfc.jwk import RSAKey

from sidecar.domain.identity import customer_uuid, identity_hash
from sidecar.service.observer import Observer
from sidecar.transport.servicer import SERVICE_NAME
from sidecar.v1 import identity_pb2 as pb

COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"
EMAIL = "customer@synerise.com"
DERIVED = str(customer_uuid(EMAIL, "someString"))
TRANSPORTS = ["tcp", "unix"]


@pytest.fixture(params=["fast", "stock"])
def call_path(request: pytest.FixtureRequest) -> str:
    """The whole contract holds on both call paths (sidecar.fastpath and grpc's pool)."""
    return str(request.param)


class Recorder(Observer):
    def __init__(self):
        self.issued_calls, self.rejections, self.lock = [], [], threading.Lock()

    def issued(self, rpc, token, identity_hash, resolution):
        with self.lock:
            self.issued_calls.append((rpc, token.key_id, identity_hash))

    def rejected(self, rpc, reason):
        with self.lock:
            self.rejections.append((rpc, reason))


def verify(token_jwt, openssl_keys):
    public = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    return jwt.decode(token_jwt, public, algorithms=["RS256"])


@pytest.fixture
def srv(start_server):
    rec = Recorder()
    s = start_server(observer=rec)
    s.recorder = rec
    return s


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("req", "outcome", "uuid_", "set_identity"),
    [
        (dict(cookie_uuid=COOKIE), pb.OUTCOME_NEW_IDENTITY, COOKIE, True),
        (dict(identity_hash="-374943845", cookie_uuid=COOKIE), pb.OUTCOME_SAME_IDENTITY, COOKIE, False),
        (dict(identity_hash="42", cookie_uuid=COOKIE), pb.OUTCOME_SWITCHED_IDENTITY, DERIVED, True),
        (dict(), pb.OUTCOME_NEW_IDENTITY, DERIVED, True),
        (dict(cookie_header=f"_snrs_uuid={COOKIE}; _snrs_p=host:x&uuid:{COOKIE}&identityHash:-374943845&init:1"),
         pb.OUTCOME_SAME_IDENTITY, COOKIE, False),
        (dict(cookie_header=f"foo=bar; _snrs_uuid={COOKIE}; _snrs_p=identityHash:&init:1"),
         pb.OUTCOME_NEW_IDENTITY, COOKIE, True),
        (dict(cookie_header=f"_snrs_uuid={COOKIE}; _snrs_p=identityHash:7"), pb.OUTCOME_SWITCHED_IDENTITY, DERIVED, True),
        (dict(identity_hash="-374943845", cookie_header="_snrs_p=identityHash:7"), pb.OUTCOME_SAME_IDENTITY, DERIVED, True),
    ],
)
def test_resolve_identity_branches(srv, openssl_keys, transport, req, outcome, uuid_, set_identity):
    r = srv.stub(transport).ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, **req), timeout=10)
    assert (r.outcome, r.uuid, r.set_identity, r.identity_hash) == (outcome, uuid_, set_identity, "-374943845")
    tok = verify(r.token.jwt, openssl_keys)
    assert tok.claims == {"exp": r.token.expires_at.seconds, "uuid": uuid_, "email": EMAIL}
    assert tok.header == {"alg": "RS256", "typ": "JWT"}
    assert r.token.key_id == srv.sidecar.keys.current.key_id


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_issue_token_with_ttl(srv, openssl_keys, transport):
    import time

    before = int(time.time())
    r = srv.stub(transport).IssueToken(pb.IssueTokenRequest(
        email="josé@example.com", uuid=COOKIE, ttl=duration_pb2.Duration(seconds=600)), timeout=10)
    claims = verify(r.token.jwt, openssl_keys).claims
    assert claims["uuid"] == COOKIE and claims["email"] == "josé@example.com"
    assert before + 600 <= claims["exp"] <= int(time.time()) + 600
    assert srv.recorder.issued_calls == [("IssueToken", r.token.key_id, identity_hash("josé@example.com"))]


def test_default_ttl_is_24h(srv, openssl_keys):
    import time

    r = srv.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE), timeout=10)
    assert abs(r.token.expires_at.seconds - (time.time() + 86400)) < 5


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_get_public_key(srv, openssl_keys, transport):
    r = srv.stub(transport).GetPublicKey(pb.GetPublicKeyRequest(), timeout=10)
    pem = (openssl_keys / "public.pem").read_text()
    assert r.pem == pem
    assert r.certificate_code == "".join(pem.splitlines())
    assert r.certificate_code_bare == "".join(pem.splitlines()[1:-1])
    assert r.bits == 2048
    jwk = json.loads(r.jwk)
    assert jwk["kid"] == r.key_id == RSAKey.import_key(pem).thumbprint()
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}


BAD = [
    ("ResolveIdentity", pb.ResolveIdentityRequest(), "email: is required"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email="nope"), "email: must contain exactly one '@'"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email="a b@c.d"), "email: must not contain whitespace"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email="x" * 255 + "@c"), "email: must be at most 254"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, identity_hash="abc"),
     "identity_hash: must be empty or a signed 32-bit"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, identity_hash="2147483648"),
     "identity_hash: must be empty or a signed 32-bit"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid="not-a-uuid"),
     "cookie_uuid: must be a canonical UUID"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, cookie_header="_snrs_uuid=zzz"),
     "cookie_header._snrs_uuid: must be a canonical UUID"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, cookie_header="_snrs_p=identityHash:x1"),
     "cookie_header._snrs_p.identityHash: must be empty or a signed 32-bit"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, ttl=duration_pb2.Duration(seconds=7 * 86400)),
     "ttl: must be less than 7 days"),
    ("ResolveIdentity", pb.ResolveIdentityRequest(email=EMAIL, ttl=duration_pb2.Duration(seconds=0)),
     "ttl: must be positive"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL), "uuid: is required"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE.upper() + "0"), "uuid: must be a canonical UUID"),
    ("IssueToken", pb.IssueTokenRequest(email="@x", uuid=COOKIE), "email: must contain exactly one '@'"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE, ttl=duration_pb2.Duration(seconds=-5)),
     "ttl: must be positive"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE, ttl=duration_pb2.Duration(seconds=1, nanos=-5)),
     "ttl: seconds and nanos must have the same sign"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE, ttl=duration_pb2.Duration(nanos=500_000_000)),
     "ttl: must be at least 1 second"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE, ttl=duration_pb2.Duration(seconds=10**12)),
     "ttl: must be less than 7 days"),
    ("IssueToken", pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE, ttl=duration_pb2.Duration(seconds=8 * 86400)),
     "ttl: must be less than 7 days"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("rpc", "req", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_invalid_argument_and_signs_nothing(srv, transport, rpc, req, message):
    with pytest.raises(grpc.RpcError) as exc:
        getattr(srv.stub(transport), rpc)(req, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith(message)
    assert srv.recorder.issued_calls == []
    assert len(srv.recorder.rejections) == 1 and srv.recorder.rejections[0][0] == rpc


def test_no_key_is_unavailable(start_server):
    rec = Recorder()
    s = start_server(key=None, observer=rec)
    with pytest.raises(grpc.RpcError) as exc:
        s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rec.rejections == [("IssueToken", "no_key")]


def test_unexpected_error_is_internal_without_detail(start_server, signing_key):
    def broken_clock():
        raise RuntimeError("secret internal detail")

    s = start_server(clock=broken_clock)
    with pytest.raises(grpc.RpcError) as exc:
        s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert exc.value.details() == "internal error"
    # and the server keeps serving
    assert s.stub().GetPublicKey(pb.GetPublicKeyRequest(), timeout=10).bits == 2048


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_health_and_reflection(srv, transport):
    ch = srv.channel(transport)
    health = health_pb2_grpc.HealthStub(ch)
    for service in ("", SERVICE_NAME):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10))
    names = {s.name for s in resp.list_services_response.service}
    assert {"sidecar.v1.IdentityService", "grpc.health.v1.Health"} <= names


def test_drain_sets_not_serving_and_refuses_new_calls(start_server):
    s = start_server()
    ch = s.channel()
    health = health_pb2_grpc.HealthStub(ch)
    s.runtime.health.enter_graceful_shutdown()
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.NOT_SERVING
    s.runtime.drain(1)
    with pytest.raises(grpc.RpcError) as exc:
        s.stub().GetPublicKey(pb.GetPublicKeyRequest(), timeout=2)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


def test_concurrent_calls_all_sign_correctly(srv, openssl_keys):
    from concurrent.futures import ThreadPoolExecutor

    stub = srv.stub()

    def one(i):
        email = f"user{i}@example.com"
        r = stub.ResolveIdentity(pb.ResolveIdentityRequest(email=email, identity_hash="1"), timeout=20)
        return email, r

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    public = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    for email, r in results:
        claims = jwt.decode(r.token.jwt, public, algorithms=["RS256"]).claims
        assert claims["email"] == email and claims["uuid"] == str(customer_uuid(email, "someString"))


def test_health_only_listener_serves_health_and_nothing_else(start_server):
    """The kubelet-probe port: health answers, the signing API is not there, drain shows."""
    from sidecar.transport.runtime import ServerOptions

    s = start_server(opts=ServerOptions(health_listen=("127.0.0.1:0",)))
    (addr,) = s.runtime.health_addresses
    with grpc.insecure_channel(addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", SERVICE_NAME):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as exc:
            from sidecar.v1 import identity_pb2_grpc as pb_grpc

            pb_grpc.IdentityServiceStub(ch).IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE), timeout=10)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        s.runtime.health.enter_graceful_shutdown()
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
