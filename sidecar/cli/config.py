"""The sidecar's configuration: one frozen, validated object built at start-up.

Sources, strongest first: command-line flags, ``SIDECAR_*`` environment
variables, defaults. Each field of :class:`Config` declares its setting once
(variable, flag, kind, help; :mod:`sidecar.cli.settings`): the flags of
``sidecar serve``, the reading of the environment, the single-field checks and
the table in docs/configuration.md all come from there. Any problem raises
:class:`~sidecar.domain.errors.ConfigError` with one line naming the setting and the rule.

>>> from_sources({"threads": "6"}, {"SIDECAR_THREADS": "2"}).threads
6
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sidecar.cli.settings import (
    FILE_MODE,
    PATH,
    SWITCH,
    Kind,
    check_all,
    choice,
    collect,
    comma_list,
    duration,
    integer,
    number,
    read,
    setting,
    text,
)
from sidecar.domain import identity
from sidecar.domain.errors import ConfigError
from sidecar.domain.validation import DEFAULT_TTL, MAX_TTL
from sidecar.ops import sched
from sidecar.ops.sched import available_cpus

#: Salt used in development mode when none is configured. Never for production.
DEV_SALT = "sidecar-dev-salt"
#: Where the Connect listener answers in development mode when SIDECAR_HTTP_LISTEN is not set.
DEV_HTTP_LISTEN = ("127.0.0.1:50052",)

#: Values of ``SIDECAR_CALL_PATH``.
CALL_PATHS = ("fast", "stock")
#: Values of ``SIDECAR_SCHED_POLICY`` (Linux CPU scheduling policy of the sidecar's threads).
SCHED_POLICIES = tuple(sched.POLICIES)
#: Values of ``SIDECAR_LOG_LEVEL``.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Largest request size allowed: grpc takes an int32, and a token request is a few hundred bytes.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _namespace(value: str) -> uuid.UUID:
    try:
        return identity.parse_namespace(value)
    except ValueError:
        raise ValueError("namespace must be 'url', 'dns' or a UUID") from None


def _show_namespace(value: uuid.UUID) -> str:
    return next((name for name, ns in identity.NAMESPACES.items() if ns == value), str(value))


NAMESPACE: Kind[uuid.UUID] = Kind(_namespace, show=_show_namespace, metavar="NAMESPACE")

KEYS = "Keys and identity"
TOKENS = "Tokens and events"
NETWORK = "Listeners and access"
LIMITS = "Limits"
PROCESSES = "Processes and threads"
LOGS = "Logs"

_EVENTS = "[Events](events.md)"
_PROCESS_MODEL = "[Process model](process-model.md)"


@dataclass(frozen=True)
class Config:
    """Validated settings for ``sidecar serve``; each field's ``setting(...)`` says what it means."""

    key_file: str | None = field(default=None, metadata=setting(
        "SIDECAR_KEY_FILE", "--key-file", PATH, "private key: PKCS#8 PEM, PKCS#1 PEM or PKCS#8 DER",
        KEYS, default_doc="none: development mode"))
    key_passphrase_file: str | None = field(default=None, metadata=setting(
        "SIDECAR_KEY_PASSPHRASE_FILE", "--key-passphrase-file", PATH,
        "file holding the passphrase of an encrypted key", KEYS))
    uuid_salt: str | None = field(default=None, metadata=setting(
        "SIDECAR_UUID_SALT", "--uuid-salt", text(), "salt put before the identifier for UUIDv5", KEYS,
        default_doc="required when a key is set (an empty value, set on purpose, is allowed)", keep_empty=True))
    uuid_namespace: uuid.UUID = field(default=uuid.NAMESPACE_URL, metadata=setting(
        "SIDECAR_UUID_NAMESPACE", "--uuid-namespace", NAMESPACE,
        "UUIDv5 namespace: `url`, `dns` or a UUID", KEYS))
    production: bool = field(default=False, metadata=setting(
        None, "--production", SWITCH,
        "refuse development mode: a key and a salt must be configured", KEYS))
    next_key_file: str | None = field(default=None, metadata=setting(
        "SIDECAR_NEXT_KEY_FILE", "--next-key-file", PATH,
        "the next private key (same formats and checks as `SIDECAR_KEY_FILE`), signing from "
        "`SIDECAR_NEXT_KEY_ACTIVATES_AT`; watched, a missing file is normal (see [Security](security.md#rotating-with-synerise))",
        KEYS, default_doc="none"))
    next_key_activates_at: str | None = field(default=None, metadata=setting(
        "SIDECAR_NEXT_KEY_ACTIVATES_AT", "--next-key-activates-at", text(strip=True, metavar="INSTANT"),
        "when the next key starts signing: an RFC 3339 instant with offset, whole seconds (`2026-12-03T10:00:00Z`), or `@FILE` "
        "holding one (watched); until then no token outlives it", KEYS, default_doc="none"))
    key_poll_interval: timedelta = field(default=timedelta(seconds=1), metadata=setting(
        "SIDECAR_KEY_POLL_INTERVAL", "--key-poll-interval",
        duration(timedelta(0), timedelta(hours=1), lo_open=True),
        "how often the key file is checked for a change (rotation without a signal; SIGHUP reloads at once)", KEYS))
    allow_insecure_key_permissions: bool = field(default=False, metadata=setting(
        "SIDECAR_ALLOW_INSECURE_KEY_PERMISSIONS", "--allow-insecure-key-permissions", SWITCH,
        "accept key files readable by group or others (never ones they may write)", KEYS))

    default_ttl: timedelta = field(default=DEFAULT_TTL, metadata=setting(
        "SIDECAR_DEFAULT_TTL", "--default-ttl",
        duration(timedelta(0), MAX_TTL, lo_open=True, hi_open=True,
                 rule="must be more than 0 and less than 7 days"),
        "lifetime of tokens whose request names none: seconds or `30m` / `24h` / `6d`", TOKENS))
    previous_key_grace: timedelta = field(default=timedelta(0), metadata=setting(
        "SIDECAR_VERIFY_PREVIOUS_KEY_GRACE", "--verify-previous-key-grace",
        duration(timedelta(0), MAX_TTL, rule="must be between 0 and 7 days"),
        "`VerifyToken` and `EvaluateEvent` also accept the previous key's tokens this long after a rotation, "
        f"e.g. `1h` (see {_EVENTS})", TOKENS, default_doc="`0` (off, as Synerise)"))
    events_config: str | None = field(default=None, metadata=setting(
        "SIDECAR_EVENTS_CONFIG", "--events-config", PATH,
        f"TOML file with the three event lists (see {_EVENTS})", TOKENS, default_doc="the documented defaults"))
    token_cache_size: int = field(default=100_000, metadata=setting(
        "SIDECAR_TOKEN_CACHE_SIZE", "--token-cache-size",
        integer(0, 10_000_000, syntax="must be a whole number (0 turns the cache off)"),
        "tokens kept for reuse, across all workers; `0` turns the cache off", TOKENS))
    token_cache_bytes: int = field(default=32 * 1024 * 1024, metadata=setting(
        "SIDECAR_TOKEN_CACHE_BYTES", "--token-cache-bytes", integer(1024, 1 << 40),
        "bytes of tokens kept for reuse, across all workers, as counted per entry (email, uuid and JWT "
        "strings plus 200 bytes; a 34-character email costs ~950, RSS grows ~1.4x less than counted: "
        "see [Performance](performance.md)); whichever of this and `SIDECAR_TOKEN_CACHE_SIZE` binds first",
        TOKENS, default_doc="`33554432` (32 MiB)"))
    token_cache_min_remaining: float = field(default=0.5, metadata=setting(
        "SIDECAR_TOKEN_CACHE_MIN_REMAINING", "--token-cache-min-remaining", number(0, 1, lo_open=True),
        "share of the asked lifetime a reused token must still have", TOKENS))

    listen: tuple[str, ...] = field(default=("127.0.0.1:50051",), metadata=setting(
        "SIDECAR_LISTEN", "--listen", comma_list(),
        "comma-separated `unix:///path/to.sock` and `host:port` addresses; TCP off loopback needs mTLS "
        "(`SIDECAR_TLS_CLIENT_CA`) or `--insecure-tcp`", NETWORK, keep_empty=True))
    http_listen: tuple[str, ...] | None = field(default=None, metadata=setting(
        "SIDECAR_HTTP_LISTEN", "--http-listen", comma_list(),
        "addresses of the Connect protocol (HTTP/1.1, h2c, JSON or binary) listener, the same syntax and rules "
        "as `SIDECAR_LISTEN`; empty turns it off", NETWORK,
        default_doc="off; `127.0.0.1:50052` in development mode", keep_empty=True))
    health_listen: tuple[str, ...] = field(default=(), metadata=setting(
        "SIDECAR_HEALTH_LISTEN", "--health-listen", comma_list(),
        "`host:port` addresses of a second server answering only `grpc.health.v1` (for kubelet `grpc:` probes, "
        "which dial the pod IP)", NETWORK, default_doc="none", keep_empty=True))
    metrics_addr: str = field(default="127.0.0.1:9464", metadata=setting(
        "SIDECAR_METRICS_ADDR", "--metrics-addr", text(strip=True, metavar="ADDR"),
        "`host:port` of the Prometheus `/metrics` endpoint; empty disables it", NETWORK, keep_empty=True))
    socket_mode: int = field(default=0o660, metadata=setting(
        "SIDECAR_SOCKET_MODE", "--socket-mode", FILE_MODE,
        "octal mode of created Unix sockets (`0660`: the pod's app container shares the group)", NETWORK))
    tls_cert: str | None = field(default=None, metadata=setting(
        "SIDECAR_TLS_CERT", "--tls-cert", PATH, "certificate chain (PEM) for TLS on TCP listeners; "
        "with `SIDECAR_TLS_KEY`", NETWORK, default_doc="none (plaintext)"))
    tls_key: str | None = field(default=None, metadata=setting(
        "SIDECAR_TLS_KEY", "--tls-key", PATH, "private key (PEM) of that certificate", NETWORK,
        default_doc="none (plaintext)"))
    tls_client_ca: str | None = field(default=None, metadata=setting(
        "SIDECAR_TLS_CLIENT_CA", "--tls-client-ca", PATH,
        "CA bundle: callers must present a certificate it signed (mTLS)", NETWORK))
    allowed_clients: tuple[str, ...] = field(default=(), metadata=setting(
        "SIDECAR_ALLOWED_CLIENTS", "--allowed-clients", comma_list("NAME[,NAME...]"),
        "comma-separated client certificate subjects, SANs or common names allowed to call; "
        "needs `SIDECAR_TLS_CLIENT_CA`", NETWORK, default_doc="any valid certificate"))
    insecure_tcp: bool = field(default=False, metadata=setting(
        "SIDECAR_INSECURE_TCP", "--insecure-tcp", SWITCH,
        "allow TCP on a non-loopback address without client certificates (plaintext or server-only TLS), for "
        "meshes that authenticate callers themselves; logged as a warning at every start", NETWORK))

    max_message_bytes: int = field(default=16 * 1024, metadata=setting(
        "SIDECAR_MAX_MESSAGE_BYTES", "--max-message-bytes",
        integer(1024, MAX_MESSAGE_BYTES, rule=f"must be at least 1024 and at most {MAX_MESSAGE_BYTES} (64 MiB)"),
        "largest request accepted, in bytes; larger ones are refused before parsing", LIMITS))
    max_concurrent_calls: int = field(default=256, metadata=setting(
        "SIDECAR_MAX_CONCURRENT_CALLS", "--max-concurrent-calls", integer(1, 100_000),
        "calls accepted at once (per process); more get `RESOURCE_EXHAUSTED`", LIMITS))
    request_read_timeout: timedelta = field(default=timedelta(seconds=2), metadata=setting(
        "SIDECAR_REQUEST_READ_TIMEOUT", "--request-read-timeout",
        duration(timedelta(0), timedelta(seconds=60), lo_open=True, rule="must be more than 0 and at most 60s"),
        "a call whose request message has not arrived this long after its headers is cancelled "
        "(counted `request_timeout`); until it arrives the call takes no slot of `SIDECAR_MAX_CONCURRENT_CALLS`",
        LIMITS))
    max_pending_calls: int = field(default=1024, metadata=setting(
        "SIDECAR_MAX_PENDING_CALLS", "--max-pending-calls", integer(1, 100_000),
        "calls waiting for their request message at once (per process); one more cancels the oldest if it "
        "has waited 100 ms, else is refused (counted `too_many_pending`). A busy server's calls wait here "
        "too until a thread takes their message, so keep it well above `SIDECAR_MAX_CONCURRENT_CALLS`",
        LIMITS))
    max_pending_per_connection: int = field(default=256, metadata=setting(
        "SIDECAR_MAX_PENDING_PER_CONNECTION", "--max-pending-per-connection", integer(1, 100_000),
        "calls waiting for their request message on one TCP connection; more get `RESOURCE_EXHAUSTED` "
        "(counted `too_many_pending`). Below `SIDECAR_MAX_STREAMS_PER_CONNECTION` it can refuse a busy "
        "client's burst", LIMITS))
    max_streams_per_connection: int = field(default=1000, metadata=setting(
        "SIDECAR_MAX_STREAMS_PER_CONNECTION", "--max-streams-per-connection", integer(1, 100_000),
        "concurrent calls (HTTP/2 streams) one connection may open (grpc `max_concurrent_streams`); grpc "
        "refuses streams past it (`UNAVAILABLE`, REFUSED_STREAM), and streams still closing count too, so "
        "keep it well above the calls a client keeps in flight (at 100, a client with 64 in flight saw "
        "refusals)", LIMITS))
    max_connections: int = field(default=0, metadata=setting(
        "SIDECAR_MAX_CONNECTIONS", "--max-connections", integer(0, 1_000_000),
        "client connections accepted at once (per process); more are closed by grpc as they come. `0`: the "
        "open-file limit (`RLIMIT_NOFILE`) less 128 descriptors kept for key files, `/metrics`, logs and "
        "the health server", LIMITS, default_doc="`0` (from `RLIMIT_NOFILE`)"))
    connection_idle_timeout: timedelta = field(default=timedelta(minutes=5), metadata=setting(
        "SIDECAR_CONNECTION_IDLE_TIMEOUT", "--connection-idle-timeout", duration(timedelta(0), timedelta(days=1)),
        "a connection with no call for this long is closed (GOAWAY; clients reconnect); `0` keeps idle "
        "connections open", LIMITS))
    self_check_timeout: timedelta = field(default=timedelta(seconds=2), metadata=setting(
        "SIDECAR_SELF_CHECK_TIMEOUT", "--self-check-timeout", duration(timedelta(0), timedelta(seconds=60)),
        "liveness: every second the sidecar calls its own `GetPublicKey` (first Unix socket, else first "
        "plaintext TCP listener) with this deadline; 3 misses in a row turn health `NOT_SERVING` until it "
        "answers again, so a wedged pod fails its probe. `0` turns it off; with only TLS listeners it is off",
        LIMITS))
    health_max_watchers: int = field(default=16, metadata=setting(
        "SIDECAR_HEALTH_MAX_WATCHERS", "--health-max-watchers", integer(1, 1024),
        "health `Watch` streams open at once (per process, both health listeners); more get "
        "`RESOURCE_EXHAUSTED`. `Check` has threads of its own and is never refused", LIMITS))
    rate_limit: float = field(default=0.0, metadata=setting(
        "SIDECAR_RATE_LIMIT", "--rate-limit", number(0, 1_000_000),
        "per-caller token bucket: calls per second; `0` turns it off", LIMITS, default_doc="`0` (off)"))
    rate_burst: int = field(default=0, metadata=setting(
        "SIDECAR_RATE_BURST", "--rate-burst", integer(0, 1_000_000),
        "per-caller token bucket: burst size; `0` means `max(1, rate)`", LIMITS, default_doc="`max(1, rate)`"))

    workers: int = field(default=1, metadata=setting(
        "SIDECAR_WORKERS", "--workers",
        integer(1, 1024, syntax="must be a positive integer or 'auto'", auto=available_cpus),
        "gRPC worker processes, or `auto`: one per CPU it may use (its CPU affinity, lowered to the "
        "container's cgroup CPU limit)", PROCESSES))
    threads: int = field(default=4, metadata=setting(
        "SIDECAR_THREADS", "--threads", integer(1, 256, syntax="must be a positive integer"),
        "threads of grpc's own pool in each process: health, reflection, and every call when the call path is "
        "`stock`. Signing releases the GIL, so a few keep the cores busy; many only queue on it", PROCESSES))
    call_path: str = field(default="fast", metadata=setting(
        "SIDECAR_CALL_PATH", "--call-path", choice(*CALL_PATHS),
        "`fast`: `IdentityService` calls are taken straight off grpc core's completion queue by one thread per "
        f"CPU it may use (see {_PROCESS_MODEL}); `stock`: through grpcio's thread pool and interceptors. "
        "Same rules, metrics and logs either way", PROCESSES))
    sched_policy: str = field(default="batch", metadata=setting(
        "SIDECAR_SCHED_POLICY", "--sched-policy", choice(*SCHED_POLICIES),
        "Linux CPU scheduling of the sidecar's threads: `batch` (SCHED_BATCH: a thread that wakes does not "
        "preempt a running one; see [Process model](process-model.md#cpu-scheduling-sched_batch)) or `normal`",
        PROCESSES))
    grace: timedelta = field(default=timedelta(seconds=10), metadata=setting(
        "SIDECAR_GRACE", "--grace", duration(timedelta(0), timedelta(hours=1)),
        "how long SIGTERM lets in-flight calls finish", PROCESSES))

    log_level: str = field(default="INFO", metadata=setting(
        "SIDECAR_LOG_LEVEL", "--log-level", choice(*LOG_LEVELS, case=str.upper),
        "application log level: `DEBUG`, `INFO`, `WARNING`, `ERROR`", LOGS))
    audit_level: str = field(default="INFO", metadata=setting(
        "SIDECAR_AUDIT_LEVEL", "--audit-level",
        choice("DEBUG", "INFO", "WARNING", "ERROR", "OFF", case=str.upper,
               rule="must be DEBUG, INFO, WARNING, ERROR or OFF"),
        "audit log: `INFO` (issued and rejected), `WARNING` (rejected only), `OFF`", LOGS))
    audit_format: str = field(default="json", metadata=setting(
        "SIDECAR_AUDIT_FORMAT", "--audit-format", choice("json", "text", rule="must be json or text"),
        "audit log lines: `json` (one object per line) or `text`", LOGS))

    def __post_init__(self) -> None:
        check_all(SETTINGS, self)
        if not self.listen:
            raise ConfigError("SIDECAR_LISTEN: at least one listen address is required")
        for addr in self.listen:
            _check_listen(addr)
        for addr in self.http_listen or ():
            _check_listen(addr, "SIDECAR_HTTP_LISTEN")
        for addr in self.health_listen:
            _check_host_port(addr, "SIDECAR_HEALTH_LISTEN")
        if self.metrics_addr:
            _check_host_port(self.metrics_addr, "SIDECAR_METRICS_ADDR")
        if self.production and self.key_file is None:
            raise ConfigError("production mode: no key configured; set SIDECAR_KEY_FILE or --key-file")
        if self.key_file is not None and self.uuid_salt is None:
            raise ConfigError(
                "SIDECAR_UUID_SALT: must be set when a key is configured (an empty value, set on purpose, is allowed)"
            )
        _check_transport_security(self)
        _check_next_key(self)

    @property
    def dev_mode(self) -> bool:
        """No key configured: a throw-away key and the dev salt are used."""
        return self.key_file is None

    @property
    def http_addresses(self) -> tuple[str, ...]:
        """The Connect listener's addresses in force: as set, else ``127.0.0.1:50052`` in development mode."""
        if self.http_listen is not None:
            return self.http_listen
        # Not with an allow-list: the Connect listener's TCP callers could not be matched against it.
        return DEV_HTTP_LISTEN if self.dev_mode and not self.allowed_clients else ()

    @property
    def salt(self) -> str:
        """The salt in force (the dev salt in development mode)."""
        return DEV_SALT if self.uuid_salt is None else self.uuid_salt


