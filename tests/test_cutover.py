"""Scheduled key cut-over (SPEC §8), in process: the instant, the holder's switch at T,
the cap on token lifetimes, the watcher's refusals and the metrics. Real keys made
by openssl, real files, a real server on both call paths; the clock is the real one
wherever a switch is measured."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hardening_util import UUID, KeyVolume, Recorder, make_rsa_key, verifies, wait_for
from prometheus_client import CollectorRegistry

from sidecar.domain import keys
from sidecar.domain.errors import ConfigError
from sidecar.domain.keys import KeyHolder, parse_instant
from sidecar.ops.rotation import KeyRotator
from sidecar.service.cache import TokenCache
from sidecar.service.usecases import Sidecar
from sidecar.telemetry.metrics import Metrics
from sidecar.v1 import identity_pb2 as pb

EMAIL = "cutover@example.com"


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cutover-keys")
    files = {name: make_rsa_key(d / f"{name}.pem") for name in ("old", "new", "other")}
    files["short"] = make_rsa_key(d / "short.pem", bits=1024)
    return files


@pytest.fixture(scope="module")
def loaded(key_files: dict[str, Path]) -> dict[str, keys.SigningKey]:
    return {name: keys.load(str(path)) for name, path in key_files.items() if name != "short"}


def iso(unix: float) -> str:
    return keys.format_instant(unix)


class Observed(Recorder):
    """Also keeps what the cut-over hooks were told."""

    def __init__(self) -> None:
        super().__init__()
        self.next: list[tuple[str | None, int | None]] = []
        self.refused: list[str] = []
        self.late: list[float] = []

    def next_key(self, key: keys.PublicKeyInfo | None, activates_at: int | None) -> None:
        self.next.append((key.key_id if key else None, activates_at))

    def next_key_refused(self, what: str) -> None:
        self.refused.append(what)

    def key_late(self, seconds: float) -> None:
        self.late.append(seconds)


# --- the instant ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "unix"), [
    ("2026-12-03T10:00:00Z", 1796292000),
    ("2026-12-03T10:00:00Z\n", 1796292000),
    ("2026-12-03T10:00:00z\r\n", 1796292000),
    ("2026-12-03t11:00:00+01:00", 1796292000),
    ("2026-12-03 05:00:00-05:00", 1796292000),
    ("2026-12-03T10:00:00.000Z", 1796292000),
])
def test_instant_forms(text: str, unix: int) -> None:
    assert parse_instant(text, "T") == unix


@pytest.mark.parametrize(("text", "rule"), [
    ("2026-12-03T10:00:00", "with offset"),  # no offset: which zone?
    ("2026-12-03", "RFC 3339"),
    ("1796292000", "RFC 3339"),
    ("2026-12-03T10:00:00.5Z", "whole second"),
    ("2026-13-03T10:00:00Z", "not a valid date"),
    ("2026-12-03T10:00:60Z", "not a valid date"),
    ("2026-12-03T10:00:00Z\n\n", "RFC 3339"),
    ("1969-12-31T23:59:59Z", "after 1970"),
    ("9999-12-31T23:59:59-01:00", "before 10000"),
    ("", "RFC 3339"),
])
def test_bad_instants_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ConfigError, match=rule) as exc:
        parse_instant(text, "SIDECAR_NEXT_KEY_ACTIVATES_AT")
    assert str(exc.value).startswith("SIDECAR_NEXT_KEY_ACTIVATES_AT: ")


# --- the holder and the use cases ----------------------------------------------------------------

def test_tokens_before_t_end_by_t_whatever_the_lifetime(loaded) -> None:
    old, new = loaded["old"], loaded["new"]
    t = int(time.time()) + 3600
    holder = KeyHolder(old)
    s = Sidecar(holder, salt="s", default_ttl=timedelta(hours=24), cache=TokenCache(100))
    early = s.issue_token(EMAIL, UUID, None)  # before anything is scheduled: a full day
    assert early.expires_at > t
    holder.schedule(new, t)
    capped = s.issue_token(EMAIL, UUID, None)
    assert capped.jwt != early.jwt, "the cached day-long token must not be handed out once T is scheduled"
    assert capped.expires_at == t and capped.key_id == old.key_id
    assert s.issue_token(EMAIL, UUID, timedelta(minutes=5)).expires_at < t  # shorter than the cap: untouched
    assert s.issue_token(EMAIL, UUID, None).jwt == capped.jwt  # the capped token is reused
    assert verifies(capped.jwt, old.public_pem) and not verifies(capped.jwt, new.public_pem)


def test_last_second_before_t_and_the_switch_at_t(loaded) -> None:
    """In the last second before T a token lives less than a second (exp = T); at T by the
    holder's clock the next key signs, caches are purged, GetPublicKey describes it."""
    old, new = loaded["old"], loaded["new"]
    now = [1_000_000.0]
    holder = KeyHolder(old, clock=lambda: now[0])
    cache = TokenCache(100, clock=lambda: now[0])
    s = Sidecar(holder, salt="s", clock=lambda: now[0], cache=cache, default_ttl=timedelta(hours=1))
    cutovers: list[tuple[str, str, float]] = []
    holder.on_cutover(lambda o, sch, late: cutovers.append((o.key_id, sch.key.key_id, late)))
    holder.schedule(new, 1_000_100)
    assert s.public_keys() == (old, keys.Scheduled(new, 1_000_100))
    now[0] = 1_000_099.2
    last = s.issue_token(EMAIL, UUID, None)
    assert (last.key_id, last.expires_at) == (old.key_id, 1_000_100)
    assert len(cache) == 1
    now[0] = 1_000_100.0
    first = s.issue_token(EMAIL, UUID, None)
    assert first.key_id == new.key_id and first.expires_at == 1_000_100 + 3600
    assert len(cache) == 1 and cutovers == [(old.key_id, new.key_id, 0.0)]  # purged, then the new token
    assert s.public_keys() == (new, None)
    assert s.verify_token(first.jwt).valid and s.verify_token(last.jwt).reason == "bad_signature"


