"""The asyncio client: the same methods as :class:`~sidecar_client.SidecarClient`, as coroutines.

>>> async def login(email: str, browser_hash: str, cookies: str) -> str:  # doctest: +SKIP
...     async with AsyncSidecarClient("unix:///run/sidecar/sidecar.sock") as sidecar:
...         who = await sidecar.resolve_identity(email, identity_hash=browser_hash, cookie_header=cookies)
...         return who.token.jwt
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Self

import grpc
import grpc.aio

from sidecar_client import _rpc, errors, models
from sidecar_client.client import open_channel
from sidecar_client.options import DEFAULT_TIMEOUT, TLS, Retry


class AsyncSidecarClient:
    """An asyncio client for ``sidecar.v1.IdentityService``; create it inside the event loop that uses it.

    Options and errors are those of :class:`sidecar_client.SidecarClient`.
    """

    def __init__(self, address: str = "127.0.0.1:50051", *, tls: TLS | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retry: Retry | None = None,
                 metadata: Sequence[tuple[str, str]] = (), options: Sequence[tuple[str, Any]] = ()) -> None:
        self.address = address
        self.timeout = timeout
        self.retry = retry or Retry()
        self.metadata = tuple(metadata)
        self._channel: grpc.aio.Channel = open_channel(grpc.aio, address, tls, options)
        self._calls = {m.name: self._channel.unary_unary(m.path, request_serializer=m.request.SerializeToString,
                                                         response_deserializer=m.response.FromString)
                       for m in _rpc.METHODS}

    async def _call(self, method: _rpc.Method, request: Any, timeout: float | None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._calls[method.name](request, timeout=timeout or self.timeout,
                                                          metadata=self.metadata or None)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE and attempt < self.retry.attempts:
                    await asyncio.sleep(self.retry.backoff(attempt))
                    continue
                raise errors.from_status(method.name, code, exc.details(), attempt) from None
            return method.convert(response)

    async def resolve_identity(self, email: str, *, identity_hash: str = "", cookie_uuid: str = "",
                               cookie_header: str = "", ttl: timedelta | float | None = None,
                               timeout: float | None = None) -> models.Identity:
        """Run Synerise's identity flow for ``email`` and sign the token (see the sync client)."""
        request = _rpc.resolve_identity(email, identity_hash, cookie_uuid, cookie_header, ttl)
        result: models.Identity = await self._call(_rpc.RESOLVE_IDENTITY, request, timeout)
        return result

    async def issue_token(self, email: str, uuid: str, *, ttl: timedelta | float | None = None,
                          timeout: float | None = None) -> models.Token:
        """Sign a token for an email and UUID the caller already chose."""
        result: models.Token = await self._call(_rpc.ISSUE_TOKEN, _rpc.issue_token(email, uuid, ttl), timeout)
        return result

    async def get_public_key(self, *, timeout: float | None = None) -> models.PublicKey:
        """The active public key (PEM, Synerise certificate code, JWK, key id)."""
        result: models.PublicKey = await self._call(_rpc.GET_PUBLIC_KEY, _rpc.GET_PUBLIC_KEY.request(), timeout)
        return result

    async def verify_token(self, jwt: str, *, timeout: float | None = None) -> models.Verification:
        """Check a token the way Synerise does."""
        result: models.Verification = await self._call(_rpc.VERIFY_TOKEN, _rpc.VERIFY_TOKEN.request(jwt=jwt), timeout)
        return result

    async def evaluate_event(self, action: str, *, jwt: str = "", changes_customer_data: bool = False,
                             timeout: float | None = None) -> models.EventDecision:
        """Whether Synerise would accept the event under the configured event authentication settings."""
        request = _rpc.evaluate_event(action, jwt, changes_customer_data)
        result: models.EventDecision = await self._call(_rpc.EVALUATE_EVENT, request, timeout)
        return result

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