#: Every setting of ``sidecar serve``, in the order of the fields.
SETTINGS = collect(Config)

#: Environment variable for each setting (SPEC §6); flags override them.
ENV = {s.name: s.env for s in SETTINGS if s.env is not None}


def _check_host_port(addr: str, setting: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting}: {addr!r} is not host:port")


def _check_listen(addr: str, setting: str = "SIDECAR_LISTEN") -> None:
    if addr.startswith("unix://"):
        if not addr.removeprefix("unix://"):
            raise ConfigError(f"{setting}: {addr!r} has no socket path")
        return
    if addr.startswith("unix:"):
        raise ConfigError(f"{setting}: write Unix sockets as unix:///absolute/path, got {addr!r}")
    _check_host_port(addr, setting)


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


def _check_next_key(cfg: Config) -> None:
    """The next key and its instant come together, beside a key file. Their content is checked
    while serving (a bad next key or instant never stops the sidecar), not here."""
    if (cfg.next_key_file is None) != (cfg.next_key_activates_at is None):
        raise ConfigError("SIDECAR_NEXT_KEY_FILE and SIDECAR_NEXT_KEY_ACTIVATES_AT: set both or neither")
    if cfg.next_key_file is not None and cfg.key_file is None:
        raise ConfigError("SIDECAR_NEXT_KEY_FILE: needs SIDECAR_KEY_FILE (development mode has no key to rotate)")
    if cfg.next_key_activates_at == "@":
        raise ConfigError("SIDECAR_NEXT_KEY_ACTIVATES_AT: '@' must be followed by a file name")


