"""Check a token the way Synerise does.

A token is valid when all of these hold, checked in this order (the first
failure is the ``reason``):

1. three parts in strict unpadded base64url (RFC 7515 §2: the URL-safe alphabet,
   no ``=``, no unused bits set; SPEC §9), the header a JSON object
   (``malformed``): any other spelling of the same bytes is refused, so one
   token has one text;
2. the header's ``alg`` is exactly ``RS256`` and ``typ``, if present, ``JWT``
   (``wrong_alg`` / ``malformed``): ``none``, ``HS256`` (the classic attack of
   using the public key as an HMAC secret), ``RS512``, ``PS256``... are refused
   before any key is touched, and the signature check itself is pinned to
   ``RS256``;
3. the RS256 signature verifies with the active key (``bad_signature``);
4. the payload is a JSON object holding ``exp``, ``uuid`` and ``email``
   (``malformed`` / ``missing_claim``);
5. ``exp`` is an integer in the future (``expired``) and less than 7 days away
   (``lifetime_too_long``);
6. ``uuid`` and ``email`` follow :mod:`sidecar.validation` (``bad_claim``).

Synerise rejects tokens signed with an overwritten certificate. Optionally
(default off) a :class:`Verifier` also accepts the previous key for a grace
period after a rotation; that is more lenient than Synerise and documented so.

>>> from sidecar.domain import keys
>>> from sidecar.domain import tokens
>>> from datetime import timedelta
>>> key = keys.generate()
>>> tok = tokens.sign(key, "customer@synerise.com", "345d4c8f-5aff-591d-a19c-1ca48923d9ee",
...                   timedelta(hours=1), lambda: 1_700_000_000)
>>> v = Verifier(lambda: key, clock=lambda: 1_700_000_100)
>>> v.verify(tok.jwt).valid, v.verify(tok.jwt.rsplit(".", 1)[0] + ".AAAA").reason
(True, 'bad_signature')
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from sidecar.domain import validation
from sidecar.domain.errors import InvalidArgument
from sidecar.domain.keys import PublicKeyInfo, b64url

if TYPE_CHECKING:
    from jwt.api_jws import PyJWS

#: The only algorithm Synerise accepts.
ALGORITHM = "RS256"
#: Tokens longer than this are not parsed at all (Synerise tokens are ~600 characters).
MAX_TOKEN_LENGTH = 8192

#: Every ``reason`` a verdict can carry; a metrics label set, so it is fixed.
REASONS = (
    "malformed",  # not a compact JWS with JSON header and payload
    "wrong_alg",  # header alg is not RS256 (none, HS256, RS512, PS256, ...)
    "bad_signature",  # the RS256 signature does not verify with the active key
    "missing_claim",  # exp, uuid or email is absent
    "bad_claim",  # exp not an integer, uuid or email breaks the input rules
    "expired",  # exp is now or in the past
    "lifetime_too_long",  # exp is 7 days or more away
)

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def strict_b64url(part: str) -> bool:
    """Whether ``part`` is the one unpadded base64url spelling of some bytes (RFC 7515 §2, RFC 4648 §5).

    >>> strict_b64url("eyJhIjoxfQ"), strict_b64url("eyJhIjoxfQ=="), strict_b64url("eyJhIjoxfR")
    (True, False, False)
    """
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        return False
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return False
    # Unused low bits of the last character must be zero: re-encoding gives the text back.
    return b64url(raw).decode("ascii") == part


@cache
def _jws() -> PyJWS:
    """One PyJWS instance pinned to RS256: even if a caller passed another algorithm
    list by mistake, this object has no other algorithm to run.

    PyJWT is imported on the first verification, not at start-up: with the
    ``cryptography.x509`` and JWKS client (urllib, http.client) it imports it
    is the largest import a sidecar that only signs never needs.
    """
    from jwt.api_jws import PyJWS

    return PyJWS(algorithms=[ALGORITHM])


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking one token.

    ``reason`` is empty when ``valid``; the claims and ``key_id`` are set only
    when ``valid``.
    """

    valid: bool
    reason: str = ""
    email: str = ""
    uuid: str = ""
    expires_at: int = 0
    key_id: str = ""

    @staticmethod
    def invalid(reason: str) -> Verdict:
        assert reason in REASONS, reason
        return Verdict(False, reason)


