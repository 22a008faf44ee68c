"""Claims and RS256 signing of Synerise tokens.

Header exactly ``{"alg": "RS256", "typ": "JWT"}``; payload exactly ``exp``,
``uuid`` and ``email``. The lifetime is checked here a second time, so no code
path can sign a token that breaks Synerise's 7-day rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import jwt

from sidecar.keys import SigningKey
from sidecar.validation import MAX_TTL

HEADER = {"alg": "RS256", "typ": "JWT"}


@dataclass(frozen=True, slots=True)
class Token:
    """A signed token: the compact JWS, its expiry (unix seconds), key id and ``uuid`` claim."""

    jwt: str
    expires_at: int
    key_id: str
    #: The ``uuid`` claim, kept beside the token so nothing has to decode it again (audit log).
    uuid: str = ""


def claims(email: str, uuid: str, now: float, ttl: timedelta) -> dict[str, object]:
    """The payload Synerise expects: ``exp`` (whole unix seconds), ``uuid``, ``email``.

    ``exp`` is rounded down so the lifetime never exceeds ``ttl``.
    """
    if not timedelta(0) < ttl < MAX_TTL:
        raise ValueError(f"token lifetime {ttl} is outside (0, 7 days)")
    return {"exp": math.floor(now + ttl.total_seconds()), "uuid": uuid, "email": email}


def sign(key: SigningKey, email: str, uuid: str, ttl: timedelta, clock: Callable[[], float]) -> Token:
    """Sign a token for ``email`` and ``uuid`` valid for ``ttl`` from ``clock()``."""
    payload = claims(email, uuid, clock(), ttl)
    # PyJWT adds "typ": "JWT" and "alg" itself; passing them keeps the header
    # exactly HEADER whatever PyJWT's defaults become.
    token = jwt.encode(payload, key.private_key, algorithm="RS256", headers=HEADER)
    return Token(token, int(payload["exp"]), key.key_id, uuid)  # type: ignore[call-overload]