def test_verify_follows_the_active_key_with_the_previous_key_grace(loaded) -> None:
    old, new = loaded["old"], loaded["new"]
    now = [2_000_000.0]
    holder = KeyHolder(old, clock=lambda: now[0])
    s = Sidecar(holder, salt="s", clock=lambda: now[0], previous_key_grace=timedelta(minutes=10))
    holder.schedule(new, 2_000_010)
    before = s.issue_token(EMAIL, UUID, None)
    assert before.expires_at == 2_000_010
    now[0] = 2_000_009.0
    assert s.verify_token(before.jwt).valid
    now[0] = 2_000_010.0
    assert s.verify_token(before.jwt).reason == "expired"  # by T: no old token outlives it
    assert s.evaluate_event("form.submit", True, before.jwt).accepted is False


def test_a_key_scheduled_after_its_instant_activates_at_once_and_is_late(loaded) -> None:
    old, new = loaded["old"], loaded["new"]
    holder = KeyHolder(old)
    seen: list[float] = []
    holder.on_cutover(lambda _o, _s, late: seen.append(late))
    holder.schedule(new, int(time.time()) - 30)
    assert holder.current is new and holder.next is None
    assert len(seen) == 1 and 30 <= seen[0] < 32


# --- the watcher ---------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path: Path, key_files: dict[str, Path]) -> KeyVolume:
    f = KeyVolume(tmp_path / "secret", key_files)
    f.publish(private_pem=f.key("old"))
    return f


def rotation_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sidecar.rotation" and r.levelno >= logging.INFO]


def test_missing_files_are_normal_then_picked_up(files, loaded, caplog) -> None:
    old, new = loaded["old"], loaded["new"]
    holder, obs = KeyHolder(old), Observed()
    rot = files.rotator(holder, obs, poll_interval=0.05)
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        rot.start(initial=old)
        try:
            assert holder.next is None and obs.refused == [] and rotation_log(caplog) == []
            t = int(time.time()) + 3600
            files.publish(next_pem=files.key("new"))  # the key alone: nothing to schedule yet
            time.sleep(0.3)
            assert holder.next is None
            files.publish(next_activates_at=f"{iso(t)}\n".encode())
            wait_for(lambda: holder.next is not None, what="next key scheduled")
        finally:
            rot.stop()
    assert holder.next == keys.Scheduled(holder.next.key, t) and holder.next.key.key_id == new.key_id
    assert holder.current is old and obs.next == [(new.key_id, t)] and obs.refused == []
    lines = rotation_log(caplog)
    assert len(lines) == 1 and "scheduled" in lines[0] and new.key_id in lines[0] and iso(t) in lines[0]