class Verifier:
    """Checks tokens against the active key (and optionally the previous one).

    ``current_key`` returns the active key (:attr:`sidecar.core.KeyHolder.current`
    fits, and raises :class:`~sidecar.errors.NoKey` when none is loaded).
    ``previous_key_grace`` > 0 accepts tokens of the key that was active before
    the last :meth:`remember_previous` call, for that long after it.
    """

    def __init__(
        self,
        current_key: Callable[[], PublicKeyInfo],
        *,
        clock: Callable[[], float] = time.time,
        previous_key_grace: timedelta = timedelta(0),
    ) -> None:
        if not timedelta(0) <= previous_key_grace <= validation.MAX_TTL:
            raise ValueError("previous_key_grace must be between 0 and 7 days")
        self._current_key = current_key
        self.clock = clock
        self.previous_key_grace = previous_key_grace
        self._previous: tuple[PublicKeyInfo, float] | None = None
        self._lock = threading.Lock()

    def remember_previous(self, old: PublicKeyInfo | None, new: PublicKeyInfo) -> None:
        """Record a rotation (``KeyHolder.on_swap`` listener): ``old`` stops being active now."""
        if old is None or old.key_id == new.key_id:
            return
        with self._lock:
            self._previous = (old, self.clock())

    def _keys(self, now: float) -> list[PublicKeyInfo]:
        found = [self._current_key()]
        with self._lock:
            previous = self._previous
        if previous is not None and self.previous_key_grace > timedelta(0):
            old, since = previous
            if now - since < self.previous_key_grace.total_seconds():
                found.append(old)
        return found

    def verify(self, token: str) -> Verdict:
        """Check ``token``; never raises for a bad token, only ``NoKey`` when no key is loaded."""
        now = self.clock()
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            return Verdict.invalid("malformed")
        if not all(strict_b64url(part) for part in token.split(".")):
            return Verdict.invalid("malformed")
        import jwt

        jws = _jws()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Verdict.invalid("malformed")
        if header.get("alg") != ALGORITHM:
            return Verdict.invalid("wrong_alg")
        if "typ" in header and header["typ"] != "JWT":
            return Verdict.invalid("malformed")
        payload_bytes: bytes | None = None
        used: PublicKeyInfo | None = None
        for key in self._keys(now):
            try:
                decoded = jws.decode_complete(token, key.public_key, algorithms=[ALGORITHM])
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidAlgorithmError:
                return Verdict.invalid("wrong_alg")
            except jwt.PyJWTError:
                return Verdict.invalid("malformed")
            payload_bytes, used = decoded["payload"], key
            break
        if payload_bytes is None or used is None:
            return Verdict.invalid("bad_signature")
        return _check_claims(payload_bytes, used, now)


def _check_claims(payload_bytes: bytes, key: PublicKeyInfo, now: float) -> Verdict:
    try:
        payload: Any = json.loads(payload_bytes)
    except (ValueError, UnicodeDecodeError):
        return Verdict.invalid("malformed")
    if not isinstance(payload, dict):
        return Verdict.invalid("malformed")
    if any(name not in payload for name in ("exp", "uuid", "email")):
        return Verdict.invalid("missing_claim")
    exp, uuid_, email = payload["exp"], payload["uuid"], payload["email"]
    # bool is an int subclass; a float exp is allowed by RFC 7519 but Synerise's
    # examples and our signer use whole seconds, so only integers pass.
    if isinstance(exp, bool) or not isinstance(exp, int):
        return Verdict.invalid("bad_claim")
    if exp <= now:
        return Verdict.invalid("expired")
    if exp - now >= validation.MAX_TTL.total_seconds():
        return Verdict.invalid("lifetime_too_long")
    if not isinstance(uuid_, str) or not isinstance(email, str):
        return Verdict.invalid("bad_claim")
    try:
        uuid_ = validation.customer_uuid(uuid_)  # lower case (SPEC §9), also for a token an older version signed
        validation.email(email)
    except InvalidArgument:
        return Verdict.invalid("bad_claim")
    return Verdict(True, "", email, uuid_, exp, key.key_id)
