"""The sidecar's use cases, free of any transport.

:class:`Sidecar` validates requests, runs the identity flow and signs tokens
with the active key. The gRPC layer calls it and only translates.

>>> from sidecar import keys
>>> s = Sidecar(KeyHolder(keys.generate()), salt="someString")
>>> r, tok = s.resolve_identity("customer@synerise.com", "", "", "", None)
>>> r.uuid, r.outcome.value, r.set_identity
('345d4c8f-5aff-591d-a19c-1ca48923d9ee', 'new_identity', True)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from sidecar import cookies, identity, tokens, validation
from sidecar import events as events_mod
from sidecar import verify as verify_mod
from sidecar.cache import TokenCache
from sidecar.errors import NoKey
from sidecar.keys import SigningKey
from sidecar.observe import Observer


class KeyHolder:
    """The active signing key, swapped atomically on rotation.

    Readers take one reference (:attr:`current`) and use it for a whole call,
    so a swap never mixes two keys in one token.
    """

    def __init__(self, key: SigningKey | None = None) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._listeners: list[Callable[[SigningKey | None, SigningKey], None]] = []

    @property
    def current(self) -> SigningKey:
        key = self._key
        if key is None:
            raise NoKey("no signing key is loaded")
        return key

    @property
    def loaded(self) -> bool:
        return self._key is not None

    def on_swap(self, listener: Callable[[SigningKey | None, SigningKey], None]) -> None:
        """Call ``listener(old, new)`` after every swap (caches, metrics)."""
        self._listeners.append(listener)

    def swap(self, key: SigningKey) -> SigningKey | None:
        """Make ``key`` active; returns the previous key."""
        with self._lock:
            old, self._key = self._key, key
        for listener in self._listeners:
            listener(old, key)
        return old


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
        events: events_mod.EventSettings | None = None,
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
        self.verifier = verify_mod.Verifier(lambda: self.keys.current, clock=clock,
                                            previous_key_grace=previous_key_grace)
        keys.on_swap(self.verifier.remember_previous)
        self.event_policy = events_mod.EventPolicy(events or events_mod.DEFAULTS, self.verifier.verify)
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
        ttl: timedelta | None,
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
        return resolution, self._sign(email, resolution.uuid, lifetime)

    def issue_token(self, email: str, uuid_: str, ttl: timedelta | None) -> tokens.Token:
        """Validate and sign a token for a known email and UUID."""
        email = validation.email(email)
        uuid_ = validation.customer_uuid(uuid_)
        lifetime = validation.ttl(ttl, self.default_ttl)
        return self._sign(email, uuid_, lifetime)

    def _sign(self, email: str, uuid_: str, lifetime: timedelta) -> tokens.Token:
        key = self.keys.current  # one reference for the whole call: a swap never mixes keys
        cache = self.cache
        if cache is not None:
            cached = cache.get(email, uuid_, lifetime.total_seconds(), key.key_id)
            self.observer.token_cache(cached is not None)
            if cached is not None:
                return cached
        started = time.perf_counter()
        token = tokens.sign(key, email, uuid_, lifetime, self.clock)
        self.observer.signed(time.perf_counter() - started)
        if cache is not None:
            cache.put(email, uuid_, token)
        return token

    def public_key(self) -> SigningKey:
        """The active key's public description."""
        return self.keys.current
