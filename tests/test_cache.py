"""The token cache: reuse rules with a fixed clock, rotation, settings, and over the wire."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta

import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from sidecar.cli import config
from sidecar.cli.serve import make_cache
from sidecar.domain import keys
from sidecar.domain.errors import ConfigError
from sidecar.domain.keys import KeyHolder
from sidecar.domain.tokens import Token
from sidecar.service.cache import TokenCache
from sidecar.service.observer import Observer
from sidecar.service.usecases import Sidecar
from sidecar.v1 import identity_pb2 as pb

EMAIL = "customer@synerise.com"
UUID = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting(Observer):
    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.signatures = 0

    def token_cache(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def signed(self, seconds: float) -> None:
        self.signatures += 1


def verify(jwt: str, key: keys.PublicKeyInfo) -> dict[str, object]:
    """Check the signature with joserfc (independent of PyJWT) and return the payload."""
    pub = RSAKey.import_key(key.public_pem)
    obj = jws.deserialize_compact(jwt, pub, algorithms=["RS256"])
    payload: dict[str, object] = json.loads(obj.payload)
    return payload


# --- the cache alone -------------------------------------------------------------------------


def test_reuses_only_while_at_least_the_share_remains() -> None:
    clock = Clock()
    c = TokenCache(clock=clock)
    c.put(EMAIL, UUID, Token("t", int(T0) + 100, "k"))
    assert c.get(EMAIL, UUID, 100, "k") == Token("t", int(T0) + 100, "k")
    clock.now = T0 + 50  # exactly half left
    assert c.get(EMAIL, UUID, 100, "k") is not None
    clock.now = T0 + 50.5  # less than half left: dropped
    assert c.get(EMAIL, UUID, 100, "k") is None
    assert len(c) == 0


def test_share_is_configurable() -> None:
    clock = Clock()
    c = TokenCache(min_remaining=0.9, clock=clock)
    c.put(EMAIL, UUID, Token("t", int(T0) + 100, "k"))
    clock.now = T0 + 5
    assert c.get(EMAIL, UUID, 100, "k") is not None
    clock.now = T0 + 11
    assert c.get(EMAIL, UUID, 100, "k") is None


def test_never_returns_a_token_longer_lived_than_asked() -> None:
    c = TokenCache(clock=Clock())
    c.put(EMAIL, UUID, Token("t", int(T0) + 3600, "k"))
    assert c.get(EMAIL, UUID, 60, "k") is None


def test_other_identity_or_other_key_misses() -> None:
    c = TokenCache(clock=Clock())
    c.put(EMAIL, UUID, Token("t", int(T0) + 100, "k"))
    assert c.get("other@synerise.com", UUID, 100, "k") is None
    assert c.get(EMAIL, "0f8fad5b-d9cb-469f-a165-70867728950e", 100, "k") is None
    assert c.get(EMAIL, UUID, 100, "rotated") is None


def test_bounded_lru_evicts_the_least_recently_used() -> None:
    c = TokenCache(max_entries=2, clock=Clock())
    for name in ("a", "b"):
        c.put(f"{name}@x.io", UUID, Token(name, int(T0) + 100, "k"))
    assert c.get("a@x.io", UUID, 100, "k") is not None  # a is now the most recent
    c.put("c@x.io", UUID, Token("c", int(T0) + 100, "k"))
    assert len(c) == 2
    assert c.get("b@x.io", UUID, 100, "k") is None
    assert c.get("a@x.io", UUID, 100, "k") is not None
    assert c.get("c@x.io", UUID, 100, "k") is not None


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101])
def test_never_holds_more_than_its_size(size: int) -> None:
    c = TokenCache(max_entries=size, clock=Clock())
    for n in range(10 * size + 7):
        c.put(f"u{n}@x.io", UUID, Token(str(n), int(T0) + 100, "k"))
        assert len(c) <= size
        assert c.get(f"u{n}@x.io", UUID, 100, "k") is not None  # the newest is always there


@pytest.mark.parametrize("size", [2, 10, 101])
def test_a_token_outlives_half_the_size_in_newer_tokens_and_never_the_size(size: int) -> None:
    for newer in range(size + 1):
        c = TokenCache(max_entries=size, clock=Clock())
        c.put("a@x.io", UUID, Token("a", int(T0) + 100, "k"))
        for n in range(newer):
            c.put(f"u{n}@x.io", UUID, Token(str(n), int(T0) + 100, "k"))
        kept = c.get("a@x.io", UUID, 100, "k") is not None
        if newer < size // 2:
            assert kept, newer
        if newer >= size:
            assert not kept, newer


def test_reuse_keeps_a_token_however_many_others_come_and_go() -> None:
    c = TokenCache(max_entries=10, clock=Clock())
    c.put("a@x.io", UUID, Token("a", int(T0) + 100, "k"))
    for n in range(1000):
        c.put(f"u{n}@x.io", UUID, Token(str(n), int(T0) + 100, "k"))
        if n % 4 == 0:
            assert c.get("a@x.io", UUID, 100, "k") is not None, n


def test_clear_forgets_everything() -> None:
    c = TokenCache(clock=Clock())
    c.put(EMAIL, UUID, Token("t", int(T0) + 100, "k"))
    c.clear()
    assert c.get(EMAIL, UUID, 100, "k") is None


@pytest.mark.parametrize("size, share", [(0, 0.5), (-1, 0.5), (10, 0.0), (10, 1.5)])
def test_rejects_bad_settings(size: int, share: float) -> None:
    with pytest.raises(ValueError):
        TokenCache(size, share)


# --- inside Sidecar --------------------------------------------------------------------------


def make(signing_key: keys.SigningKey, clock: Clock, cache: bool = True) -> tuple[Sidecar, Counting]:
    obs = Counting()
    s = Sidecar(KeyHolder(signing_key), salt="someString", clock=clock, observer=obs,
                cache=TokenCache(clock=clock) if cache else None)
    return s, obs


def test_sidecar_reuses_and_reports_hits(signing_key: keys.SigningKey) -> None:
    clock = Clock()
    s, obs = make(signing_key, clock)
    first = s.issue_token(EMAIL, UUID, timedelta(hours=1))
    clock.now += 60  # a fresh signature would carry another exp
    again = s.issue_token(EMAIL, UUID, timedelta(hours=1))
    assert again == first
    assert (obs.hits, obs.misses, obs.signatures) == (1, 1, 1)
    clock.now = T0 + 1801  # under half of the hour left: signed again
    third = s.issue_token(EMAIL, UUID, timedelta(hours=1))
    assert third.jwt != first.jwt
    assert verify(third.jwt, signing_key)["exp"] == int(T0 + 1801 + 3600)
    assert (obs.hits, obs.misses, obs.signatures) == (1, 2, 2)


def test_sidecar_without_cache_signs_every_call(signing_key: keys.SigningKey) -> None:
    clock = Clock()
    s, obs = make(signing_key, clock, cache=False)
    first = s.issue_token(EMAIL, UUID, None)
    clock.now += 60
    assert s.issue_token(EMAIL, UUID, None).jwt != first.jwt
    assert (obs.hits, obs.misses, obs.signatures) == (0, 0, 2)


def test_rotation_drops_the_cache(signing_key: keys.SigningKey) -> None:
    clock = Clock()
    s, obs = make(signing_key, clock)
    first = s.issue_token(EMAIL, UUID, None)
    new = keys.generate()
    s.keys.swap(new)
    assert s.cache is not None and len(s.cache) == 0
    after = s.issue_token(EMAIL, UUID, None)
    assert after.key_id == new.key_id != first.key_id
    verify(after.jwt, new)
    assert obs.hits == 0


def test_a_token_signed_with_the_old_key_after_a_swap_is_not_reused(signing_key: keys.SigningKey) -> None:
    """A call that read the old key just before a swap may put its token after the clear."""
    clock = Clock()
    s, _ = make(signing_key, clock)
    assert s.cache is not None
    s.keys.swap(keys.generate())
    s.cache.put(EMAIL, UUID, Token("old", int(T0) + 86400, signing_key.key_id))
    assert s.issue_token(EMAIL, UUID, None).jwt != "old"


# --- settings ---------------------------------------------------------------------------------


def test_settings_from_environment_and_flags() -> None:
    cfg = config.from_sources({}, {"SIDECAR_TOKEN_CACHE_SIZE": "10", "SIDECAR_TOKEN_CACHE_MIN_REMAINING": "0.75"})
    assert (cfg.token_cache_size, cfg.token_cache_min_remaining) == (10, 0.75)
    cache = make_cache(cfg)
    assert cache is not None and (cache.max_entries, cache.min_remaining) == (10, 0.75)
    cfg = config.from_sources({"token_cache_size": "0"}, {"SIDECAR_TOKEN_CACHE_SIZE": "10"})
    assert make_cache(cfg) is None
    default = config.from_sources({}, {})
    assert (default.token_cache_size, default.token_cache_min_remaining) == (100_000, 0.5)
    split = make_cache(config.from_sources({"workers": "4"}, {"SIDECAR_TOKEN_CACHE_SIZE": "1000"}))
    assert split is not None and split.max_entries == 250  # the size bounds the whole sidecar


@pytest.mark.parametrize("env, setting", [
    ({"SIDECAR_TOKEN_CACHE_SIZE": "-1"}, "SIDECAR_TOKEN_CACHE_SIZE"),
    ({"SIDECAR_TOKEN_CACHE_SIZE": "lots"}, "SIDECAR_TOKEN_CACHE_SIZE"),
    ({"SIDECAR_TOKEN_CACHE_MIN_REMAINING": "0"}, "SIDECAR_TOKEN_CACHE_MIN_REMAINING"),
    ({"SIDECAR_TOKEN_CACHE_MIN_REMAINING": "1.5"}, "SIDECAR_TOKEN_CACHE_MIN_REMAINING"),
    ({"SIDECAR_TOKEN_CACHE_MIN_REMAINING": "half"}, "SIDECAR_TOKEN_CACHE_MIN_REMAINING"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        config.from_sources({}, env)


# --- over the wire -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_repeated_identity_gets_the_identical_token_until_rotation(
    start_server: Callable[..., object], signing_key: keys.SigningKey, transport: str
) -> None:
    clock = Clock()
    obs = Counting()
    running = start_server(clock=clock, cache=TokenCache(clock=clock))
    running.sidecar.observer = obs  # type: ignore[attr-defined]
    stub = running.stub(transport)  # type: ignore[attr-defined]
    req = pb.IssueTokenRequest(email=EMAIL, uuid=UUID)
    first = stub.IssueToken(req, timeout=5).token
    clock.now += 30
    second = stub.IssueToken(req, timeout=5).token
    assert second.jwt == first.jwt and second.expires_at == first.expires_at
    assert verify(second.jwt, signing_key) == {"exp": int(T0) + 86400, "uuid": UUID, "email": EMAIL}
    resolved = stub.ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=UUID), timeout=5)
    assert resolved.token.jwt == first.jwt  # same (email, uuid) through the identity flow

    new = keys.generate()
    running.sidecar.keys.swap(new)  # type: ignore[attr-defined]
    rotated = stub.IssueToken(req, timeout=5).token
    assert rotated.jwt != first.jwt and rotated.key_id == new.key_id
    assert verify(rotated.jwt, new)["exp"] == int(T0) + 30 + 86400
    assert stub.IssueToken(req, timeout=5).token.jwt == rotated.jwt
    assert (obs.hits, obs.misses) == (3, 2)


def test_serve_refuses_a_bad_cache_setting_with_one_line(spawn_sidecar: Callable[..., object]) -> None:
    proc = spawn_sidecar("--token-cache-min-remaining", "2", wait=False)
    proc.proc.wait(timeout=30)  # type: ignore[attr-defined]
    code, err = proc.stop()  # type: ignore[attr-defined]
    assert code == 2
    assert "SIDECAR_TOKEN_CACHE_MIN_REMAINING: must be more than 0 and at most 1" in err


def test_the_cache_is_bounded_in_bytes_as_entry_cost_counts_them():
    from sidecar.service.cache import entry_cost

    budget = 64 * 1024
    c = TokenCache(max_entries=1_000_000, max_bytes=budget, clock=Clock())
    email_pad = "x" * 200
    for i in range(2_000):
        c.put(f"{i}{email_pad}@b.example", f"uuid-{i}", Token("j" * 800, 2_000_000_000, "k1"))
        assert c.bytes <= budget + 2_000
    one = entry_cost(f"0{email_pad}@b.example", "uuid-0", Token("j" * 800, 2_000_000_000, "k1"))
    assert budget // 2 // one <= len(c) <= budget // one  # well under the 2,000 stored
    assert c.bytes == sum(entry_cost(e, u, t) for d in (c._young, c._old) for (e, u), t in d.items())


def test_entry_cost_is_at_least_what_an_entry_allocates():
    """The count never under-states what an entry really allocates (tracemalloc)."""
    import gc
    import tracemalloc

    from sidecar.service.cache import entry_cost

    c = TokenCache(max_entries=100_000, max_bytes=1 << 40, clock=Clock())
    n = 5_000
    items = [(f"user{i:06d}@example.com", f"{i:036d}", Token(f"{i:0800d}", 2_000_000_000, "k1")) for i in range(n)]
    counted = sum(entry_cost(*item) for item in items)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for email, uuid, token in items:
            c.put(email, uuid, token)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    strings = sum(sys.getsizeof(e) + sys.getsizeof(u) + sys.getsizeof(t.jwt) for e, u, t in items)
    assert grown + strings <= counted  # allocations of the entries themselves plus their strings
