"""Exceptions the client raises: one root, one class per status a caller handles differently.

Every failed call raises a :class:`SidecarClientError`; ``code`` is the gRPC
status and ``details`` the server's message. :class:`InvalidArgument` is the
caller's fault (retrying cannot help) and carries the ``field`` and ``rule``
the server named; :class:`Unavailable` is raised only after the retries ran out.
"""

from __future__ import annotations

import grpc


class SidecarClientError(Exception):
    """A call to the sidecar failed."""

    def __init__(self, rpc: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{rpc}: {code.name}: {details}")
        #: The RPC that failed, e.g. ``"ResolveIdentity"``.
        self.rpc = rpc
        #: The gRPC status code.
        self.code = code
        #: The server's (or the channel's) message.
        self.details = details


class InvalidArgument(SidecarClientError):
    """The request broke an input rule; the server signed nothing.

    >>> e = InvalidArgument("IssueToken", grpc.StatusCode.INVALID_ARGUMENT, "email: must contain exactly one '@'")
    >>> (e.field, e.rule)
    ('email', "must contain exactly one '@'")
    """

    def __init__(self, rpc: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(rpc, code, details)
        field, sep, rule = details.partition(": ")
        #: The request field the server named (``""`` if the message had no ``field: rule`` form).
        self.field = field if sep else ""
        #: The rule it broke.
        self.rule = rule if sep else details


class Unavailable(SidecarClientError):
    """The sidecar could not be reached (or had no usable key) after every retry."""

    def __init__(self, rpc: str, code: grpc.StatusCode, details: str, attempts: int = 1) -> None:
        super().__init__(rpc, code, details)
        #: How many attempts were made.
        self.attempts = attempts


class Unimplemented(SidecarClientError):
    """The server does not offer this RPC: it runs an older sidecar than this client."""


class DeadlineExceeded(SidecarClientError):
    """The call did not finish within its deadline."""


class AccessDenied(SidecarClientError):
    """The server refused the caller (``UNAUTHENTICATED`` or ``PERMISSION_DENIED``)."""


class RateLimited(SidecarClientError):
    """The server is shedding load (``RESOURCE_EXHAUSTED``); not retried automatically."""


_CLASS_FOR: dict[grpc.StatusCode, type[SidecarClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: AccessDenied,
    grpc.StatusCode.PERMISSION_DENIED: AccessDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
}


def from_status(rpc: str, code: grpc.StatusCode, details: str | None, attempts: int = 1) -> SidecarClientError:
    """The exception for a failed call's status."""
    details = details or ""
    if code is grpc.StatusCode.UNIMPLEMENTED:
        details = f"the server does not implement sidecar.v1.IdentityService/{rpc} (older sidecar?): {details}"
    cls = _CLASS_FOR.get(code, SidecarClientError)
    if cls is Unavailable:
        return Unavailable(rpc, code, details, attempts)
    return cls(rpc, code, details)
