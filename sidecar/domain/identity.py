"""Identity hash, customer UUIDs and the three-branch identity flow.

Everything here is pure: no I/O, no clock, no grpc.

>>> identity_hash("customer@synerise.com")
'-374943845'
>>> str(customer_uuid("customer@synerise.com", salt="someString"))
'345d4c8f-5aff-591d-a19c-1ca48923d9ee'
"""

from __future__ import annotations

import enum
import sys
import uuid
from dataclasses import dataclass

#: Named UUIDv5 namespaces accepted by configuration, besides any UUID.
NAMESPACES: dict[str, uuid.UUID] = {"url": uuid.NAMESPACE_URL, "dns": uuid.NAMESPACE_DNS}


#: UTF-16 in this machine's byte order, so code units read back as native unsigned shorts.
_UTF16 = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"


def identity_hash(identifier: str) -> str:
    """Return ``SR.client.hashIdentity(identifier)``.

    Java's ``String.hashCode`` over UTF-16 code units, wrapped to a signed
    32-bit integer and printed in decimal. No trimming, no lower-casing.
    """
    h = 0
    for unit in memoryview(identifier.encode(_UTF16, "surrogatepass")).cast("H"):
        h = h * 31 + unit  # exact integer; wrapped to 32 bits once, at the end
    h &= 0xFFFFFFFF
    return str(h - (1 << 32) if h & 0x80000000 else h)


def parse_namespace(value: str) -> uuid.UUID:
    """Turn ``url``, ``dns`` or a UUID string into a namespace UUID.

    Raises :class:`ValueError` naming the accepted forms.
    """
    named = NAMESPACES.get(value.strip().lower())
    if named is not None:
        return named
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise ValueError(f"namespace must be 'url', 'dns' or a UUID, got {value!r}") from None


def customer_uuid(identifier: str, salt: str, namespace: uuid.UUID = uuid.NAMESPACE_URL) -> uuid.UUID:
    """Return Synerise's customer UUID: ``uuid5(namespace, salt + identifier)``."""
    return uuid.uuid5(namespace, salt + identifier)


class Outcome(enum.Enum):
    """The branch of the identity flow (``seeds/jwt-authentication.md``)."""

    NEW_IDENTITY = "new_identity"
    SAME_IDENTITY = "same_identity"
    SWITCHED_IDENTITY = "switched_identity"


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the token must carry and what the frontend must do."""

    #: The UUID the token carries.
    uuid: str
    #: ``hash(email)``.
    identity_hash: str
    outcome: Outcome
    #: Whether the frontend must call ``SR.client.setUuidAndIdentityHash``.
    set_identity: bool


def resolve(
    email: str,
    current_hash: str,
    cookie_uuid: str,
    *,
    salt: str,
    namespace: uuid.UUID = uuid.NAMESPACE_URL,
) -> Resolution:
    """Run the identity flow on already validated input.

    ============ ================== ====================== ============
    current hash branch             uuid in the token      set identity
    ============ ================== ====================== ============
    empty        new identity       the cookie's           yes
    == hash      same identity      the cookie's           no
    != hash      switched identity  UUIDv5 of the email    yes
    ============ ================== ====================== ============

    Where the cookie UUID is missing but the branch needs it, the UUIDv5 of
    the email is used and the frontend must set it.
    """
    email_hash = identity_hash(email)
    derived = str(customer_uuid(email, salt, namespace))
    if not current_hash:
        return Resolution(cookie_uuid or derived, email_hash, Outcome.NEW_IDENTITY, True)
    if current_hash == email_hash:
        if cookie_uuid:
            return Resolution(cookie_uuid, email_hash, Outcome.SAME_IDENTITY, False)
        return Resolution(derived, email_hash, Outcome.SAME_IDENTITY, True)
    return Resolution(derived, email_hash, Outcome.SWITCHED_IDENTITY, True)
