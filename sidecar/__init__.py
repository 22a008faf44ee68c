"""Identity and token sidecar for Synerise JS SDK customer authentication.

The package is layered; each layer imports only those below it (checked by
``lint-imports``):

* :mod:`sidecar.cli` — the ``sidecar`` command and the composition root;
* :mod:`sidecar.transport` — gRPC: servicer, runtime, admission, fast path;
* :mod:`sidecar.telemetry` and :mod:`sidecar.ops` — metrics and audit; rotation,
  key files, supervision, scheduling;
* :mod:`sidecar.service` — the use cases;
* :mod:`sidecar.domain` — Synerise's rules.

Every error raised on purpose derives from :class:`SidecarError`.
"""

from sidecar.domain.errors import (
    CallerError,
    ConfigError,
    InvalidArgument,
    NoKey,
    ServiceError,
    SidecarError,
    UnusableKey,
)

__version__ = "0.1.0"

__all__ = ["CallerError", "ConfigError", "InvalidArgument", "NoKey", "ServiceError", "SidecarError", "UnusableKey",
           "__version__"]
