"""Who may call: TLS / mTLS server credentials and the client allow-list.

Three layers, strongest last:

* Unix sockets are created with mode 0660 (``SIDECAR_SOCKET_MODE``): only the
  socket's owner and group, i.e. the pod's app container sharing the volume,
  can connect. They carry no TLS; the file system is the access control.
* TCP listeners use TLS when ``SIDECAR_TLS_CERT``/``SIDECAR_TLS_KEY`` are set;
  with ``SIDECAR_TLS_CLIENT_CA`` the TLS handshake *requires* a client
  certificate that chains to that CA and is within its validity period.
  A caller without one never gets as far as an RPC. A plaintext TCP listener on
  a non-loopback address is refused at start-up unless ``--insecure-tcp``
  (see :func:`sidecar.config.is_loopback`).
* ``SIDECAR_ALLOWED_CLIENTS`` narrows mTLS callers to certificates whose
  common name, subject or one of whose subject alternative names is listed.
  :class:`AllowList` is a server interceptor; a refused caller gets
  ``PERMISSION_DENIED`` (valid certificate, not listed) or ``UNAUTHENTICATED``
  (plaintext TCP, no certificate) and is counted as ``unauthenticated``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from sidecar.config import Config
from sidecar.errors import ConfigError
from sidecar.observe import Observer

#: The service whose methods the interceptors guard (health and reflection stay open).
GUARDED_PREFIX = "/sidecar.v1.IdentityService/"


def _read(path: str, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{setting}: {path} is not PEM")
    return data


def server_credentials(cfg: Config) -> grpc.ServerCredentials | None:
    """TLS credentials for TCP listeners, or ``None`` for plaintext.

    With a client CA the handshake requires and verifies a client certificate.
    """
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    cert = _read(cfg.tls_cert, "SIDECAR_TLS_CERT")
    key = _read(cfg.tls_key, "SIDECAR_TLS_KEY")
    ca = _read(cfg.tls_client_ca, "SIDECAR_TLS_CLIENT_CA") if cfg.tls_client_ca else None
    try:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
    except Exception:  # noqa: BLE001 - grpc raises bare errors for bad PEM; never echo key bytes
        raise ConfigError("SIDECAR_TLS_CERT/SIDECAR_TLS_KEY: cannot build TLS credentials from them") from None


def peer_names(context: grpc.ServicerContext) -> set[str]:
    """Every name the verified client certificate carries: CN, subject, SANs (empty without mTLS)."""
    auth = context.auth_context()
    names: set[str] = set()
    for prop in ("x509_common_name", "x509_subject", "x509_subject_alternative_name"):
        for value in auth.get(prop, ()):
            names.add(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return names


def caller_key(context: grpc.ServicerContext) -> str:
    """A stable, low-cardinality identity of the caller for per-caller limits.

    The certificate's identity under mTLS, else the peer's IP address
    (without the port), else ``unix`` for Unix-socket callers.
    """
    identities = context.peer_identities()
    if identities:
        return "cert:" + b",".join(sorted(identities)).decode("utf-8", "replace")
    peer = context.peer()
    if peer.startswith(("ipv4:", "ipv6:")):
        return str(peer.rpartition(":")[0])
    return str(peer.partition(":")[0]) or "unknown"


def wrap_unary(handler: grpc.RpcMethodHandler,
               guard: Callable[[Any, grpc.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """A handler that runs ``guard(request, context)`` (which may abort) before the real behaviour."""
    behavior = handler.unary_unary

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        guard(request, context)
        return behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def rpc_name(method: str) -> str:
    """``/sidecar.v1.IdentityService/IssueToken`` -> ``IssueToken``."""
    return method.rpartition("/")[2]


class Guard(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """A check run before every unary ``IdentityService`` call; :meth:`check` aborts to refuse.

    As an interceptor it wraps the stock handlers; the fast call path
    (:mod:`sidecar.fastpath`) calls :meth:`check` itself, so both paths apply
    the same rules.
    """

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        raise NotImplementedError

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(GUARDED_PREFIX):
            return handler
        rpc = rpc_name(details.method)
        check = self.check
        return wrap_unary(handler, lambda _request, context: check(rpc, context))


class AllowList(Guard):
    """Refuse TCP callers whose client certificate names none of ``allowed``.

    Unix-socket callers pass: their access is the socket's file mode.
    """

    def __init__(self, allowed: Iterable[str], observer: Observer) -> None:
        self.allowed = frozenset(allowed)
        self.observer = observer

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        if context.peer().startswith("unix:"):
            return
        names = peer_names(context)
        if not names:
            self.observer.rejected(rpc, "unauthenticated")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "caller: a client certificate is required")
        if not names & self.allowed:
            self.observer.rejected(rpc, "unauthenticated")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "caller: client certificate is not on the allow-list")


def install(opts: Any, cfg: Config, observer: Observer) -> None:
    """Put TLS credentials, the socket mode and the allow-list into ``opts`` (a ``ServerOptions``)."""
    opts.credentials = server_credentials(cfg)
    opts.socket_mode = cfg.socket_mode
    if cfg.allowed_clients:
        opts.interceptors.insert(0, AllowList(cfg.allowed_clients, observer))
