"""A bounded LRU of issued tokens, so a repeated identity costs no RSA signature.

A token is reused for the same ``(email, uuid)`` only while

- it was signed by the key that is active now (the whole cache is also dropped
  on rotation, see :meth:`TokenCache.clear`),
- its remaining lifetime is at least ``min_remaining`` (a share, default one
  half) of the lifetime the caller asks for now, and
- its remaining lifetime is no longer than that lifetime: a caller asking for a
  short token never gets a longer-lived one.

>>> from sidecar.domain.tokens import Token
>>> now = [1000.0]
>>> c = TokenCache(max_entries=2, clock=lambda: now[0])
>>> c.put("a@x.io", "u", Token("jwt-1", 1100, "k1"))
>>> c.get("a@x.io", "u", 100.0, "k1").jwt
'jwt-1'
>>> now[0] = 1051.0  # 49 s left of the 100 s asked for: under one half
>>> c.get("a@x.io", "u", 100.0, "k1") is None
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sidecar.domain.tokens import Token

#: Entries kept by default (about 1 KiB each).
DEFAULT_SIZE = 100_000
#: Default share of the asked lifetime a reused token must still have.
DEFAULT_MIN_REMAINING = 0.5


class TokenCache:
    """Thread-safe, bounded, least-recently-used cache of the last token per ``(email, uuid)``.

    LRU in two generations: new and reused tokens go into the young
    generation; when it holds half the entries it becomes the old generation
    and the previous old one is dropped whole. A hit in the old generation
    moves the token back to the young one. So at most ``max_entries`` tokens
    are kept, and a token is dropped only after at least ``max_entries / 2``
    other tokens were stored since it was last stored or reused.

    Why not one ``OrderedDict``: evicting one entry per insertion leaves a
    dead slot behind each time, and the dict keeps re-allocating its tables
    to compact them, so peak memory kept creeping up long after the cache was
    full (+13 % from 100k to 1M tokens, bench/). Generations only ever grow
    and are freed whole, so each cycle allocates the same memory again.
    """

    def __init__(self, max_entries: int = DEFAULT_SIZE, min_remaining: float = DEFAULT_MIN_REMAINING,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1 (use no cache to turn it off)")
        if not 0 < min_remaining <= 1:
            raise ValueError("min_remaining must be more than 0 and at most 1")
        self.max_entries = max_entries
        self.min_remaining = min_remaining
        self.clock = clock
        #: Entries per generation; with room for one token only, there is no old generation.
        self._generation = max(1, max_entries // 2)
        self._keep_old = max_entries >= 2
        self._young: dict[tuple[str, str], Token] = {}
        self._old: dict[tuple[str, str], Token] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _usable(self, token: Token, lifetime: float, key_id: str) -> bool:
        remaining = token.expires_at - self.clock()
        return token.key_id == key_id and lifetime * self.min_remaining <= remaining <= lifetime

    def _store(self, k: tuple[str, str], token: Token) -> None:
        young = self._young
        if k not in young and len(young) >= self._generation:
            self._old = young if self._keep_old else {}
            self._young = young = {}
        young[k] = token

    def get(self, email: str, uuid: str, lifetime: float, key_id: str) -> Token | None:
        """A reusable token for ``lifetime`` seconds signed by ``key_id``, or ``None``."""
        k = (email, uuid)
        with self._lock:
            token = self._young.get(k)
            if token is not None:
                if self._usable(token, lifetime, key_id):
                    return token
                del self._young[k]
                return None
            token = self._old.pop(k, None)
            if token is None or not self._usable(token, lifetime, key_id):
                return None
            self._store(k, token)  # used again: young once more
            return token

    def put(self, email: str, uuid: str, token: Token) -> None:
        """Remember ``token`` as the latest for ``(email, uuid)``."""
        k = (email, uuid)
        with self._lock:
            self._old.pop(k, None)
            self._store(k, token)

    def clear(self) -> None:
        """Forget every token (key rotation)."""
        with self._lock:
            self._young = {}
            self._old = {}