def _check_transport_security(cfg: Config) -> None:
    """TLS comes in pairs, mTLS and the allow-list build on it, TCP without mTLS stays on loopback."""
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("SIDECAR_TLS_CERT and SIDECAR_TLS_KEY: set both or neither")
    if cfg.tls_client_ca is not None and cfg.tls_cert is None:
        raise ConfigError("SIDECAR_TLS_CLIENT_CA: needs SIDECAR_TLS_CERT and SIDECAR_TLS_KEY (mTLS runs over TLS)")
    if cfg.allowed_clients and cfg.tls_client_ca is None:
        raise ConfigError("SIDECAR_ALLOWED_CLIENTS: needs SIDECAR_TLS_CLIENT_CA (the list names client certificates)")
    # Server-only TLS authenticates no caller: whoever reaches the port could mint tokens.
    for name, listen in (("SIDECAR_LISTEN", cfg.listen), ("SIDECAR_HTTP_LISTEN", cfg.http_listen or ())):
        exposed = exposed_tcp(listen)
        if exposed and cfg.tls_client_ca is None and not cfg.insecure_tcp:
            raise ConfigError(
                f"{name}: {exposed[0]} is not a loopback address, so callers must present client certificates: "
                "set SIDECAR_TLS_CERT, SIDECAR_TLS_KEY and SIDECAR_TLS_CLIENT_CA (mTLS), or pass --insecure-tcp "
                "where a mesh authenticates callers itself"
            )
    if cfg.allowed_clients and any(not a.startswith("unix://") for a in cfg.http_listen or ()):
        raise ConfigError(
            "SIDECAR_ALLOWED_CLIENTS: the Connect listener cannot see client certificate names (its HTTP server "
            "does not pass them on); serve SIDECAR_HTTP_LISTEN on a Unix socket only, or rely on "
            "SIDECAR_TLS_CLIENT_CA alone"
        )


def exposed_tcp(listen: tuple[str, ...]) -> list[str]:
    """The TCP listen addresses reachable from other hosts."""
    return [addr for addr in listen if not addr.startswith("unix://") and not is_loopback(addr)]


def from_sources(flags: Mapping[str, object | None], environ: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from parsed flags (``None`` = not given) and the environment."""
    return Config(**read(SETTINGS, flags, os.environ if environ is None else environ))
