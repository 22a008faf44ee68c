"""Input rules. Each check returns the clean value or raises
:class:`~sidecar.domain.errors.InvalidArgument` naming the field and the rule.

Email rule (deliberately simple, documented in docs/identity.md): non-empty, at most
254 characters, exactly one ``@`` with a non-empty part on each side, and no
whitespace or control characters anywhere. The sidecar does not lower-case or
trim: Synerise hashes the string exactly as given, so a backend must pass the
email the way it passes it to the browser.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta
from typing import NamedTuple

from sidecar.domain.errors import InvalidArgument

MAX_EMAIL_LENGTH = 254
#: Synerise: the token lifetime "cannot be longer than 7 days", "less than 7 days away".
MAX_TTL = timedelta(days=7)
DEFAULT_TTL = timedelta(hours=24)

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Canonical decimal (SPEC §9): no sign but ``-``, no leading zeros, no ``-0``; ASCII digits only.
_HASH_RE = re.compile(r"0|-?[1-9][0-9]{0,9}")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _is_space_or_control(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs", "Cs")


#: The ASCII characters :func:`_is_space_or_control` refuses, for the common all-ASCII case.
_ASCII_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _has_space_or_control(value: str) -> bool:
    if value.isascii():  # one regex scan in C instead of a Python call per character
        return _ASCII_SPACE_OR_CONTROL.search(value) is not None
    return any(_is_space_or_control(ch) for ch in value)


def email(value: str, field: str = "email") -> str:
    """Check an email address against the rule in the module docstring."""
    if not value:
        raise InvalidArgument(field, "is required", "email_missing")
    if len(value) > MAX_EMAIL_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_EMAIL_LENGTH} characters", "email_too_long")
    if _has_space_or_control(value):
        raise InvalidArgument(field, "must not contain whitespace or control characters", "email_format")
    local, at, domain = value.partition("@")
    if not at or "@" in domain or not local or not domain:
        raise InvalidArgument(
            field, "must contain exactly one '@' with a non-empty part on each side", "email_format"
        )
    return value


def customer_uuid(value: str, field: str = "uuid", *, required: bool = True) -> str:
    """Check a canonical 8-4-4-4-12 hex UUID; returns it in lower case (SPEC §9).

    Upper-case hex digits are accepted, so one visitor never gets two ``uuid``
    claims. With ``required=False`` an empty value is allowed and returned as ``""``.

    >>> customer_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E")
    '0f8fad5b-d9cb-469f-a165-70867728950e'
    """
    if not value:
        if required:
            raise InvalidArgument(field, "is required", "uuid_missing")
        return ""
    if not _UUID_RE.fullmatch(value):
        raise InvalidArgument(field, "must be a canonical UUID (8-4-4-4-12 hex digits)", "uuid_format")
    return value.lower()


def identity_hash(value: str, field: str = "identity_hash") -> str:
    """Check an identity hash: empty, or a signed 32-bit integer in canonical decimal (SPEC §9).

    Canonical is what ``SR.client.hashIdentity`` prints: ``-?(0|[1-9][0-9]*)``,
    so ``-0``, ``007``, ``+1`` and ``1_000`` are refused, not read as numbers.
    """
    if not value:
        return ""
    if not _HASH_RE.fullmatch(value) or not _INT32_MIN <= int(value) <= _INT32_MAX:
        raise InvalidArgument(
            field, "must be empty or a signed 32-bit integer in canonical decimal (no leading zeros, no -0)",
            "identity_hash_format"
        )
    return value


class Duration(NamedTuple):
    """A lifetime as a caller sends it: whole seconds and nanoseconds (protobuf's ``Duration``)."""

    seconds: int
    nanos: int = 0


def duration(value: Duration, field: str = "ttl") -> timedelta:
    """A caller's ``(seconds, nanos)`` as a timedelta, refusing mixed signs and out-of-range parts."""
    seconds, nanos = value
    if nanos and (seconds > 0 > nanos or seconds < 0 < nanos):
        raise InvalidArgument(field, "seconds and nanos must have the same sign", "ttl_not_positive")
    if not -999_999_999 <= nanos <= 999_999_999:
        raise InvalidArgument(field, "nanos must be within one second", "ttl_not_positive")
    if abs(seconds) > 10**9:
        raise InvalidArgument(field, "must be less than 7 days", "ttl_too_long")
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def ttl(value: timedelta | Duration | None, default: timedelta, field: str = "ttl") -> timedelta:
    """Check a requested token lifetime: absent means ``default``; else > 0 and < 7 days."""
    if value is None:
        return default
    if isinstance(value, Duration):
        value = duration(value, field)
    if value <= timedelta(0):
        raise InvalidArgument(field, "must be positive", "ttl_not_positive")
    if value >= MAX_TTL:
        raise InvalidArgument(field, "must be less than 7 days", "ttl_too_long")
    if value < timedelta(seconds=1):
        raise InvalidArgument(field, "must be at least 1 second", "ttl_too_short")
    return value


def parse_duration(text: str) -> timedelta:
    """Parse ``"3600"``, ``"30m"``, ``"24h"``, ``"6d"`` (also ``s``) into a timedelta.

    >>> parse_duration("24h")
    datetime.timedelta(days=1)

    Raises :class:`ValueError` naming the accepted forms.
    """
    m = re.fullmatch(r"\s*([0-9]+)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"duration must be seconds or a number with s/m/h/d (e.g. 30m, 24h, 6d), got {text!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


#: Every rejection reason validation can raise; metrics pre-create these series.
REASONS = (
    "email_missing",
    "email_too_long",
    "email_format",
    "uuid_missing",
    "uuid_format",
    "identity_hash_format",
    "ttl_not_positive",
    "ttl_too_short",
    "ttl_too_long",
)
