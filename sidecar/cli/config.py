"""The sidecar's configuration: one frozen, validated object built at start-up.

Sources, strongest first: command-line flags, ``SIDECAR_*`` environment
variables, defaults. Any problem raises :class:`~sidecar.errors.ConfigError`
with one line naming the setting and the rule.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sidecar.domain import identity
from sidecar.domain.errors import ConfigError
from sidecar.domain.validation import DEFAULT_TTL, MAX_TTL, parse_duration
from sidecar.ops import sched
from sidecar.ops.sched import available_cpus

#: Salt used in development mode when none is configured. Never for production.
DEV_SALT = "sidecar-dev-salt"

#: Values of ``SIDECAR_CALL_PATH``.
CALL_PATHS = ("fast", "stock")
#: Values of ``SIDECAR_SCHED_POLICY`` (Linux CPU scheduling policy of the sidecar's threads).
SCHED_POLICIES = tuple(sched.POLICIES)

#: Environment variable for each setting (SPEC §6); flags override them.
ENV = {
    "key_file": "SIDECAR_KEY_FILE",
    "key_passphrase_file": "SIDECAR_KEY_PASSPHRASE_FILE",
    "uuid_salt": "SIDECAR_UUID_SALT",
    "uuid_namespace": "SIDECAR_UUID_NAMESPACE",
    "default_ttl": "SIDECAR_DEFAULT_TTL",
    "listen": "SIDECAR_LISTEN",
    "health_listen": "SIDECAR_HEALTH_LISTEN",
    "metrics_addr": "SIDECAR_METRICS_ADDR",
    "events_config": "SIDECAR_EVENTS_CONFIG",
    "previous_key_grace": "SIDECAR_VERIFY_PREVIOUS_KEY_GRACE",
    "grace": "SIDECAR_GRACE",
    "workers": "SIDECAR_WORKERS",
    "threads": "SIDECAR_THREADS",
    "call_path": "SIDECAR_CALL_PATH",
    "sched_policy": "SIDECAR_SCHED_POLICY",
    "audit_level": "SIDECAR_AUDIT_LEVEL",
    "audit_format": "SIDECAR_AUDIT_FORMAT",
    # Key rotation, access control and limits (issue 4).
    "tls_cert": "SIDECAR_TLS_CERT",
    "tls_key": "SIDECAR_TLS_KEY",
    "tls_client_ca": "SIDECAR_TLS_CLIENT_CA",
    "allowed_clients": "SIDECAR_ALLOWED_CLIENTS",
    "insecure_tcp": "SIDECAR_INSECURE_TCP",
    "socket_mode": "SIDECAR_SOCKET_MODE",
    "max_message_bytes": "SIDECAR_MAX_MESSAGE_BYTES",
    "max_concurrent_calls": "SIDECAR_MAX_CONCURRENT_CALLS",
    "rate_limit": "SIDECAR_RATE_LIMIT",
    "rate_burst": "SIDECAR_RATE_BURST",
    "key_poll_interval": "SIDECAR_KEY_POLL_INTERVAL",
    "allow_insecure_key_permissions": "SIDECAR_ALLOW_INSECURE_KEY_PERMISSIONS",
    "token_cache_size": "SIDECAR_TOKEN_CACHE_SIZE",
    "token_cache_min_remaining": "SIDECAR_TOKEN_CACHE_MIN_REMAINING",
}


@dataclass(frozen=True)
class Config:
    """Validated settings for ``sidecar serve``."""

    #: Private key path; ``None`` means development mode (unless ``production``).
    key_file: str | None = None
    #: File holding the passphrase of an encrypted key.
    key_passphrase_file: str | None = None
    #: Salt put before the identifier for UUIDv5; ``None`` means unset.
    uuid_salt: str | None = None
    #: UUIDv5 namespace.
    uuid_namespace: uuid.UUID = uuid.NAMESPACE_URL
    #: Lifetime of tokens whose request names none.
    default_ttl: timedelta = DEFAULT_TTL
    #: Listen addresses: ``unix:///path`` or ``host:port``.
    listen: tuple[str, ...] = ("127.0.0.1:50051",)
    #: ``host:port`` addresses serving only grpc.health.v1 (kubelet gRPC probes); empty: none.
    health_listen: tuple[str, ...] = ()
    #: ``host:port`` of the Prometheus endpoint; empty disables it.
    metrics_addr: str = "127.0.0.1:9464"
    #: TOML file with the event authentication lists; ``None``: the documented defaults.
    events_config: str | None = None
    #: VerifyToken/EvaluateEvent also accept the previous key this long after a rotation (0: off, as Synerise).
    previous_key_grace: timedelta = timedelta(0)
    #: How long SIGTERM waits for in-flight calls.
    grace: timedelta = timedelta(seconds=10)
    #: Refuse development mode: a key and a salt must be configured.
    production: bool = False
    #: Worker processes serving gRPC (1: everything in this process).
    workers: int = 1
    #: Threads handling calls in each serving process. Signing releases the GIL, so
    #: a few threads keep both cores signing; many only queue on the GIL (bench/).
    threads: int = 4
    #: ``fast``: IdentityService calls run straight off grpc core's completion queue
    #: (:mod:`sidecar.fastpath`, one thread per CPU in all); ``stock``: through grpcio's thread pool.
    call_path: str = "fast"
    #: ``batch``: the sidecar's threads run SCHED_BATCH, so they do not preempt a running
    #: thread when they wake (:mod:`sidecar.sched`); ``normal``: the default Linux policy.
    sched_policy: str = "batch"
    #: Audit log level: INFO (issued and rejected), WARNING (rejected only), OFF.
    audit_level: str = "INFO"
    #: Audit log format: ``json`` (one object per line) or ``text``.
    audit_format: str = "json"
    #: Token cache entries in all (split across worker processes); 0 turns the cache off.
    token_cache_size: int = 100_000
    #: Share of the asked lifetime a cached token must still have to be reused.
    token_cache_min_remaining: float = 0.5
    # --- key rotation, access control and limits (issue 4) ---
    #: TLS server certificate chain (PEM) for TCP listeners; with ``tls_key``.
    tls_cert: str | None = None
    #: TLS server private key (PEM).
    tls_key: str | None = None
    #: CA bundle (PEM) that client certificates must chain to; set: mTLS is required.
    tls_client_ca: str | None = None
    #: Client certificate subjects / SANs / common names allowed to call; empty: any valid client.
    allowed_clients: tuple[str, ...] = ()
    #: Allow a plaintext TCP listener on a non-loopback address (explicit opt-out).
    insecure_tcp: bool = False
    #: Mode of created Unix sockets (0660: the pod's app container shares the group).
    socket_mode: int = 0o660
    #: Largest request accepted, in bytes; larger ones are refused before parsing.
    max_message_bytes: int = 16 * 1024
    #: Calls accepted at once per process; beyond it ``RESOURCE_EXHAUSTED``.
    max_concurrent_calls: int = 256
    #: Calls per second per caller (token bucket); 0 disables the rate limit.
    rate_limit: float = 0.0
    #: Bucket size of the rate limit; 0 means ``max(1, rate_limit)``.
    rate_burst: int = 0
    #: How often the key file is checked for a change (rotation without a signal).
    key_poll_interval: timedelta = timedelta(seconds=1)
    #: Accept a private key file readable by group or others.
    allow_insecure_key_permissions: bool = False

    def __post_init__(self) -> None:
        if not timedelta(0) < self.default_ttl < MAX_TTL:
            raise ConfigError("SIDECAR_DEFAULT_TTL: must be more than 0 and less than 7 days")
        if not self.listen:
            raise ConfigError("SIDECAR_LISTEN: at least one listen address is required")
        for addr in self.listen:
            _check_listen(addr)
        for addr in self.health_listen:
            _check_host_port(addr, "SIDECAR_HEALTH_LISTEN")
        if self.metrics_addr:
            _check_host_port(self.metrics_addr, "SIDECAR_METRICS_ADDR")
        if not timedelta(0) <= self.previous_key_grace <= MAX_TTL:
            raise ConfigError("SIDECAR_VERIFY_PREVIOUS_KEY_GRACE: must be between 0 and 7 days")
        if self.grace < timedelta(0):
            raise ConfigError("SIDECAR_GRACE: must not be negative")
        if self.workers < 1:
            raise ConfigError("SIDECAR_WORKERS: must be at least 1")
        for name, choices in (("call_path", CALL_PATHS), ("sched_policy", SCHED_POLICIES)):
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"{ENV[name]}: must be one of {', '.join(choices)}, got {value!r}")
        if self.threads < 1:
            raise ConfigError("SIDECAR_THREADS: must be at least 1")
        if self.audit_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "OFF"):
            raise ConfigError(
                f"SIDECAR_AUDIT_LEVEL: must be DEBUG, INFO, WARNING, ERROR or OFF, got {self.audit_level!r}")
        if self.audit_format not in ("json", "text"):
            raise ConfigError(f"SIDECAR_AUDIT_FORMAT: must be json or text, got {self.audit_format!r}")
        if self.token_cache_size < 0:
            raise ConfigError("SIDECAR_TOKEN_CACHE_SIZE: must be 0 (off) or more")
        if not 0 < self.token_cache_min_remaining <= 1:
            raise ConfigError("SIDECAR_TOKEN_CACHE_MIN_REMAINING: must be more than 0 and at most 1")
        if self.production and self.key_file is None:
            raise ConfigError("production mode: no key configured; set SIDECAR_KEY_FILE or --key-file")
        if self.key_file is not None and self.uuid_salt is None:
            raise ConfigError(
                "SIDECAR_UUID_SALT: must be set when a key is configured (an empty value, set on purpose, is allowed)"
            )
        _check_hardening(self)

    @property
    def dev_mode(self) -> bool:
        """No key configured: a throw-away key and the dev salt are used."""
        return self.key_file is None

    @property
    def salt(self) -> str:
        """The salt in force (the dev salt in development mode)."""
        return DEV_SALT if self.uuid_salt is None else self.uuid_salt


def _check_host_port(addr: str, setting: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting}: {addr!r} is not host:port")


def _check_listen(addr: str) -> None:
    if addr.startswith("unix://"):
        if not addr.removeprefix("unix://"):
            raise ConfigError(f"SIDECAR_LISTEN: {addr!r} has no socket path")
        return
    if addr.startswith("unix:"):
        raise ConfigError(f"SIDECAR_LISTEN: write Unix sockets as unix:///absolute/path, got {addr!r}")
    _check_host_port(addr, "SIDECAR_LISTEN")


def is_loopback(addr: str) -> bool:
    """Whether a ``host:port`` listen address is reachable from this host only."""
    import ipaddress

    host = addr.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_hardening(cfg: Config) -> None:
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("SIDECAR_TLS_CERT and SIDECAR_TLS_KEY: set both or neither")
    if cfg.tls_client_ca is not None and cfg.tls_cert is None:
        raise ConfigError("SIDECAR_TLS_CLIENT_CA: needs SIDECAR_TLS_CERT and SIDECAR_TLS_KEY (mTLS runs over TLS)")
    if cfg.allowed_clients and cfg.tls_client_ca is None:
        raise ConfigError("SIDECAR_ALLOWED_CLIENTS: needs SIDECAR_TLS_CLIENT_CA (the list names client certificates)")
    if cfg.tls_cert is None and not cfg.insecure_tcp:
        for addr in cfg.listen:
            if not addr.startswith("unix://") and not is_loopback(addr):
                raise ConfigError(
                    f"SIDECAR_LISTEN: {addr} is not a loopback address; set SIDECAR_TLS_CERT and SIDECAR_TLS_KEY "
                    "(and SIDECAR_TLS_CLIENT_CA for mTLS), or pass --insecure-tcp"
                )
    if not 0 <= cfg.socket_mode <= 0o777:
        raise ConfigError("SIDECAR_SOCKET_MODE: must be an octal file mode such as 660")
    if cfg.max_message_bytes < 1024:
        raise ConfigError("SIDECAR_MAX_MESSAGE_BYTES: must be at least 1024")
    if cfg.max_concurrent_calls < 1:
        raise ConfigError("SIDECAR_MAX_CONCURRENT_CALLS: must be at least 1")
    if cfg.rate_limit < 0 or cfg.rate_burst < 0:
        raise ConfigError("SIDECAR_RATE_LIMIT and SIDECAR_RATE_BURST: must not be negative")
    if cfg.key_poll_interval <= timedelta(0):
        raise ConfigError("SIDECAR_KEY_POLL_INTERVAL: must be positive")


_TRUE = ("1", "true", "yes", "on")


def _hardening_sources(pick: Callable[[str], object | None]) -> dict[str, object]:
    """Keyword arguments for the issue-4 settings, from flags and environment."""
    kwargs: dict[str, object] = {}
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        value = pick(name)
        if value not in (None, ""):
            kwargs[name] = str(value)
    allowed = pick("allowed_clients")
    if allowed not in (None, ""):
        kwargs["allowed_clients"] = tuple(a.strip() for a in str(allowed).split(",") if a.strip())
    for name in ("insecure_tcp", "allow_insecure_key_permissions"):
        value = pick(name)
        if value is not None and value != "":
            kwargs[name] = value is True or str(value).strip().lower() in _TRUE
    mode = pick("socket_mode")
    if mode not in (None, ""):
        try:
            kwargs["socket_mode"] = int(str(mode).strip().removeprefix("0o"), 8)
        except ValueError:
            raise ConfigError(f"SIDECAR_SOCKET_MODE: must be an octal file mode such as 660, got {mode!r}") from None
    for name, kind in (("max_message_bytes", int), ("max_concurrent_calls", int), ("rate_burst", int),
                       ("rate_limit", float)):
        value = pick(name)
        if value not in (None, ""):
            try:
                kwargs[name] = kind(str(value).strip())
            except ValueError:
                raise ConfigError(f"{ENV[name]}: must be a number, got {value!r}") from None
    poll = pick("key_poll_interval")
    if poll not in (None, ""):
        try:
            kwargs["key_poll_interval"] = parse_duration(str(poll))
        except ValueError as exc:
            raise ConfigError(f"SIDECAR_KEY_POLL_INTERVAL: {exc}") from None
    return kwargs


def from_sources(flags: Mapping[str, object | None], environ: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from parsed flags (``None`` = not given) and the environment."""
    env = os.environ if environ is None else environ

    def pick(name: str) -> object | None:
        value = flags.get(name)
        if value is not None:
            return value
        return env.get(ENV[name]) if name in ENV else None

    kwargs: dict[str, object] = {}
    for name in ("key_file", "key_passphrase_file", "events_config"):
        value = pick(name)
        if value not in (None, ""):
            kwargs[name] = str(value)
    salt = pick("uuid_salt")
    if salt is not None:
        kwargs["uuid_salt"] = str(salt)
    ns = pick("uuid_namespace")
    if ns not in (None, ""):
        try:
            kwargs["uuid_namespace"] = identity.parse_namespace(str(ns))
        except ValueError as exc:
            raise ConfigError(f"SIDECAR_UUID_NAMESPACE: {exc}") from None
    for name in ("default_ttl", "grace"):
        value = pick(name)
        if value not in (None, ""):
            try:
                kwargs[name] = parse_duration(str(value))
            except ValueError as exc:
                raise ConfigError(f"{ENV[name]}: {exc}") from None
    previous_key_grace = pick("previous_key_grace")
    if previous_key_grace not in (None, ""):
        try:
            kwargs["previous_key_grace"] = parse_duration(str(previous_key_grace))
        except ValueError as exc:
            raise ConfigError(f"SIDECAR_VERIFY_PREVIOUS_KEY_GRACE: {exc}") from None
    health_listen = pick("health_listen")
    if health_listen is not None:
        kwargs["health_listen"] = tuple(a.strip() for a in str(health_listen).split(",") if a.strip())
    listen = pick("listen")
    if listen is not None:
        kwargs["listen"] = tuple(a.strip() for a in str(listen).split(",") if a.strip())
    metrics = pick("metrics_addr")
    if metrics is not None:
        kwargs["metrics_addr"] = str(metrics).strip()
    threads = pick("threads")
    if threads not in (None, ""):
        text = str(threads).strip()
        if not text.isdigit():
            raise ConfigError(f"SIDECAR_THREADS: must be a positive integer, got {text!r}")
        kwargs["threads"] = int(text)
    workers = pick("workers")
    if workers not in (None, ""):
        text = str(workers).strip()
        if text == "auto":
            kwargs["workers"] = available_cpus()
        elif text.isdigit():
            kwargs["workers"] = int(text)
        else:
            raise ConfigError(f"SIDECAR_WORKERS: must be a positive integer or 'auto', got {text!r}")
    for name in ("audit_level", "audit_format", "call_path", "sched_policy"):
        value = pick(name)
        if value not in (None, ""):
            text = str(value).strip()
            kwargs[name] = text.upper() if name == "audit_level" else text.lower()
    cache_size = pick("token_cache_size")
    if cache_size not in (None, ""):
        text = str(cache_size).strip()
        if not text.isdigit():
            raise ConfigError(f"SIDECAR_TOKEN_CACHE_SIZE: must be a whole number (0 turns the cache off), got {text!r}")
        kwargs["token_cache_size"] = int(text)
    share = pick("token_cache_min_remaining")
    if share not in (None, ""):
        try:
            kwargs["token_cache_min_remaining"] = float(str(share).strip())
        except ValueError:
            raise ConfigError(f"SIDECAR_TOKEN_CACHE_MIN_REMAINING: must be a number in (0, 1], got {share!r}") from None
    if flags.get("production"):
        kwargs["production"] = True
    kwargs.update(_hardening_sources(pick))
    return Config(**kwargs)  # type: ignore[arg-type]
