"""Key hygiene: key file permissions, no core dumps, and no key material in any
log line, RPC response, error message or /metrics text after a suite-like run."""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from hardening_util import UUID, make_rsa_key, wait_for

from sidecar.domain import keys
from sidecar.domain.errors import UnusableKey
from sidecar.ops import keyfile
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o444])
def test_group_or_other_readable_key_is_refused(openssl_keys, tmp_path, mode) -> None:
    path = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", path)
    os.chmod(path, mode)
    with pytest.raises(UnusableKey, match=rf"mode {mode:04o} lets group or others read.*--allow-insecure-key-permissions"):
        keyfile.load_key(str(path), None)
    assert keyfile.load_key(str(path), None, allow_insecure=True).bits == 2048


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_key_is_accepted(openssl_keys, tmp_path, mode) -> None:
    path = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", path)
    os.chmod(path, mode)
    assert keyfile.load_key(str(path), None).bits == 2048


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o622, 0o660, 0o606, 0o666, 0o670, 0o610 | 0o020])
def test_key_writable_by_group_or_others_is_refused_even_with_the_flag(openssl_keys, tmp_path, mode) -> None:
    path = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", path)
    os.chmod(path, mode)
    for allow in (False, True):
        with pytest.raises(UnusableKey, match=rf"key file .*: mode {mode:04o} lets group or others write it"):
            keyfile.load_key(str(path), None, allow_insecure=allow)


@pytest.mark.parametrize(("mode", "allow", "rule"), [(0o644, False, "read"), (0o620, True, "write"), (0o602, False, "write")])
def test_passphrase_file_readable_or_writable_beyond_its_owner_is_refused(odd_keys, tmp_path, mode, allow,
                                                                           rule) -> None:
    pass_file = tmp_path / "pass.txt"
    shutil.copy(odd_keys / "pass.txt", pass_file)
    os.chmod(pass_file, mode)
    with pytest.raises(UnusableKey, match=rf"^passphrase file .*: mode {mode:04o} lets group or others {rule} it"):
        keyfile.load_key(str(odd_keys / "encrypted.pem"), str(pass_file), allow_insecure=allow)
    os.chmod(pass_file, 0o600)
    assert keyfile.load_key(str(odd_keys / "encrypted.pem"), str(pass_file)).bits == 2048


def test_permissions_follow_symlinks(openssl_keys, tmp_path) -> None:
    target = tmp_path / "..data" / "private.pem"
    target.parent.mkdir()
    shutil.copy(openssl_keys / "private.pem", target)
    os.chmod(target, 0o644)  # Kubernetes' default Secret mode
    link = tmp_path / "private.pem"
    link.symlink_to(target)
    with pytest.raises(UnusableKey, match="0644"):
        keyfile.check_key_permissions(str(link))


def test_cli_refuses_readable_key_and_accepts_the_flag(spawn_sidecar, openssl_keys, tmp_path) -> None:
    path = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", path)
    os.chmod(path, 0o644)
    p = spawn_sidecar("--key-file", str(path), "--uuid-salt", "s", wait=False)
    p.proc.wait(timeout=30)
    code, err = p.stop()
    assert code == 2 and "lets group or others read the private key" in err and "Traceback" not in err
    p = spawn_sidecar("--key-file", str(path), "--uuid-salt", "s", "--allow-insecure-key-permissions")
    assert p.stop()[0] == 0


def _core_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return " ".join(line.split()[4:6])
    raise AssertionError("no core limit line")


@pytest.mark.parametrize("workers", [1, 2])
def test_core_dumps_are_disabled(spawn_sidecar, openssl_keys, workers) -> None:
    p = spawn_sidecar("--key-file", str(openssl_keys / "private.pem"), "--uuid-salt", "s", "--workers", str(workers))
    pids = [p.proc.pid]
    children = Path(f"/proc/{p.proc.pid}/task/{p.proc.pid}/children")
    if workers > 1:
        wait_for(lambda: len(children.read_text().split()) == workers, what="workers forked")
        pids += [int(c) for c in children.read_text().split()]
    for pid in pids:
        assert _core_limit(pid) == "0 0"
    assert p.stop()[0] == 0


