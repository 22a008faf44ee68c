"""``sidecar rotate plan`` / ``rotate status`` and the next-key settings of ``sidecar serve``,
as real processes: the files plan writes (checked with openssl), the refusals, and a
server whose next key or instant is bad still starts and serves."""

from __future__ import annotations

import base64
import json
import math
import os
import stat
import time
from pathlib import Path

import grpc
from hardening_util import UUID, KeyVolume, make_rsa_key, openssl, verifies

from sidecar.domain import keys
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.test_cli import refusal, run


def test_plan_writes_the_next_key_and_prints_what_to_run_and_paste(tmp_path: Path) -> None:
    t = math.ceil(time.time()) + 3 * 86400
    out = tmp_path / "next"
    r = run("rotate", "plan", "--at", keys.format_instant(t), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr  # three days ahead: more than a token lifetime
    key = keys.load(str(out / "private.pem"))
    assert stat.S_IMODE(os.stat(out / "private.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "secret-patch.json").st_mode) == 0o600
    # public.pem is what openssl derives from private.pem, as keygen writes it.
    assert (out / "public.pem").read_bytes() == openssl("rsa", "-pubout", "-in", str(out / "private.pem"), cwd=out)
    assert (out / "next-activates-at").read_text() == keys.format_instant(t) + "\n"
    assert keys.parse_instant((out / "next-activates-at").read_text(), "file") == t
    patch = json.loads((out / "secret-patch.json").read_text())
    data = {k: base64.b64decode(v) for k, v in patch["data"].items()}
    assert data == {"next.pem": (out / "private.pem").read_bytes(),
                    "next-activates-at": (out / "next-activates-at").read_bytes()}
    lines = r.stdout.splitlines()
    assert key.certificate_code in lines
    assert f"  kubectl patch secret sidecar-signing --patch-file {out / 'secret-patch.json'}" in lines
    assert any(line.strip().startswith("kubectl patch secret sidecar-signing --type json") and "move" in line
               for line in lines)
    assert key.key_id in r.stdout and keys.format_instant(t) in r.stdout
    assert "PRIVATE" not in r.stdout + r.stderr


def test_plan_refusals(tmp_path: Path) -> None:
    assert "--at: must be an RFC 3339 instant" in refusal(run("rotate", "plan", "--at", "tomorrow",
                                                              "--out", str(tmp_path / "a")))
    past = keys.format_instant(time.time() - 60)
    assert "--at: must be in the future" in refusal(run("rotate", "plan", "--at", past, "--out", str(tmp_path / "b")))
    soon = keys.format_instant(math.ceil(time.time()) + 3600)
    r = run("rotate", "plan", "--at", soon, "--out", str(tmp_path / "c"))
    assert r.returncode == 0 and "warning: T is only" in r.stderr
    assert "already exists" in refusal(run("rotate", "plan", "--at", soon, "--out", str(tmp_path / "c")))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_serve_refuses_half_a_schedule(openssl_keys: Path) -> None:
    env = {"SIDECAR_KEY_FILE": str(openssl_keys / "private.pem"), "SIDECAR_UUID_SALT": "s"}
    line = refusal(run("serve", env={**env, "SIDECAR_NEXT_KEY_FILE": "/nonexistent/next.pem"}))
    assert "SIDECAR_NEXT_KEY_FILE and SIDECAR_NEXT_KEY_ACTIVATES_AT: set both or neither" in line
    line = refusal(run("serve", "--next-key-activates-at", "2030-01-01T00:00:00Z", "--next-key-file", "/x"))
    assert "needs SIDECAR_KEY_FILE" in line


def test_bad_next_key_and_instant_never_stop_serving_and_status_shows_the_schedule(
        spawn_sidecar, tmp_path: Path) -> None:
    old_path = make_rsa_key(tmp_path / "old.pem")
    new_path = make_rsa_key(tmp_path / "new.pem")
    old, new = keys.load(str(old_path)), keys.load(str(new_path))
    vol = KeyVolume(tmp_path / "secret", {"old": old_path, "new": new_path})
    vol.publish(private_pem=vol.key("old"), next_pem=b"not a key at all", next_activates_at=b"at ten")
    p = spawn_sidecar("--key-file", str(vol.root / "private.pem"), "--uuid-salt", "s",
                      "--next-key-file", str(vol.root / "next.pem"),
                      "--next-key-activates-at", f"@{vol.root / 'next-activates-at'}")
    with grpc.insecure_channel(p.addr) as ch:
        stub = pb_grpc.IdentityServiceStub(ch)
        tok = stub.IssueToken(pb.IssueTokenRequest(email="a@b.cd", uuid=UUID), timeout=5).token
        assert tok.key_id == old.key_id and verifies(tok.jwt, old.public_pem)
        assert not stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=5).HasField("next_key")
        r = run("rotate", "status", "--addr", p.addr)
        assert r.returncode == 0 and f"active  {old.key_id}" in r.stdout and "none scheduled" in r.stdout
        t = math.ceil(time.time()) + 7200
        vol.publish(next_pem=vol.key("new"), next_activates_at=keys.format_instant(t).encode())
        deadline = time.monotonic() + 10
        while not stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=5).HasField("next_key"):
            assert time.monotonic() < deadline, p.stderr()
            time.sleep(0.1)
        tok = stub.IssueToken(pb.IssueTokenRequest(email="a@b.cd", uuid=UUID), timeout=5).token
        assert tok.expires_at.seconds == t and tok.key_id == old.key_id
    r = run("rotate", "status", "--addr", p.addr)
    assert r.returncode == 0, r.stderr
    assert f"active  {old.key_id}" in r.stdout
    assert f"next    {new.key_id}  activates at {keys.format_instant(t)}  (in 1h 59m" in r.stdout
    code, err = p.stop()
    assert code == 0
    refused = [line for line in err.splitlines() if "next key (start) refused" in line]
    # One line for each bad setting; neither names the content.
    assert len(refused) == 2, err
    assert any("not a private key" in line for line in refused)
    assert any("RFC 3339" in line for line in refused)
    assert "not a key at all" not in err


def test_metrics_with_workers_show_the_schedule_then_the_switch(spawn_sidecar, tmp_path: Path) -> None:
    """With ``--workers 2`` the master serves the workers' sum: next key and T before, the new
    active key after, the old one at 0 (series cannot be removed across processes)."""
    import urllib.request

    from tests.conftest import free_port

    old_path, new_path = make_rsa_key(tmp_path / "old.pem"), make_rsa_key(tmp_path / "new.pem")
    old, new = keys.load(str(old_path)), keys.load(str(new_path))
    vol = KeyVolume(tmp_path / "secret", {"old": old_path, "new": new_path})
    t = math.ceil(time.time()) + 8
    vol.publish(private_pem=vol.key("old"), next_pem=vol.key("new"), next_activates_at=keys.format_instant(t).encode())
    metrics_addr = f"127.0.0.1:{free_port()}"
    p = spawn_sidecar("--key-file", str(vol.root / "private.pem"), "--uuid-salt", "s", "--workers", "2",
                      "--next-key-file", str(vol.root / "next.pem"),
                      "--next-key-activates-at", f"@{vol.root / 'next-activates-at'}",
                      env={"SIDECAR_METRICS_ADDR": metrics_addr})

    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5).read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(("sidecar_key_info", "sidecar_key_next_activation"))}

    before = scrape()
    assert before[f'sidecar_key_info{{key_id="{old.key_id}",state="active"}}'] == 1
    assert before[f'sidecar_key_info{{key_id="{new.key_id}",state="next"}}'] == 1
    assert before["sidecar_key_next_activation_timestamp_seconds"] == t
    time.sleep(max(0.0, t - time.time()) + 0.3)  # no call at all: the watchers switch at T
    after = scrape()
    assert after[f'sidecar_key_info{{key_id="{new.key_id}",state="active"}}'] == 1
    assert after[f'sidecar_key_info{{key_id="{old.key_id}",state="active"}}'] == 0
    assert after[f'sidecar_key_info{{key_id="{new.key_id}",state="next"}}'] == 0
    assert after["sidecar_key_next_activation_timestamp_seconds"] == 0
    code, err = p.stop()
    assert code == 0 and err.count("key cut over at") == 2, err[-2000:]


def test_plan_with_a_leftover_patch_file_writes_no_key(tmp_path: Path) -> None:
    """A secret-patch.json (or next-activates-at) left from an earlier plan refuses the run before
    anything is written: no new private key is left on disk beside the old patch."""
    out = tmp_path / "plan"
    out.mkdir()
    (out / "secret-patch.json").write_text("{}\n")
    soon = keys.format_instant(math.ceil(time.time()) + 7200)
    assert "already exists" in refusal(run("rotate", "plan", "--at", soon, "--out", str(out)))
    assert sorted(p.name for p in out.iterdir()) == ["secret-patch.json"]
