"""Connection options shared by the sync and async clients."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import grpc

#: Deadline of one attempt, in seconds, unless a call or the client says otherwise.
DEFAULT_TIMEOUT = 5.0

#: Reconnect quickly: a sidecar is local, and a restart takes well under a second.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _read(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class TLS:
    """TLS to the sidecar; give ``cert`` and ``key`` too for mutual TLS.

    Each value is PEM bytes or a path to a PEM file.

    >>> TLS(ca=b"-----BEGIN CERTIFICATE-----...", server_name="sidecar.internal")  # doctest: +ELLIPSIS
    TLS(...)
    """

    #: CA bundle that signed the server's certificate; ``None`` uses the system roots.
    ca: bytes | str | Path | None = None
    #: Client certificate chain (mTLS).
    cert: bytes | str | Path | None = None
    #: Client private key (mTLS).
    key: bytes | str | Path | None = None
    #: Name to check the server's certificate against, when it differs from the address.
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: cert and key must be given together (mutual TLS)")

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials."""
        return grpc.ssl_channel_credentials(root_certificates=_read(self.ca), private_key=_read(self.key),
                                            certificate_chain=_read(self.cert))

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


@dataclass(frozen=True)
class Retry:
    """Retries on ``UNAVAILABLE`` only, with exponential backoff and jitter.

    Every RPC of the sidecar is safe to repeat (signing twice only makes a
    second token), so a restart of the sidecar is ridden out transparently.
    Other codes are never retried: a bad request stays bad.
    """

    #: Total attempts, the first included; 1 disables retrying.
    attempts: int = 4
    #: Pause before the first retry, in seconds.
    initial_backoff: float = 0.1
    #: Longest pause, in seconds.
    max_backoff: float = 2.0
    multiplier: float = 2.0
    #: Each pause is scaled by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts: must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("Retry: backoffs must be >= 0, multiplier >= 1, 0 <= jitter < 1")

    def backoff(self, retry: int) -> float:
        """The pause before retry number ``retry`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


NO_RETRY = Retry(attempts=1)


def target(address: str) -> str:
    """The gRPC target for ``unix:///path/to.sock`` or ``host:port``.

    >>> target("unix:///run/sidecar/sidecar.sock")
    'unix:///run/sidecar/sidecar.sock'
    >>> target("127.0.0.1:50051")
    '127.0.0.1:50051'
    """
    address = address.strip()
    if address.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return address
    if "://" in address or not address.rpartition(":")[2].isdigit():
        raise ValueError(f"address: expected unix:///path or host:port, got {address!r}")
    return address