@pytest.mark.parametrize("bad", ["short_key", "garbage_key", "group_readable", "bad_instant", "fraction",
                                 "huge_instant"])
def test_a_bad_next_key_or_instant_is_refused_once_and_changes_nothing(bad, files, loaded, caplog) -> None:
    old, new = loaded["old"], loaded["new"]
    t = int(time.time()) + 3600
    files.publish(next_pem=files.key("new"), next_activates_at=iso(t).encode())
    holder, obs = KeyHolder(old), Observed()
    rot = files.rotator(holder, obs)
    rot.start(initial=old)
    rot.stop()
    assert holder.next is not None and holder.next.key.key_id == new.key_id
    good = holder.next
    what = "instant" if bad in ("bad_instant", "fraction", "huge_instant") else "key"
    if bad == "short_key":
        files.publish(next_pem=files.key_files["short"].read_bytes())
    elif bad == "garbage_key":
        files.publish(next_pem=b"-----BEGIN PRIVATE KEY-----\nbm90\n-----END PRIVATE KEY-----\n")
    elif bad == "group_readable":
        files.publish(next_pem=files.key("other"))
        os.chmod(os.path.realpath(files.root / "next.pem"), 0o644)
    elif bad == "bad_instant":
        files.publish(next_pem=files.key("other"), next_activates_at=b"tomorrow at ten")
    elif bad == "fraction":
        files.publish(next_activates_at=(iso(t)[:-1] + ".25Z").encode())
    else:
        files.publish(next_activates_at=b"2" * 10_000)
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        assert rot.poll() is False
        assert rot.poll() is False  # tried again, reported once
    assert holder.next is good and holder.current is old
    assert obs.refused == [what]
    lines = rotation_log(caplog)
    assert len(lines) == 1 and "refused" in lines[0] and f"keeping the schedule of {new.key_id}" in lines[0]
    assert "BEGIN" not in lines[0] and "MII" not in lines[0]


def test_removal_before_t_lifts_the_cap(files, loaded, caplog) -> None:
    old = loaded["old"]
    t = int(time.time()) + 3600
    files.publish(next_pem=files.key("new"), next_activates_at=iso(t).encode())
    holder, obs = KeyHolder(old), Observed()
    s = Sidecar(holder, salt="s", default_ttl=timedelta(hours=24))
    rot = files.rotator(holder, obs)
    rot.start(initial=old)
    rot.stop()
    assert s.issue_token(EMAIL, UUID, None).expires_at == t
    files.publish(next_pem=None, next_activates_at=None)
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        assert rot.poll() is True
    assert holder.next is None and obs.next[-1] == (None, None)
    assert s.issue_token(EMAIL, UUID, None).expires_at > t + 20 * 3600
    assert any("unscheduled" in line for line in rotation_log(caplog))


def test_next_key_equal_to_the_active_key_schedules_nothing(files, loaded, caplog) -> None:
    old = loaded["old"]
    t = int(time.time()) + 3600
    files.publish(next_pem=files.key("old"), next_activates_at=iso(t).encode())
    holder, obs = KeyHolder(old), Observed()
    s = Sidecar(holder, salt="s", default_ttl=timedelta(hours=24))
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        rot = files.rotator(holder, obs)
        rot.start(initial=old)
        rot.stop()
    assert holder.next is None and obs.next == [] and obs.refused == [] and rotation_log(caplog) == []
    assert s.issue_token(EMAIL, UUID, None).expires_at > t  # nothing to switch: no cap


def test_t_in_the_past_activates_at_once_and_counts_late(files, loaded, caplog) -> None:
    old, new = loaded["old"], loaded["new"]
    holder, obs = KeyHolder(old), Observed()
    rot = files.rotator(holder, obs)
    rot.start(initial=old)
    rot.stop()
    t = int(time.time()) - 5
    files.publish(next_pem=files.key("new"), next_activates_at=iso(t).encode())
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        assert rot.poll() is True
    assert holder.current.key_id == new.key_id and holder.next is None
    assert len(obs.late) == 1 and 5 <= obs.late[0] < 8
    assert obs.activated == [new.key_id]
    late = [line for line in rotation_log(caplog) if "LATE" in line]
    assert len(late) == 1 and iso(t) in late[0]


