"""Hooks the gRPC layer calls on every outcome, for metrics and the audit log.

The base :class:`Observer` does nothing; :mod:`sidecar.metrics` and the audit
log plug in by subclassing. Arguments are domain values only: a fixed ``rpc``
name, a fixed ``reason`` code, the token's key id and uuid, the identity hash.
Never an email, never a token, never key material.
"""

from __future__ import annotations

from sidecar.identity import Resolution
from sidecar.tokens import Token


class Observer:
    """Receives what happened to each call. Must never raise."""

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: Resolution | None) -> None:
        """A token was signed by ``rpc`` (``ResolveIdentity`` or ``IssueToken``)."""

    def rejected(self, rpc: str, reason: str) -> None:
        """``rpc`` refused a request; ``reason`` is a fixed code."""


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
