"""A bounded LRU of issued tokens, so a repeated identity costs no RSA signature.

A token is reused for the same ``(email, uuid)`` only while

- it was signed by the key that is active now (the whole cache is also dropped
  on rotation, see :meth:`TokenCache.clear`),
- its remaining lifetime is at least ``min_remaining`` (a share, default one
  half) of the lifetime the caller asks for now, and
- its remaining lifetime is no longer than that lifetime: a caller asking for a
  short token never gets a longer-lived one.

>>> from sidecar.tokens import Token
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
from collections import OrderedDict
from collections.abc import Callable

from sidecar.tokens import Token

#: Entries kept by default (about 1 KiB each).
DEFAULT_SIZE = 100_000
#: Default share of the asked lifetime a reused token must still have.
DEFAULT_MIN_REMAINING = 0.5


class TokenCache:
    """Thread-safe LRU of the last token per ``(email, uuid)``."""

    def __init__(self, max_entries: int = DEFAULT_SIZE, min_remaining: float = DEFAULT_MIN_REMAINING,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1 (use no cache to turn it off)")
        if not 0 < min_remaining <= 1:
            raise ValueError("min_remaining must be more than 0 and at most 1")
        self.max_entries = max_entries
        self.min_remaining = min_remaining
        self.clock = clock
        self._tokens: OrderedDict[tuple[str, str], Token] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, email: str, uuid: str, lifetime: float, key_id: str) -> Token | None:
        """A reusable token for ``lifetime`` seconds signed by ``key_id``, or ``None``."""
        k = (email, uuid)
        with self._lock:
            token = self._tokens.get(k)
            if token is None:
                return None
            remaining = token.expires_at - self.clock()
            if token.key_id != key_id or not lifetime * self.min_remaining <= remaining <= lifetime:
                del self._tokens[k]
                return None
            self._tokens.move_to_end(k)
            return token

    def put(self, email: str, uuid: str, token: Token) -> None:
        """Remember ``token`` as the latest for ``(email, uuid)``; evict the least recently used."""
        k = (email, uuid)
        with self._lock:
            self._tokens[k] = token
            self._tokens.move_to_end(k)
            if len(self._tokens) > self.max_entries:
                self._tokens.popitem(last=False)

    def clear(self) -> None:
        """Forget every token (key rotation)."""
        with self._lock:
            self._tokens.clear()