def test_started_after_t_uses_the_next_key_without_counting_late(files, loaded, caplog) -> None:
    """A pod (re)started after T, its Secret not promoted yet: the next key is in force."""
    old, new = loaded["old"], loaded["new"]
    files.publish(next_pem=files.key("new"), next_activates_at=iso(time.time() - 600).encode())
    holder, obs = KeyHolder(old), Observed()
    rot = files.rotator(holder, obs)
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        rot.start(initial=old)
        # SIGHUP re-reads the key file, which still holds the old key: the next key stays in force.
        assert rot.reload("SIGHUP") is False
        rot.stop()
    assert holder.current.key_id == new.key_id and obs.late == []
    assert any("passed before this process started" in line for line in rotation_log(caplog))
    assert any("keeping it" in line for line in rotation_log(caplog))


def test_promoting_the_active_key_into_the_key_file_is_a_no_op(files, loaded, caplog) -> None:
    old, new = loaded["old"], loaded["new"]
    holder, obs = KeyHolder(old), Observed()
    cache = TokenCache(100)
    s = Sidecar(holder, salt="s", cache=cache)
    t = time.time() + 0.6
    files.publish(next_pem=files.key("new"), next_activates_at=iso(t + 1 - t % 1).encode())
    rot = files.rotator(holder, obs, poll_interval=0.05)
    rot.start(initial=old)
    try:
        wait_for(lambda: holder.current.key_id == new.key_id, timeout=5, what="the switch at T")
        s.issue_token(EMAIL, UUID, None)
        assert len(cache) == 1
        with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
            files.publish(private_pem=files.key("new"), next_pem=None, next_activates_at=None)  # the promotion
            time.sleep(0.5)
    finally:
        rot.stop()
    assert holder.current.key_id == new.key_id and len(cache) == 1  # no swap, no purge
    assert rotation_log(caplog) == [] and obs.reloads == [] and obs.activated == [new.key_id]


def test_a_failed_reload_is_retried_on_the_next_poll(files, loaded, caplog) -> None:
    """Regression (issue 15, finding 5): a reload that could not read the file (out of file
    descriptors) recorded the file as seen, so the new key was never loaded."""
    old, new = loaded["old"], loaded["new"]
    holder, obs = KeyHolder(old), Observed()
    rot = KeyRotator(holder, obs, str(files.root / "private.pem"))
    files.publish(private_pem=files.key("new"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    with caplog.at_level(logging.ERROR, logger="sidecar.rotation"):
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no file can be opened
        try:
            assert rot.poll() is False
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert holder.current is old and obs.reloads == ["failure"]
    assert "Too many open files" in rotation_log(caplog)[0]
    assert rot.poll() is True  # the file did not change, and it is read again
    assert holder.current.key_id == new.key_id and obs.reloads == ["failure", "success"]


def test_metrics_follow_the_schedule(files, loaded) -> None:
    old, new = loaded["old"], loaded["new"]
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.key_activated(old)
    holder = KeyHolder(old)
    rot = KeyRotator(holder, m, str(files.root / "private.pem"), next_key_file=str(files.root / "next.pem"),
                     next_activates_at=f"@{files.root / 'next-activates-at'}")

    def value(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(name, labels)

    assert value("sidecar_key_info", key_id=old.key_id, state="active") == 1
    assert value("sidecar_key_next_activation_timestamp_seconds") == 0
    t = int(time.time()) + 3600
    files.publish(next_pem=files.key("new"), next_activates_at=iso(t).encode())
    assert rot.poll() is True
    assert value("sidecar_key_info", key_id=new.key_id, state="next") == 1
    assert value("sidecar_key_next_activation_timestamp_seconds") == t
    files.publish(next_activates_at=b"soon")
    rot.poll()
    assert value("sidecar_next_key_refusals_total", what="instant") == 1
    assert value("sidecar_next_key_refusals_total", what="key") == 0
    files.publish(next_activates_at=iso(time.time() - 2).encode())
    assert rot.poll() is True
    assert value("sidecar_key_info", key_id=new.key_id, state="active") == 1
    assert value("sidecar_key_info", key_id=old.key_id, state="active") is None
    assert value("sidecar_key_info", key_id=new.key_id, state="next") is None
    assert value("sidecar_key_next_activation_timestamp_seconds") == 0
    assert value("sidecar_key_late_activations_total") == 1
    assert 2 <= (value("sidecar_key_late_activation_seconds") or 0) < 5
    assert value("sidecar_signing_key_info", key_id=new.key_id, bits="2048") == 1


# --- GetPublicKey on both call paths -------------------------------------------------------------

@pytest.fixture(params=["fast", "stock"])
def call_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_get_public_key_describes_the_next_key_then_switches(start_server, loaded) -> None:
    old, new = loaded["old"], loaded["new"]
    s = start_server(key=old)
    stub = s.stub()
    r = stub.GetPublicKey(pb.GetPublicKeyRequest())
    assert r.key_id == old.key_id and not r.HasField("next_key")
    t = int(time.time()) + 2
    s.sidecar.keys.schedule(new, t)
    r = stub.GetPublicKey(pb.GetPublicKeyRequest())
    assert r.key_id == old.key_id and r.HasField("next_key")
    n = r.next_key
    assert (n.key_id, n.pem, n.certificate_code, n.certificate_code_bare, n.activates_at.seconds) == (
        new.key_id, new.public_pem, new.certificate_code, new.certificate_code_bare, t)
    tok = stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=UUID)).token
    assert tok.key_id == old.key_id and tok.expires_at.seconds == t
    time.sleep(max(0.0, t - time.time()))
    r = stub.GetPublicKey(pb.GetPublicKeyRequest())
    assert r.key_id == new.key_id and not r.HasField("next_key")
    tok = stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=UUID)).token
    assert tok.key_id == new.key_id and verifies(tok.jwt, new.public_pem) and not verifies(tok.jwt, old.public_pem)
    v = stub.VerifyToken(pb.VerifyTokenRequest(jwt=tok.jwt))
    assert v.valid and v.key_id == new.key_id


