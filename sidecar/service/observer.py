"""Hooks the rest of the sidecar calls on every outcome, for metrics and the audit log.

The base :class:`Observer` does nothing; :mod:`sidecar.metrics` and the audit
log plug in by subclassing. Arguments are domain values only: fixed ``rpc``,
``reason``, ``result``, ``decision`` and ``rule`` names, the token's key id and
uuid, the identity hash. Never an email, never a token, never key material.
Implementations must never raise.
"""

from __future__ import annotations

from sidecar.domain.identity import Resolution
from sidecar.domain.keys import PublicKeyInfo
from sidecar.domain.tokens import Token


class Observer:
    """Receives what happened. Every method is optional to override."""

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: Resolution | None) -> None:
        """A token was returned by ``rpc`` (``ResolveIdentity`` or ``IssueToken``)."""

    def rejected(self, rpc: str, reason: str) -> None:
        """``rpc`` refused a request; ``reason`` is a fixed code."""

    def signed(self, seconds: float) -> None:
        """One RSA signature took ``seconds``."""

    def key_activated(self, key: PublicKeyInfo) -> None:
        """``key`` became the active signing key (start-up or rotation)."""

    def key_reload(self, result: str) -> None:
        """A key reload ended with ``result``: ``success`` or ``failure``."""

    def next_key(self, key: PublicKeyInfo | None, activates_at: int | None) -> None:
        """``key`` is scheduled to sign from ``activates_at`` (unix seconds); ``None``: nothing is."""

    def next_key_refused(self, what: str) -> None:
        """A next-key setting was refused: ``what`` is ``key`` or ``instant``."""

    def key_late(self, seconds: float) -> None:
        """A next key arrived ``seconds`` after its instant and became active at once."""

    def event_decision(self, decision: str, rule: str) -> None:
        """``EvaluateEvent`` decided ``decision`` by ``rule``."""

    def token_cache(self, hit: bool) -> None:
        """The token cache was consulted."""

    def verified(self, result: str) -> None:
        """``VerifyToken`` answered: ``valid``, or the fixed reason the token is not."""


class Observers(Observer):
    """Fan out to several observers."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = list(observers)

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: Resolution | None) -> None:
        for o in self.observers:
            o.issued(rpc, token, identity_hash, resolution)

    def rejected(self, rpc: str, reason: str) -> None:
        for o in self.observers:
            o.rejected(rpc, reason)

    def signed(self, seconds: float) -> None:
        for o in self.observers:
            o.signed(seconds)

    def key_activated(self, key: PublicKeyInfo) -> None:
        for o in self.observers:
            o.key_activated(key)

    def key_reload(self, result: str) -> None:
        for o in self.observers:
            o.key_reload(result)

    def next_key(self, key: PublicKeyInfo | None, activates_at: int | None) -> None:
        for o in self.observers:
            o.next_key(key, activates_at)

    def next_key_refused(self, what: str) -> None:
        for o in self.observers:
            o.next_key_refused(what)

    def key_late(self, seconds: float) -> None:
        for o in self.observers:
            o.key_late(seconds)

    def event_decision(self, decision: str, rule: str) -> None:
        for o in self.observers:
            o.event_decision(decision, rule)

    def token_cache(self, hit: bool) -> None:
        for o in self.observers:
            o.token_cache(hit)

    def verified(self, result: str) -> None:
        for o in self.observers:
            o.verified(result)
