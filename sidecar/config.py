"""The sidecar's configuration: one frozen, validated object built at start-up.

Sources, strongest first: command-line flags, ``SIDECAR_*`` environment
variables, defaults. Any problem raises :class:`~sidecar.errors.ConfigError`
with one line naming the setting and the rule.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sidecar import identity
from sidecar.errors import ConfigError
from sidecar.validation import DEFAULT_TTL, MAX_TTL, parse_duration

#: Salt used in development mode when none is configured. Never for production.
DEV_SALT = "sidecar-dev-salt"

#: Environment variable for each setting (SPEC §6); flags override them.
ENV = {
    "key_file": "SIDECAR_KEY_FILE",
    "key_passphrase_file": "SIDECAR_KEY_PASSPHRASE_FILE",
    "uuid_salt": "SIDECAR_UUID_SALT",
    "uuid_namespace": "SIDECAR_UUID_NAMESPACE",
    "default_ttl": "SIDECAR_DEFAULT_TTL",
    "listen": "SIDECAR_LISTEN",
    "metrics_addr": "SIDECAR_METRICS_ADDR",
    "events_config": "SIDECAR_EVENTS_CONFIG",
    "grace": "SIDECAR_GRACE",
    "workers": "SIDECAR_WORKERS",
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
    #: ``host:port`` of the Prometheus endpoint; empty disables it.
    metrics_addr: str = "127.0.0.1:9464"
    #: TOML file with the event authentication lists; ``None``: the documented defaults.
    events_config: str | None = None
    #: How long SIGTERM waits for in-flight calls.
    grace: timedelta = timedelta(seconds=10)
    #: Refuse development mode: a key and a salt must be configured.
    production: bool = False
    #: Worker processes serving gRPC (1: everything in this process).
    workers: int = 1
    #: Token cache entries in all (split across worker processes); 0 turns the cache off.
    token_cache_size: int = 100_000
    #: Share of the asked lifetime a cached token must still have to be reused.
    token_cache_min_remaining: float = 0.5
    #: Extra settings later features add without widening this signature.
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not timedelta(0) < self.default_ttl < MAX_TTL:
            raise ConfigError("SIDECAR_DEFAULT_TTL: must be more than 0 and less than 7 days")
        if not self.listen:
            raise ConfigError("SIDECAR_LISTEN: at least one listen address is required")
        for addr in self.listen:
            _check_listen(addr)
        if self.metrics_addr:
            _check_host_port(self.metrics_addr, "SIDECAR_METRICS_ADDR")
        if self.grace < timedelta(0):
            raise ConfigError("SIDECAR_GRACE: must not be negative")
        if self.workers < 1:
            raise ConfigError("SIDECAR_WORKERS: must be at least 1")
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
    listen = pick("listen")
    if listen is not None:
        kwargs["listen"] = tuple(a.strip() for a in str(listen).split(",") if a.strip())
    metrics = pick("metrics_addr")
    if metrics is not None:
        kwargs["metrics_addr"] = str(metrics).strip()
    workers = pick("workers")
    if workers not in (None, ""):
        text = str(workers).strip()
        if text == "auto":
            kwargs["workers"] = len(os.sched_getaffinity(0))
        elif text.isdigit():
            kwargs["workers"] = int(text)
        else:
            raise ConfigError(f"SIDECAR_WORKERS: must be a positive integer or 'auto', got {text!r}")
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
    return Config(**kwargs)  # type: ignore[arg-type]