# --- no key material anywhere -------------------------------------------------


def forbidden_fragments(key: keys.SigningKey) -> list[str]:
    """Strings whose presence anywhere would mean the private key leaked.

    Only the private numbers (d, p, q, the CRT values) count: the modulus is
    public. Each appears in decimal, hex, and base64 / base64url at the three
    byte alignments it can have inside a PEM or DER encoding.
    """
    nums = key.private_key.private_numbers()
    out: list[str] = []
    for n in (nums.d, nums.p, nums.q, nums.dmp1, nums.dmq1, nums.iqmp):
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        out += [str(n)[:40], raw.hex()[8:48]]
        for shift in range(3):
            chunk = raw[shift + 3: shift + 33]  # 30 bytes, 3-aligned: same 40 characters wherever it sits
            out += [base64.b64encode(chunk).decode(), base64.urlsafe_b64encode(chunk).decode()]
    return out


def assert_no_key_material(text: str, *keys_: keys.SigningKey) -> None:
    joined = text.replace("\n", "").replace("\\n", "")
    for key in keys_:
        for fragment in forbidden_fragments(key):
            assert fragment not in joined, f"private key material ({fragment[:12]}...) found"
    assert "PRIVATE KEY" not in text


def _suite_like_traffic(addr: str) -> list[str]:
    """All RPCs, good and bad input; returns every response and error text."""
    seen: list[str] = []
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.IdentityServiceStub(ch)
        requests = [
            (stub.ResolveIdentity, pb.ResolveIdentityRequest(email="customer@synerise.com", cookie_uuid=UUID)),
            (stub.ResolveIdentity, pb.ResolveIdentityRequest(email="x@y.z", identity_hash="97",
                                                             cookie_header="_snrs_p=identityHash:1&uuid:x")),
            (stub.ResolveIdentity, pb.ResolveIdentityRequest(email="bad", cookie_uuid="nope")),
            (stub.ResolveIdentity, pb.ResolveIdentityRequest(email="a@b", cookie_header="x" * 20000)),
            (stub.IssueToken, pb.IssueTokenRequest(email="customer@synerise.com", uuid=UUID)),
            (stub.IssueToken, pb.IssueTokenRequest(email="a@b", uuid=UUID, ttl={"seconds": 7 * 86400})),
            (stub.IssueToken, pb.IssueTokenRequest(email="\x00@\x00", uuid="")),
            (stub.GetPublicKey, pb.GetPublicKeyRequest()),
            (stub.VerifyToken, pb.VerifyTokenRequest(jwt="a.b.c")),
            (stub.EvaluateEvent, pb.EvaluateEventRequest(action="form.submit", jwt="x")),
        ]
        for fn, req in requests:
            try:
                seen.append(str(fn(req, timeout=10)))
            except grpc.RpcError as exc:
                seen.append(f"{exc.code().name}: {exc.details()} {exc.trailing_metadata()}")
    return seen


