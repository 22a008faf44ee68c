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

import sys
import threading
import time
from collections.abc import Callable

from sidecar.domain.tokens import Token

#: Entries kept by default; :data:`DEFAULT_BYTES` usually binds first.
DEFAULT_SIZE = 100_000
#: Bytes of entries kept by default (as :func:`entry_cost` counts them): 32 MiB.
DEFAULT_BYTES = 32 * 1024 * 1024
#: What an entry costs besides its three strings: the key tuple, the ``Token`` tuple, its ``int``
#: and the entry's share of the dict's table. Measured with ``bench/cachecost.py --trace``: Python
#: allocations grow by 774 bytes per entry for a 34-character email (526-character JWT) and by
#: 1,067 for a 254-character one (819-character JWT), the uuid string not included: the strings
#: plus ~120 bytes. 200 leaves room for the dict's growth steps. RSS grows by ~820 and ~1,100 bytes
#: per entry (without tracemalloc), so :func:`entry_cost` (943 and 1,456) over-counts a little.
ENTRY_OVERHEAD = 200


def entry_cost(email: str, uuid: str, token: Token) -> int:
    """Bytes one cached token is counted as: its email, uuid and JWT strings and :data:`ENTRY_OVERHEAD`."""
    return sys.getsizeof(email) + sys.getsizeof(uuid) + sys.getsizeof(token.jwt) + ENTRY_OVERHEAD
#: Default share of the asked lifetime a reused token must still have.
DEFAULT_MIN_REMAINING = 0.5


class TokenCache:
    """Thread-safe, bounded, least-recently-used cache of the last token per ``(email, uuid)``.

    LRU in two generations: new and reused tokens go into the young
    generation; when it holds half the entries, or half of ``max_bytes`` (as
    :func:`entry_cost` counts them), it becomes the old generation
    and the previous old one is dropped whole. A hit in the old generation
    moves the token back to the young one. So at most ``max_entries`` tokens
    are kept, and at most ``max_bytes`` of them (give or take one entry); a
    token is dropped only after at least ``max_entries / 2`` other tokens, or
    ``max_bytes / 2`` of them, were stored since it was last stored or reused.

    Why not one ``OrderedDict``: evicting one entry per insertion leaves a
    dead slot behind each time, and the dict keeps re-allocating its tables
    to compact them, so peak memory kept creeping up long after the cache was
    full (+13 % from 100k to 1M tokens, bench/). Generations only ever grow
    and are freed whole, so each cycle allocates the same memory again.
    """

    def __init__(self, max_entries: int = DEFAULT_SIZE, min_remaining: float = DEFAULT_MIN_REMAINING,
                 clock: Callable[[], float] = time.time, max_bytes: int = DEFAULT_BYTES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1 (use no cache to turn it off)")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1 (use no cache to turn it off)")
        if not 0 < min_remaining <= 1:
            raise ValueError("min_remaining must be more than 0 and at most 1")
        self.max_entries = max_entries
        self.min_remaining = min_remaining
        self.clock = clock
        #: Entries per generation; with room for one token only, there is no old generation.
        self._generation = max(1, max_entries // 2)
        self._keep_old = max_entries >= 2
        self.max_bytes = max_bytes
        self._generation_bytes = max(1, max_bytes // 2)
        self._young: dict[tuple[str, str], Token] = {}
        self._old: dict[tuple[str, str], Token] = {}
        self._young_bytes = 0
        self._old_bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _usable(self, token: Token, lifetime: float, key_id: str) -> bool:
        remaining = token.expires_at - self.clock()
        return token.key_id == key_id and lifetime * self.min_remaining <= remaining <= lifetime

    @property
    def bytes(self) -> int:
        """Bytes of the tokens kept, as :func:`entry_cost` counts them."""
        return self._young_bytes + self._old_bytes

    def _store(self, k: tuple[str, str], token: Token, cost: int | None = None) -> None:
        """Keep ``token`` in the young generation; ``cost``: its :func:`entry_cost`, if known."""
        young = self._young
        if cost is None:
            cost = entry_cost(k[0], k[1], token)
        previous = young.get(k)
        if previous is not None:
            self._young_bytes -= entry_cost(k[0], k[1], previous)
        elif len(young) >= self._generation or self._young_bytes + cost > self._generation_bytes:
            if self._keep_old:
                self._old, self._old_bytes = young, self._young_bytes
            else:
                self._old, self._old_bytes = {}, 0
            self._young = young = {}
            self._young_bytes = 0
        young[k] = token
        self._young_bytes += cost

    def get(self, email: str, uuid: str, lifetime: float, key_id: str) -> Token | None:
        """A reusable token for ``lifetime`` seconds signed by ``key_id``, or ``None``."""
        k = (email, uuid)
        with self._lock:
            token = self._young.get(k)
            if token is not None:
                if self._usable(token, lifetime, key_id):
                    return token
                del self._young[k]
                self._young_bytes -= entry_cost(email, uuid, token)
                return None
            token = self._old.pop(k, None)
            if token is None:
                return None
            cost = entry_cost(email, uuid, token)
            self._old_bytes -= cost
            if not self._usable(token, lifetime, key_id):
                return None
            self._store(k, token, cost)  # used again: young once more
            return token

    def put(self, email: str, uuid: str, token: Token) -> None:
        """Remember ``token`` as the latest for ``(email, uuid)``."""
        k = (email, uuid)
        with self._lock:
            old = self._old.pop(k, None)
            if old is not None:
                self._old_bytes -= entry_cost(email, uuid, old)
            self._store(k, token)

    def clear(self) -> None:
        """Forget every token (key rotation)."""
        with self._lock:
            self._young = {}
            self._old = {}
            self._young_bytes = self._old_bytes = 0