def test_the_watcher_switches_at_t_without_any_call(files, loaded) -> None:
    """Metrics (and so the alerts) follow T even in a sidecar nobody calls."""
    old, new = loaded["old"], loaded["new"]
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.key_activated(old)
    holder = KeyHolder(old)
    t = int(time.time()) + 2
    files.publish(next_pem=files.key("new"), next_activates_at=iso(t).encode())
    rot = KeyRotator(holder, m, str(files.root / "private.pem"), next_key_file=str(files.root / "next.pem"),
                     next_activates_at=f"@{files.root / 'next-activates-at'}", poll_interval=60)
    rot.start(initial=old)
    try:
        while time.time() < t + 0.2:
            time.sleep(0.01)
        active = reg.get_sample_value("sidecar_key_info", {"key_id": new.key_id, "state": "active"})
    finally:
        rot.stop()
    assert active == 1  # read from the registry only: the watcher made the switch, at T, not at the next poll
    assert reg.get_sample_value("sidecar_key_late_activations_total") == 0


def test_a_literal_instant_and_a_bad_one(tmp_path, key_files, loaded, caplog) -> None:
    old, new = loaded["old"], loaded["new"]
    key = tmp_path / "private.pem"
    shutil.copy(key_files["old"], key)
    t = int(time.time()) + 3600
    holder, obs = KeyHolder(old), Observed()
    KeyRotator(holder, obs, str(key), next_key_file=str(key_files["new"]),
               next_activates_at=iso(t)).reload_next("start")
    assert holder.next is not None and (holder.next.key.key_id, holder.next.activates_at) == (new.key_id, t)
    holder, obs = KeyHolder(old), Observed()
    with caplog.at_level(logging.INFO, logger="sidecar.rotation"):
        rot = KeyRotator(holder, obs, str(key), next_key_file=str(key_files["new"]),
                         next_activates_at="next tuesday")
        rot.start(initial=old)
        rot.stop()
    assert holder.next is None and holder.current is old and obs.refused == ["instant"]
    (line,) = rotation_log(caplog)
    assert "SIDECAR_NEXT_KEY_ACTIVATES_AT: must be an RFC 3339 instant" in line and "nothing is scheduled" in line
