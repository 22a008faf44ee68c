"""Who may call: mTLS with openssl-made certificates, the allow-list, the Unix
socket mode, and the refusal of plaintext TCP on a non-loopback address."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import pytest
from hardening_util import UUID, Recorder, make_pki, verifies

from sidecar.cli.config import Config, from_sources
from sidecar.cli.serve import server_options
from sidecar.domain.errors import ConfigError
from sidecar.transport import admission
from sidecar.transport.runtime import ServerOptions
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cfg(pki: dict[str, Path], **kw: object) -> Config:
    return Config(tls_cert=str(pki["server"]), tls_key=str(pki["server.key"]),
                  tls_client_ca=str(pki["test-ca"]), **kw)  # type: ignore[arg-type]


def _tls_stub(addr: str, pki: dict[str, Path], client: str | None) -> tuple[grpc.Channel, pb_grpc.IdentityServiceStub]:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki["test-ca"].read_bytes(),
        private_key=pki[f"{client}.key"].read_bytes() if client else None,
        certificate_chain=pki[client].read_bytes() if client else None,
    )
    ch = grpc.secure_channel(addr, creds, options=[("grpc.use_local_subchannel_pool", 1)])
    return ch, pb_grpc.IdentityServiceStub(ch)


def _issue(stub: pb_grpc.IdentityServiceStub) -> pb.IssueTokenResponse:
    return stub.IssueToken(pb.IssueTokenRequest(email="customer@synerise.com", uuid=UUID), timeout=5)


@pytest.fixture
def mtls_server(start_server, pki):
    def start(allowed: tuple[str, ...] = ()):
        rec = Recorder()
        opts = server_options(_cfg(pki, allowed_clients=allowed), rec)
        return start_server(observer=rec, opts=opts), rec

    return start


def test_valid_client_certificate_is_accepted(mtls_server, pki, signing_key) -> None:
    s, rec = mtls_server()
    ch, stub = _tls_stub(s.tcp, pki, "client-a")
    with ch:
        r = _issue(stub)
    assert verifies(r.token.jwt, signing_key.public_pem)
    assert rec.rejections == []


@pytest.mark.parametrize("client", [None, "stranger", "expired"], ids=["no-cert", "other-ca", "expired"])
def test_invalid_client_certificates_are_refused(mtls_server, pki, client) -> None:
    s, _ = mtls_server()
    ch, stub = _tls_stub(s.tcp, pki, client)
    with ch, pytest.raises(grpc.RpcError) as err:
        _issue(stub)
    # The TLS handshake fails: the call never reaches the service.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_cannot_talk_to_the_tls_port(mtls_server) -> None:
    s, _ = mtls_server()
    with grpc.insecure_channel(s.tcp) as ch, pytest.raises(grpc.RpcError) as err:
        _issue(pb_grpc.IdentityServiceStub(ch))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("entry", ["client-a", "spiffe://shop/app", "client-a.internal"])
def test_allow_list_matches_cn_or_san(mtls_server, pki, entry) -> None:
    s, rec = mtls_server(allowed=(entry,))
    ch, stub = _tls_stub(s.tcp, pki, "client-a")
    with ch:
        assert _issue(stub).token.jwt
    ch, stub = _tls_stub(s.tcp, pki, "client-b")
    with ch, pytest.raises(grpc.RpcError) as err:
        _issue(stub)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow-list" in (err.value.details() or "")
    assert rec.rejections == [("IssueToken", "unauthenticated")]


def test_allow_list_leaves_health_and_unix_socket_open(mtls_server, pki) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    s, rec = mtls_server(allowed=("nobody",))
    assert _issue(s.stub("unix")).token.jwt  # the socket's file mode is its access control
    ch, _ = _tls_stub(s.tcp, pki, "client-b")
    with ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert rec.rejections == []


def test_unix_socket_mode(start_server, short_tmp) -> None:
    s = start_server()
    assert stat.S_IMODE(os.stat(s.unix.removeprefix("unix://")).st_mode) == 0o660
    s2 = start_server(opts=ServerOptions(socket_mode=0o600))
    assert stat.S_IMODE(os.stat(s2.unix.removeprefix("unix://")).st_mode) == 0o600


@pytest.mark.parametrize("addr", ["0.0.0.0:50051", "10.1.2.3:50051", "[::]:50051", "sidecar.local:50051"])
def test_non_loopback_tcp_needs_tls_or_insecure_tcp(addr, pki) -> None:
    with pytest.raises(ConfigError, match=r"not a loopback address.*--insecure-tcp"):
        Config(listen=(addr,))
    assert Config(listen=(addr,), insecure_tcp=True).insecure_tcp
    assert _cfg(pki, listen=(addr,)).tls_cert


@pytest.mark.parametrize("addr", ["127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "localhost:1"])
def test_loopback_tcp_needs_no_tls(addr) -> None:
    assert Config(listen=(addr,)).listen == (addr,)


def test_tls_settings_are_validated(pki) -> None:
    with pytest.raises(ConfigError, match="set both or neither"):
        Config(tls_cert=str(pki["server"]))
    with pytest.raises(ConfigError, match="SIDECAR_ALLOWED_CLIENTS: needs SIDECAR_TLS_CLIENT_CA"):
        Config(tls_cert=str(pki["server"]), tls_key=str(pki["server.key"]), allowed_clients=("x",))
    with pytest.raises(ConfigError, match=r"SIDECAR_TLS_KEY: .* is not PEM"):
        admission.server_credentials(str(pki["server"]), str(pki["server.ext"]))
    cfg = from_sources({}, {"SIDECAR_LISTEN": "0.0.0.0:1", "SIDECAR_INSECURE_TCP": "true",
                            "SIDECAR_SOCKET_MODE": "0600", "SIDECAR_ALLOW_INSECURE_KEY_PERMISSIONS": "0"})
    assert cfg.insecure_tcp and cfg.socket_mode == 0o600 and not cfg.allow_insecure_key_permissions


def test_cli_refuses_plaintext_on_all_interfaces(spawn_sidecar) -> None:
    p = spawn_sidecar(addr="0.0.0.0:0", wait=False)
    p.proc.wait(timeout=30)
    code, err = p.stop()
    assert code == 2
    assert "SIDECAR_LISTEN: 0.0.0.0:0 is not a loopback address" in err and "Traceback" not in err


def test_cli_serves_mtls(spawn_sidecar, pki, short_tmp) -> None:
    from conftest import free_port
    from hardening_util import wait_for

    port = free_port()
    sock = f"unix://{short_tmp}/sc.sock"
    p = spawn_sidecar(addr=f"{sock},127.0.0.1:{port}", env={
        "SIDECAR_TLS_CERT": str(pki["server"]), "SIDECAR_TLS_KEY": str(pki["server.key"]),
        "SIDECAR_TLS_CLIENT_CA": str(pki["test-ca"]), "SIDECAR_ALLOWED_CLIENTS": "spiffe://shop/app"})
    ch, stub = _tls_stub(f"127.0.0.1:{port}", pki, "client-a")
    with ch:
        wait_for(lambda: bool(_issue(stub).token.jwt), what="mTLS call")
    for client, code in (("client-b", grpc.StatusCode.PERMISSION_DENIED), (None, grpc.StatusCode.UNAVAILABLE)):
        ch, stub = _tls_stub(f"127.0.0.1:{port}", pki, client)
        with ch, pytest.raises(grpc.RpcError) as err:
            _issue(stub)
        assert err.value.code() == code
    code_, err_ = p.stop()
    assert code_ == 0, err_
