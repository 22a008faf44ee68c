"""The blocking client.

>>> with SidecarClient("unix:///run/sidecar/sidecar.sock") as sidecar:  # doctest: +SKIP
...     who = sidecar.resolve_identity("customer@synerise.com", identity_hash=browser_hash,
...                                    cookie_header=request.headers.get("Cookie", ""))
...     who.token.jwt, who.set_identity, who.uuid, who.identity_hash
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Self

import grpc

from sidecar_client import _rpc, errors, models
from sidecar_client.options import CHANNEL_OPTIONS, DEFAULT_TIMEOUT, TLS, Retry, target


def open_channel(module: Any, address: str, tls: TLS | None, options: Sequence[tuple[str, Any]]) -> Any:
    """A channel from ``grpc`` or ``grpc.aio`` (same signatures) for the client options."""
    opts = [*CHANNEL_OPTIONS, *(tls.options() if tls else []), *options]
    if tls is None:
        return module.insecure_channel(target(address), options=opts)
    return module.secure_channel(target(address), tls.credentials(), options=opts)


class SidecarClient:
    """A blocking client for ``sidecar.v1.IdentityService``; thread-safe, keep one per process.

    ``address`` is ``unix:///path/to.sock`` or ``host:port``. Each attempt of a
    call gets ``timeout`` seconds (or the call's own ``timeout=``); a call that
    finds the sidecar ``UNAVAILABLE`` is retried as ``retry`` says, nothing
    else is. Failures raise :class:`sidecar_client.errors.SidecarClientError`
    subclasses. ``metadata`` is sent with every call (e.g. an access token).
    """

    def __init__(self, address: str = "127.0.0.1:50051", *, tls: TLS | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retry: Retry | None = None,
                 metadata: Sequence[tuple[str, str]] = (), options: Sequence[tuple[str, Any]] = ()) -> None:
        self.address = address
        self.timeout = timeout
        self.retry = retry or Retry()
        self.metadata = tuple(metadata)
        self._channel: grpc.Channel = open_channel(grpc, address, tls, options)
        self._calls = {m.name: self._channel.unary_unary(m.path, request_serializer=m.request.SerializeToString,
                                                         response_deserializer=m.response.FromString)
                       for m in _rpc.METHODS}

    def _call(self, method: _rpc.Method, request: Any, timeout: float | None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._calls[method.name](request, timeout=timeout or self.timeout,
                                                    metadata=self.metadata or None)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE and attempt < self.retry.attempts:
                    time.sleep(self.retry.backoff(attempt))
                    continue
                raise errors.from_status(method.name, code, exc.details(), attempt) from None
            return method.convert(response)

    def resolve_identity(self, email: str, *, identity_hash: str = "", cookie_uuid: str = "", cookie_header: str = "",
                         ttl: timedelta | float | None = None, timeout: float | None = None) -> models.Identity:
        """Run Synerise's identity flow for ``email`` and sign the token.

        ``identity_hash`` is ``SR.client.getIdentityHash()`` from the browser
        (empty if none); pass the ``_snrs_uuid`` cookie as ``cookie_uuid`` or
        the raw ``Cookie`` header as ``cookie_header``.
        """
        request = _rpc.resolve_identity(email, identity_hash, cookie_uuid, cookie_header, ttl)
        result: models.Identity = self._call(_rpc.RESOLVE_IDENTITY, request, timeout)
        return result

    def issue_token(self, email: str, uuid: str, *, ttl: timedelta | float | None = None,
                    timeout: float | None = None) -> models.Token:
        """Sign a token for an email and UUID the caller already chose."""
        result: models.Token = self._call(_rpc.ISSUE_TOKEN, _rpc.issue_token(email, uuid, ttl), timeout)
        return result

    def get_public_key(self, *, timeout: float | None = None) -> models.PublicKey:
        """The active public key (PEM, Synerise certificate code, JWK, key id)."""
        result: models.PublicKey = self._call(_rpc.GET_PUBLIC_KEY, _rpc.GET_PUBLIC_KEY.request(), timeout)
        return result

    def verify_token(self, jwt: str, *, timeout: float | None = None) -> models.Verification:
        """Check a token the way Synerise does."""
        result: models.Verification = self._call(_rpc.VERIFY_TOKEN, _rpc.VERIFY_TOKEN.request(jwt=jwt), timeout)
        return result

    def evaluate_event(self, action: str, *, jwt: str = "", changes_customer_data: bool = False,
                       timeout: float | None = None) -> models.EventDecision:
        """Whether Synerise would accept the event under the configured event authentication settings."""
        request = _rpc.evaluate_event(action, jwt, changes_customer_data)
        result: models.EventDecision = self._call(_rpc.EVALUATE_EVENT, request, timeout)
        return result

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