def test_no_key_material_in_logs_responses_or_metrics(spawn_sidecar, tmp_path) -> None:
    """A run with every RPC, bad input, a rotation, refused keys and a drain,
    at DEBUG level: scan everything the sidecar emitted for the keys it held."""
    a_path = make_rsa_key(tmp_path / "a.pem")
    b_path = make_rsa_key(tmp_path / "b.pem")
    short = make_rsa_key(tmp_path / "short.pem", bits=1024)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    a, b = keys.load(str(a_path)), keys.load(str(b_path))
    c = keys.describe(load_pem_private_key(short.read_bytes(), None), "short")  # type: ignore[arg-type]
    live = tmp_path / "live" / "private.pem"
    live.parent.mkdir()
    shutil.copy(a_path, live)
    metrics_addr = f"127.0.0.1:{free_port()}"
    p = spawn_sidecar("--key-file", str(live), "--uuid-salt", "s", "--log-level", "DEBUG",
                      "--key-poll-interval", "1s", env={"SIDECAR_METRICS_ADDR": metrics_addr})
    seen = _suite_like_traffic(p.addr)
    for bad in (short, tmp_path / "missing.pem"):  # refused reloads
        tmp = live.with_suffix(".new")
        if Path(bad).exists():
            shutil.copy(bad, tmp)
            os.replace(tmp, live)
        p.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
    shutil.copy(b_path, live.with_suffix(".new"))
    os.replace(live.with_suffix(".new"), live)
    p.proc.send_signal(signal.SIGHUP)
    with grpc.insecure_channel(p.addr) as ch:
        stub = pb_grpc.IdentityServiceStub(ch)
        wait_for(lambda: stub.GetPublicKey(pb.GetPublicKeyRequest()).key_id == b.key_id, what="rotation to b")
    seen += _suite_like_traffic(p.addr)
    if importlib.util.find_spec("sidecar.metrics") is not None:
        with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5) as resp:
            seen.append(resp.read().decode())
    p.proc.send_signal(signal.SIGTERM)
    p.proc.wait(timeout=30)
    err_text = p.stderr()
    assert p.proc.returncode == 0, err_text
    assert "refused, keeping key" in err_text and b.key_id in err_text  # the run did rotate and refuse
    text = "\n".join(seen) + err_text + p.stdout()
    assert_no_key_material(text, a, b, c)


def test_scanner_finds_leaked_material(openssl_keys) -> None:
    """The scan above can fail: each kind of fragment is caught."""
    key = keys.load(str(openssl_keys / "private.pem"))
    for fragment in forbidden_fragments(key):
        with pytest.raises(AssertionError):
            assert_no_key_material(f"log line {fragment} end", key)
    from cryptography.hazmat.primitives import serialization as ser

    for fmt in (ser.PrivateFormat.PKCS8, ser.PrivateFormat.TraditionalOpenSSL):
        pem = key.private_key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()).decode()
        with pytest.raises(AssertionError, match="material"):
            assert_no_key_material(pem.replace("PRIVATE KEY", "X"), key)  # PEM body, lines wrapped
        der = key.private_key.private_bytes(ser.Encoding.DER, fmt, ser.NoEncryption())
        for text in (base64.b64encode(der).decode(), der.hex()):
            with pytest.raises(AssertionError, match="material"):
                assert_no_key_material(text, key)
    assert_no_key_material(key.public_pem + key.certificate_code + str(key.public_jwk()), key)  # public is fine


UID = GID = 10001  # the image's user; any non-root id works


@pytest.mark.parametrize(
    ("owner", "group", "mode", "accepted"),
    [
        (0, GID, 0o440, True),  # a Kubernetes Secret: defaultMode 0400 + fsGroup
        (0, GID, 0o444, False),  # others may read
        (0, GID, 0o460, False),  # the group may write
        (0, 0, 0o440, False),  # group-readable by a group this process is not in
        (UID, GID, 0o440, False),  # its own file: the group bit only widens access
    ],
)
def test_secret_volume_layout_is_the_one_group_readable_key_accepted(openssl_keys, tmp_path, owner, group, mode,
                                                                     accepted) -> None:
    """Regression: the permission check refused the documented Kubernetes Secret mount
    (``0440 root:<fsGroup>``). Real files, real ownership; the process identity is the
    image's (uid/gid 10001). The container test runs the same layout as that user."""
    key = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", key)
    os.chown(key, owner, group)
    os.chmod(key, mode)
    assert keyfile._secret_volume_layout(os.stat(key), euid=UID, groups={GID}) is accepted


def test_group_readable_key_of_our_own_is_refused_when_running_as_its_owner(openssl_keys, tmp_path) -> None:
    key = tmp_path / "private.pem"
    shutil.copy(openssl_keys / "private.pem", key)
    os.chmod(key, 0o440)  # owned by this (root) process: the layout exception does not apply
    with pytest.raises(UnusableKey, match="lets group or others read"):
        keyfile.load_key(str(key), None)
