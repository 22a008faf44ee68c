"""The sidecar's use cases, free of any transport.

:class:`Sidecar` validates requests, runs the identity flow, signs tokens with
the active key, verifies tokens and decides events, and tells its observer what
happened. The transports call it and only translate.

>>> from sidecar.domain import keys
>>> s = Sidecar(KeyHolder(keys.generate()), salt="someString")
>>> r, tok = s.resolve_identity("customer@synerise.com", "", "", "", None)
>>> r.uuid, r.outcome.value, r.set_identity
('345d4c8f-5aff-591d-a19c-1ca48923d9ee', 'new_identity', True)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from sidecar.domain import cookies, event_policy, identity, tokens, validation, verify
from sidecar.domain.errors import InvalidArgument
from sidecar.domain.keys import KeyHolder, Scheduled, SigningKey
from sidecar.service.cache import TokenCache
from sidecar.service.observer import Observer


class Sidecar:
    """Identity resolution and token issuance."""

    def __init__(
        self,
        keys: KeyHolder,
        *,
        salt: str,
        namespace: uuid.UUID = uuid.NAMESPACE_URL,
        default_ttl: timedelta = validation.DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
        events: event_policy.EventSettings | None = None,
        previous_key_grace: timedelta = timedelta(0),
        cache: TokenCache | None = None,
    ) -> None:
        self.keys = keys
        self.observer = observer or Observer()
        self.salt = salt
        self.namespace = namespace
        self.default_ttl = default_ttl
        self.clock = clock
        # Token checks (VerifyToken) and the event settings (EvaluateEvent); the
        # verifier remembers the key a rotation replaces, for the optional grace.
        self.verifier = verify.Verifier(lambda: self.keys.current, clock=clock,
                                            previous_key_grace=previous_key_grace)
        keys.on_swap(self.verifier.remember_previous)
        self.event_policy = event_policy.EventPolicy(events or event_policy.DEFAULTS, self.verifier.verify)
        #: Reuses still-valid tokens per (email, uuid); ``None``: every call signs.
        self.cache = cache
        if cache is not None:
            keys.on_swap(lambda _old, _new: cache.clear())

    def resolve_identity(
        self,
        email: str,
        identity_hash: str,
        cookie_uuid: str,
        cookie_header: str,
        ttl: timedelta | validation.Duration | None,
    ) -> tuple[identity.Resolution, tokens.Token]:
        """Validate, pick the branch of the flow, and sign the token.

        ``identity_hash`` and ``cookie_uuid`` win over what ``cookie_header``
        holds; the header fills in only what they leave empty.
        """
        email = validation.email(email)
        current = validation.identity_hash(identity_hash)
        cookie = validation.customer_uuid(cookie_uuid, "cookie_uuid", required=False)
        if cookie_header and (not current or not cookie):
            found = cookies.parse_cookie_header(cookie_header)
            if not cookie:
                cookie = validation.customer_uuid(found.uuid, "cookie_header._snrs_uuid", required=False)
            if not current:
                current = validation.identity_hash(found.identity_hash, "cookie_header._snrs_p.identityHash")
        lifetime = validation.ttl(ttl, self.default_ttl)
        resolution = identity.resolve(email, current, cookie, salt=self.salt, namespace=self.namespace)
        token = self._sign(email, resolution.uuid, lifetime)
        self.observer.issued("ResolveIdentity", token, resolution.identity_hash, resolution)
        return resolution, token

    def issue_token(self, email: str, uuid_: str, ttl: timedelta | validation.Duration | None) -> tokens.Token:
        """Validate and sign a token for a known email and UUID."""
        email = validation.email(email)
        uuid_ = validation.customer_uuid(uuid_)
        lifetime = validation.ttl(ttl, self.default_ttl)
        token = self._sign(email, uuid_, lifetime)
        self.observer.issued("IssueToken", token, identity.identity_hash(email), None)
        return token

    def _sign(self, email: str, uuid_: str, lifetime: timedelta) -> tokens.Token:
        now = self.clock()
        # One key for the whole call (a swap never mixes keys), and, while a next key is
        # scheduled, its instant T: no token signed before T lives past it.
        key, not_after = self.keys.at(now)
        seconds = lifetime.total_seconds()
        if not_after is not None:
            seconds = min(seconds, not_after - now)  # a cached token must not outlive T either
        cache = self.cache
        if cache is not None:
            cached = cache.get(email, uuid_, seconds, key.key_id)
            self.observer.token_cache(cached is not None)
            if cached is not None:
                return cached
        started = time.perf_counter()
        token = tokens.sign(key, email, uuid_, lifetime, lambda: now, not_after)
        self.observer.signed(time.perf_counter() - started)
        if cache is not None:
            cache.put(email, uuid_, token)
        return token

    def public_keys(self) -> tuple[SigningKey, Scheduled | None]:
        """The active key and the key scheduled to sign from its instant T, if any (``GetPublicKey``)."""
        return self.keys.snapshot()

    def verify_token(self, jwt: str) -> verify.Verdict:
        """Check a token the way Synerise does (``VerifyToken``); an empty one is a bad request."""
        if not jwt:
            raise InvalidArgument("jwt", "is required", "jwt_missing")
        verdict = self.verifier.verify(jwt)
        self.observer.verified("valid" if verdict.valid else verdict.reason)
        return verdict

    def evaluate_event(self, action: str, changes_customer_data: bool, jwt: str) -> event_policy.Decision:
        """Whether Synerise would accept ``action`` from this browser (``EvaluateEvent``)."""
        decision, _ = self.event_policy.evaluate(action, changes_customer_data, jwt)
        self.observer.event_decision(decision.label, decision.rule)
        return decision
