"""Claims and RS256 signing of Synerise tokens.

Header exactly ``{"alg": "RS256", "typ": "JWT"}``; payload exactly ``exp``,
``uuid`` and ``email``. The lifetime is checked here a second time, so no code
path can sign a token that breaks Synerise's 7-day rule.

A token is the JWS compact form ``header.payload.signature`` (RFC 7515 §7.1),
each part base64url without padding. The header part never changes, so it is
encoded once; the payload is JSON exactly as PyJWT writes it; the signature is
``cryptography``'s RSASSA-PKCS1-v1_5 with SHA-256, which is deterministic. So a
token is byte for byte the one ``jwt.encode(claims, key, "RS256",
headers=HEADER)`` makes (the tests hold it to that, and verify it with an
independent JOSE library), without PyJWT's per-call layers, which cost a
tenth of a signature on the hot path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import timedelta
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sidecar.domain.keys import SigningKey, b64url
from sidecar.domain.validation import MAX_TTL

HEADER = {"alg": "RS256", "typ": "JWT"}

#: PyJWT's JSON: compact separators, ASCII only, header keys sorted.
_JSON = json.JSONEncoder(separators=(",", ":"))


_HEADER_PART = b64url(json.dumps(HEADER, separators=(",", ":"), sort_keys=True).encode())
_PADDING = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


class Token(NamedTuple):
    """A signed token: the compact JWS, its expiry (unix seconds), key id and ``uuid`` claim.

    Immutable (the cache shares it between threads) and quick to build.
    """

    jwt: str
    expires_at: int
    key_id: str
    #: The ``uuid`` claim, kept beside the token so nothing has to decode it again (audit log).
    uuid: str = ""


def claims(email: str, uuid: str, now: float, ttl: timedelta, not_after: int | None = None) -> dict[str, object]:
    """The payload Synerise expects: ``exp`` (whole unix seconds), ``uuid``, ``email``.

    ``exp`` is rounded down so the lifetime never exceeds ``ttl``, and is at
    most ``not_after`` (a scheduled key cut-over: no token outlives its key).
    """
    if not timedelta(0) < ttl < MAX_TTL:
        raise ValueError(f"token lifetime {ttl} is outside (0, 7 days)")
    exp = math.floor(now + ttl.total_seconds())
    if not_after is not None and exp > not_after:
        exp = not_after
    return {"exp": exp, "uuid": uuid, "email": email}


def sign(key: SigningKey, email: str, uuid: str, ttl: timedelta, clock: Callable[[], float],
         not_after: int | None = None) -> Token:
    """Sign a token for ``email`` and ``uuid`` valid for ``ttl`` from ``clock()``, expiring by ``not_after``."""
    payload = claims(email, uuid, clock(), ttl, not_after)
    signing_input = _HEADER_PART + b"." + b64url(_JSON.encode(payload).encode())
    signature = key.private_key.sign(signing_input, _PADDING, _SHA256)
    token = (signing_input + b"." + b64url(signature)).decode("ascii")
    expires_at: int = payload["exp"]  # type: ignore[assignment]
    return Token(token, expires_at, key.key_id, uuid)
