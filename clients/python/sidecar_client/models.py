"""Plain result types: what each RPC returns, without protobuf."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar_client._pb import identity_pb2 as pb


class Outcome(enum.Enum):
    """The branch of Synerise's identity flow the sidecar took."""

    UNSPECIFIED = "unspecified"
    #: The browser had no identity hash; the token carries the ``_snrs_uuid`` cookie's UUID.
    NEW_IDENTITY = "new_identity"
    #: The browser's hash equals hash(email); nothing to set in the browser.
    SAME_IDENTITY = "same_identity"
    #: The browser's hash belongs to someone else; the token carries a new UUIDv5 of the email.
    SWITCHED_IDENTITY = "switched_identity"


_OUTCOME = {
    pb.OUTCOME_NEW_IDENTITY: Outcome.NEW_IDENTITY,
    pb.OUTCOME_SAME_IDENTITY: Outcome.SAME_IDENTITY,
    pb.OUTCOME_SWITCHED_IDENTITY: Outcome.SWITCHED_IDENTITY,
}


@dataclass(frozen=True)
class Token:
    """A signed Synerise JWT."""

    #: The compact JWS, for ``SR.client.setAccessToken`` or the ``_snrs_token`` cookie.
    jwt: str
    #: Its ``exp`` claim, timezone-aware UTC.
    expires_at: datetime
    #: RFC 7638 thumbprint of the key that verifies it.
    key_id: str


@dataclass(frozen=True)
class Identity:
    """What ``ResolveIdentity`` decided; everything the frontend needs."""

    #: The UUID the token carries.
    uuid: str
    #: hash(email), as ``SR.client.hashIdentity(email)`` computes it.
    identity_hash: str
    outcome: Outcome
    #: Whether the frontend must call ``SR.client.setUuidAndIdentityHash(identity_hash, uuid)``.
    set_identity: bool
    token: Token


@dataclass(frozen=True)
class NextKey:
    """The key scheduled to sign from ``activates_at`` (a scheduled cut-over): paste its
    certificate code into Synerise at that instant."""

    pem: str
    certificate_code: str
    certificate_code_bare: str
    key_id: str
    activates_at: datetime


@dataclass(frozen=True)
class PublicKey:
    """The active signing key in every form Synerise and JOSE tools accept."""

    #: SubjectPublicKeyInfo PEM.
    pem: str
    #: Synerise's one-line "Certificate code", header and footer kept.
    certificate_code: str
    #: The same without header and footer.
    certificate_code_bare: str
    #: The public JWK (kty, n, e, kid, alg, use).
    jwk: dict[str, Any]
    key_id: str
    bits: int
    #: The next key and its instant, when a cut-over is scheduled.
    next_key: NextKey | None = None


@dataclass(frozen=True)
class Verification:
    """``VerifyToken``'s verdict; the claims are set only when ``valid``."""

    valid: bool
    #: Why not, from the server's fixed set; empty when valid.
    reason: str
    email: str
    uuid: str
    expires_at: datetime | None
    key_id: str


@dataclass(frozen=True)
class EventDecision:
    """``EvaluateEvent``'s decision under the sidecar's event authentication settings."""

    accepted: bool
    requires_jwt: bool
    #: The rule that decided, from the server's fixed set of names.
    rule: str
    reason: str


def _time(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def token(msg: pb.Token) -> Token:
    return Token(jwt=msg.jwt, expires_at=_time(msg.expires_at), key_id=msg.key_id)


def identity(msg: pb.ResolveIdentityResponse) -> Identity:
    return Identity(uuid=msg.uuid, identity_hash=msg.identity_hash, outcome=_OUTCOME.get(msg.outcome, Outcome.UNSPECIFIED),
                    set_identity=msg.set_identity, token=token(msg.token))


def issued(msg: pb.IssueTokenResponse) -> Token:
    return token(msg.token)


def public_key(msg: pb.GetPublicKeyResponse) -> PublicKey:
    return PublicKey(pem=msg.pem, certificate_code=msg.certificate_code, certificate_code_bare=msg.certificate_code_bare,
                     jwk=json.loads(msg.jwk) if msg.jwk else {}, key_id=msg.key_id, bits=msg.bits,
                     next_key=_next_key(msg.next_key) if msg.HasField("next_key") else None)


def _next_key(msg: Any) -> NextKey:
    return NextKey(pem=msg.pem, certificate_code=msg.certificate_code, certificate_code_bare=msg.certificate_code_bare,
                   key_id=msg.key_id, activates_at=_time(msg.activates_at))


def verification(msg: pb.VerifyTokenResponse) -> Verification:
    return Verification(valid=msg.valid, reason=msg.reason, email=msg.email, uuid=msg.uuid,
                        expires_at=_time(msg.expires_at) if msg.HasField("expires_at") else None, key_id=msg.key_id)


def event_decision(msg: pb.EvaluateEventResponse) -> EventDecision:
    return EventDecision(accepted=msg.accepted, requires_jwt=msg.requires_jwt, rule=msg.rule, reason=msg.reason)
