"""One exception tree for the whole sidecar.

:class:`CallerError` and its subclasses are the caller's fault: bad input.
They carry the offending ``field``, the ``rule`` it broke and a fixed
``reason`` code used as a metrics label. :class:`ServiceError` and its
subclasses are ours: no usable key, a broken configuration. The gRPC layer maps
each class to a status code in one table (``sidecar.server.STATUS_FOR``);
nothing else about an error, and never a traceback, reaches a caller.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""

    #: Fixed, low-cardinality code for metrics and the audit log.
    reason: str = "internal"


class CallerError(SidecarError):
    """The request is wrong; retrying it unchanged cannot help."""


class InvalidArgument(CallerError):
    """A field of the request breaks a rule.

    >>> str(InvalidArgument("email", "must contain exactly one '@'", "email_format"))
    "email: must contain exactly one '@'"
    """

    def __init__(self, field: str, rule: str, reason: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.reason = reason


class MalformedRequest(InvalidArgument):
    """The request's bytes are not a valid message of its type (SPEC §9).

    Raised by whichever listener parses the bytes (gRPC on either call path,
    Connect), so each answers the same ``INVALID_ARGUMENT``, counted as
    ``malformed_request``, and logs no traceback.

    >>> str(MalformedRequest("sidecar.v1.IssueTokenRequest"))
    'request: is not a valid sidecar.v1.IssueTokenRequest message'
    """

    def __init__(self, message_type: str) -> None:
        super().__init__("request", f"is not a valid {message_type} message", "malformed_request")


class ServiceError(SidecarError):
    """The sidecar cannot serve the request; the caller may retry later."""


class NoKey(ServiceError):
    """No usable signing key is loaded."""

    reason = "no_key"


class ConfigError(SidecarError):
    """The configuration is unusable; start-up stops with this one line."""

    reason = "config"


class UnusableKey(ConfigError):
    """A private key cannot be used (missing, unreadable, wrong kind, too short)."""

    reason = "key"
