"""Scheduled key cut-over across real ``sidecar serve`` processes and workers, by the real clock.

Three sidecars (one worker on the fast path, two pre-forked workers, one worker on
the stock path) start with the next-key settings pointing at files that do not
exist yet. Under a bounded load, each gets the next key and its instant at a
different moment before T. Every process, and every worker, switches at T: the
last old-key and the first new-key token of each worker are read from its audit
log (server time, milliseconds): none of the new key before T, none of the old
key later than T + 50 ms. The callers' send and receive times bound the switch
from outside. No call fails, no old-key token outlives T, and every token
issued after T verifies with the new public key only.

The figures are printed (``-s``) for the closing note:
``.venv/bin/python -m pytest -q -s tests/test_cutover_processes.py``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from hardening_util import UUID, KeyVolume, make_rsa_key, verifies

from sidecar.domain import keys
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc

#: How close to T (and to each other) every worker must switch.
BOUND = 0.050


@dataclass
class Calls:
    """What one caller thread saw: (sent, received, key_id, exp, jwt) and failures."""

    ok: list[tuple[float, float, str, int, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def caller(addr: str, until: float, out: Calls) -> None:
    with grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = pb_grpc.IdentityServiceStub(ch)
        n = 0
        while time.time() < until:
            n += 1
            sent = time.time()
            try:
                tok = stub.IssueToken(pb.IssueTokenRequest(email=f"c{n % 50}@example.com", uuid=UUID),
                                      timeout=10).token
            except grpc.RpcError as exc:
                out.failed.append(f"{exc.code().name}: {exc.details()}")
                continue
            out.ok.append((sent, time.time(), tok.key_id, tok.expires_at.seconds, tok.jwt))


def _at(record: dict[str, str]) -> float:
    return datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()


def scheduled_at(stderr: str) -> dict[int, float]:
    """When each worker logged that it scheduled the next key (server clock)."""
    found = {}
    for line in stderr.splitlines():
        if '"log"' in line and "scheduled (" in line:
            r = json.loads(line)
            found[int(r["pid"])] = _at(r)
    return found


def audit_tokens(stderr: str) -> list[tuple[int, float, str, int]]:
    """(pid, server time, key_id, exp) of every ``token_issued`` record."""
    found = []
    for line in stderr.splitlines():
        if '"token_issued"' not in line:
            continue
        r = json.loads(line)
        at = _at(r)
        found.append((r["pid"], at, r["key_id"], r["expires_at"]))
    return found


@pytest.mark.slow
def test_processes_and_workers_switch_at_t_together(spawn_sidecar, tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir()
    old_path, new_path = make_rsa_key(d / "old.pem"), make_rsa_key(d / "new.pem")
    old, new = keys.load(str(old_path)), keys.load(str(new_path))
    names = ("one-worker", "two-workers", "stock-path")
    extra = {"one-worker": [], "two-workers": ["--workers", "2"], "stock-path": ["--call-path", "stock"]}
    vols, procs = {}, {}
    for name in names:
        vol = KeyVolume(tmp_path / name, {"old": old_path, "new": new_path})
        vol.publish(private_pem=vol.key("old"))
        vols[name] = vol
        procs[name] = spawn_sidecar(
            "--key-file", str(vol.root / "private.pem"), "--uuid-salt", "s", "--key-poll-interval", "1",
            "--next-key-file", str(vol.root / "next.pem"),
            "--next-key-activates-at", f"@{vol.root / 'next-activates-at'}", *extra[name],
            env={"SIDECAR_THREADS": "2"})
    t = math.ceil(time.time()) + 6
    until = t + 1.0
    calls: dict[str, list[Calls]] = {name: [] for name in names}
    threads = []
    for name in names:
        for _ in range(6 if name == "two-workers" else 2):  # separate connections spread over the workers
            c = Calls()
            calls[name].append(c)
            threads.append(threading.Thread(target=caller, args=(procs[name].addr, until, c), daemon=True))
    for th in threads:
        th.start()
    # The next key arrives at a different moment in each: now, 3.5 s and 2.5 s before T (polled every second).
    delivered = {}
    for name, at in (("one-worker", time.time()), ("two-workers", t - 3.5), ("stock-path", t - 2.5)):
        time.sleep(max(0.0, at - time.time()))
        vols[name].publish(next_pem=vols[name].key("new"), next_activates_at=f"{keys.format_instant(t)}\n".encode())
        delivered[name] = time.time() - t
    for th in threads:
        th.join(timeout=30)
    time.sleep(0.3)  # the audit writers flush every 50 ms

    report = [f"T = {keys.format_instant(t)}"]
    first_new_all, last_old_all = [], []
    for name in names:
        ok = [r for c in calls[name] for r in c.ok]
        failed = [f for c in calls[name] for f in c.failed]
        assert failed == [], (name, failed[:5])
        olds = [r for r in ok if r[2] == old.key_id]
        news = [r for r in ok if r[2] == new.key_id]
        assert len(olds) + len(news) == len(ok) and olds and news, name
        # Tokens issued before a worker knew T may outlive it (deploy the next key a lifetime ahead);
        # once it knows, none does. Judged by when the call was sent: the audit record's time is when
        # it was written, which on a loaded machine can be long after the key was chosen.
        known = scheduled_at(procs[name].stderr())
        assert len(known) == (2 if name == "two-workers" else 1), procs[name].stderr()[-3000:]
        knew = max(known.values())
        capped = [r for r in olds if r[0] > knew]
        assert capped, (name, knew - t, max(sent for sent, *_ in olds) - t)
        assert all(exp <= t for _, _, _, exp, _ in capped), "an old-key token outlives T"
        assert all(sent < t for sent, *_ in olds), "an old-key token was asked for at or after T"
        assert all(received >= t for _, received, *_ in news), "a new-key token came back before T"
        for _, _, _, _, jwt in olds[-3:]:
            assert verifies(jwt, old.public_pem) and not verifies(jwt, new.public_pem)
        for _, _, _, _, jwt in news[:: max(1, len(news) // 20)]:
            assert verifies(jwt, new.public_pem) and not verifies(jwt, old.public_pem)
        # From outside: the switch lies between the last old-key call's send and the first new-key answer.
        last_old_sent = max(sent for sent, *_ in olds)
        first_new_received = min(received for _, received, *_ in news)
        # From inside: per worker, the audit log's last old-key and first new-key token.
        by_pid: dict[int, list[tuple[float, str, int]]] = {}
        for pid, at, kid, exp in audit_tokens(procs[name].stderr()):
            by_pid.setdefault(pid, []).append((at, kid, exp))
        for pid, tokens in sorted(by_pid.items()):
            old_at = [at for at, kid, _ in tokens if kid == old.key_id]
            new_at = [at for at, kid, _ in tokens if kid == new.key_id]
            if not old_at or not new_at:
                continue  # this worker got no calls on one side of T
            assert max(old_at) < min(new_at), (name, pid)
            last_old_all.append(max(old_at))
            first_new_all.append(min(new_at))
            report.append(f"{name} pid {pid}: last old-key token T{max(old_at) - t:+.3f} s, "
                          f"first new-key token T{min(new_at) - t:+.3f} s (server clock, audit log)")
            # Never early, never late: no new-key token before T, no old-key token past T + 50 ms
            # (an old-key signature started before T may finish just after it). Together, every
            # worker switched within [T, T + 50 ms]: within 50 ms of T and of each other. How soon
            # after T the first new-key token came depends on when a call reached the worker
            # (on a loaded machine a worker can go 50 ms without one), so that is reported, not asserted.
            assert min(new_at) >= t - 0.001, (name, pid, min(new_at) - t)  # audit times are in whole ms
            assert max(old_at) <= t + BOUND, (name, pid, max(old_at) - t)
        report.append(f"{name}: {len(olds)} old-key and {len(news)} new-key tokens, 0 failed; next key delivered "
                      f"T{delivered[name]:+.2f} s; callers: last old-key sent T{last_old_sent - t:+.3f} s, "
                      f"first new-key received T{first_new_received - t:+.3f} s")
        with grpc.insecure_channel(procs[name].addr) as ch:
            r = pb_grpc.IdentityServiceStub(ch).GetPublicKey(pb.GetPublicKeyRequest(), timeout=5)
        assert r.key_id == new.key_id and not r.HasField("next_key")
    assert len(first_new_all) >= 3, report
    spread = max(first_new_all) - min(first_new_all)  # reported: see above
    report.append(f"first new-key token across {len(first_new_all)} workers of 3 processes: spread {spread * 1000:.0f} ms; "
                  f"window last old -> first new: {(max(first_new_all) - min(last_old_all)) * 1000:.0f} ms")
    print("\n" + "\n".join(report))
    for name in names:
        code, err = procs[name].stop()
        assert code == 0, err
        assert "BEGIN" not in err
        assert err.count("key cut over at") == (2 if name == "two-workers" else 1), err[-2000:]
