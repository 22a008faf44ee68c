"""Python client for the Synerise identity & token sidecar (``sidecar.v1.IdentityService``).

>>> from sidecar_client import SidecarClient
>>> with SidecarClient("127.0.0.1:50051") as sidecar:  # doctest: +SKIP
...     who = sidecar.resolve_identity("customer@synerise.com", cookie_uuid="0f8fad5b-d9cb-469f-a165-70867728950e")
...     print(who.outcome, who.uuid, who.token.jwt)
"""

from sidecar_client.aio import AsyncSidecarClient
from sidecar_client.client import SidecarClient
from sidecar_client.errors import (
    AccessDenied,
    DeadlineExceeded,
    InvalidArgument,
    RateLimited,
    SidecarClientError,
    Unavailable,
    Unimplemented,
)
from sidecar_client.models import EventDecision, Identity, NextKey, Outcome, PublicKey, Token, Verification
from sidecar_client.options import NO_RETRY, TLS, Retry

__version__ = "0.1.0"

__all__ = [
    "NO_RETRY", "TLS", "AccessDenied", "AsyncSidecarClient", "DeadlineExceeded", "EventDecision", "Identity",
    "InvalidArgument", "NextKey", "Outcome", "PublicKey", "RateLimited", "Retry", "SidecarClient", "SidecarClientError",
    "Token", "Unavailable", "Unimplemented", "Verification",
]
