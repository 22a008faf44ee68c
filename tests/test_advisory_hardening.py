"""Named regression tests, one per security finding fixed by the hardening work
(PyJWT's ``test_advisory.py`` is the model). Each docstring says what was wrong."""

from __future__ import annotations

import os
import shutil
import stat

import grpc
import pytest
from hardening_util import UUID, Recorder, make_pki, make_rsa_key

from sidecar.cli.config import Config
from sidecar.cli.serve import server_options
from sidecar.domain import keys
from sidecar.domain.errors import ConfigError, UnusableKey
from sidecar.domain.keys import KeyHolder
from sidecar.ops.rotation import KeyRotator
from sidecar.transport import admission
from sidecar.v1 import identity_pb2 as pb


class TestAdvisoryHardening:
    def test_h01_world_readable_key_file_is_refused(self, openssl_keys, tmp_path) -> None:
        """H-01: a private key file with mode 0644 was loaded silently; anyone on the node could copy it."""
        from sidecar.ops import keyfile

        path = tmp_path / "k.pem"
        shutil.copy(openssl_keys / "private.pem", path)
        os.chmod(path, 0o644)
        with pytest.raises(UnusableKey, match="lets group or others read"):
            keyfile.load_key(str(path), None)

    def test_h02_plaintext_tcp_on_all_interfaces_is_refused(self) -> None:
        """H-02: ``--listen 0.0.0.0:50051`` served signing to the whole network without TLS."""
        with pytest.raises(ConfigError, match="not a loopback address"):
            Config(listen=("0.0.0.0:50051",))

    def test_h03_bad_key_on_reload_keeps_the_old_key(self, openssl_keys, tmp_path) -> None:
        """H-03: a truncated key file at rotation time must not take signing down."""
        good = keys.load(str(openssl_keys / "private.pem"))
        path = tmp_path / "k.pem"
        path.write_bytes((openssl_keys / "private.pem").read_bytes()[:300])
        os.chmod(path, 0o600)
        holder, rec = KeyHolder(good), Recorder()
        assert KeyRotator(holder, rec, str(path)).reload("SIGHUP") is False
        assert holder.current is good and rec.reloads == ["failure"]

    def test_h04_oversized_request_is_not_processed(self, start_server) -> None:
        """H-04: a 4 MiB cookie header was parsed in full (default grpc limit); now 16 KiB."""
        opts = server_options(Config(), Recorder())
        s = start_server(opts=opts)
        with pytest.raises(grpc.RpcError) as err:
            s.stub().ResolveIdentity(pb.ResolveIdentityRequest(email="a@b.c", cookie_header="x" * 17000), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    def test_h05_unix_socket_is_not_world_connectable(self, start_server) -> None:
        """H-05: the Unix socket was created with the process umask; any local user could sign tokens."""
        s = start_server()
        mode = stat.S_IMODE(os.stat(s.unix.removeprefix("unix://")).st_mode)
        assert mode & 0o007 == 0

    def test_h06_restarted_worker_does_not_serve_a_stale_key(self, tmp_path) -> None:
        """H-06: a worker restarted by the supervisor after a rotation signed with the key the master
        parsed at start-up, so tokens failed in Synerise."""
        old = keys.load(str(make_rsa_key(tmp_path / "old.pem")))
        path = make_rsa_key(tmp_path / "live.pem")  # rotated after ``old`` was parsed
        holder = KeyHolder(old)
        rot = KeyRotator(holder, Recorder(), str(path), poll_interval=60)
        rot.start(initial=old)
        rot.stop()
        assert holder.current.key_id != old.key_id

    def test_h07_expired_client_certificate_is_refused(self, start_server, tmp_path) -> None:
        """H-07: mTLS must check the client certificate's validity period, not only its issuer."""
        pki = make_pki(tmp_path / "pki")
        opts = server_options(Config(tls_cert=str(pki["server"]), tls_key=str(pki["server.key"]),
                                     tls_client_ca=str(pki["test-ca"])), Recorder())
        s = start_server(opts=opts)
        creds = grpc.ssl_channel_credentials(pki["test-ca"].read_bytes(), pki["expired.key"].read_bytes(),
                                             pki["expired"].read_bytes())
        with grpc.secure_channel(s.tcp, creds) as ch, pytest.raises(grpc.RpcError) as err:
            pb_stub(ch).IssueToken(pb.IssueTokenRequest(email="a@b.c", uuid=UUID), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    def test_h08_rate_limit_table_is_bounded(self) -> None:
        """H-08: one bucket per caller grew without bound under many source addresses."""
        rl = admission.RateLimit(rate=1, burst=1, observer=Recorder())
        for i in range(admission.MAX_BUCKETS * 2):
            rl.allow(f"ipv4:10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        assert len(rl._buckets) == admission.MAX_BUCKETS

    def test_h09_reload_failure_log_names_no_key_bytes(self, tmp_path, caplog) -> None:
        """H-09: the old SIGHUP handler logged the loader's exception text as it came."""
        import logging

        good = keys.load(str(make_rsa_key(tmp_path / "good.pem")))
        path = tmp_path / "k.pem"
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n")
        os.chmod(path, 0o600)
        with caplog.at_level(logging.ERROR):
            KeyRotator(KeyHolder(good), Recorder(), str(path)).reload("SIGHUP")
        assert "MIIE" not in caplog.text and "BEGIN" not in caplog.text and "refused" in caplog.text


def pb_stub(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from sidecar.v1 import identity_pb2_grpc as pb_grpc

    return pb_grpc.IdentityServiceStub(channel)
