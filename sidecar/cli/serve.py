"""The composition root of ``sidecar serve``: the one place that turns :class:`Config` into objects.

It builds the use cases, the observers (metrics and audit), the admission
guards, the credentials, the key rotator and the server runtime, and runs one
process or pre-forked workers. Every other layer takes plain values.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from sidecar.cli.config import Config, exposed_tcp
from sidecar.domain import event_policy
from sidecar.domain.keys import KeyHolder, SigningKey
from sidecar.ops.rotation import KeyRotator
from sidecar.ops.sched import available_cpus
from sidecar.service.cache import TokenCache
from sidecar.service.observer import Observer, Observers
from sidecar.service.usecases import Sidecar
from sidecar.telemetry.rpc_metrics import RpcMetrics
from sidecar.transport import admission
from sidecar.transport.interceptors import MetricsInterceptor
from sidecar.transport.runtime import ServerOptions

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sidecar.telemetry.metrics import MetricsServer
    from sidecar.transport.httpserver import HttpServer
    from sidecar.transport.runtime import Runtime

log = logging.getLogger("sidecar")

DEV_BANNER = (
    "DEVELOPMENT MODE: no key configured, signing with a THROW-AWAY key generated at start-up "
    "and the dev UUID salt. Tokens will not verify in Synerise. Set SIDECAR_KEY_FILE and "
    "SIDECAR_UUID_SALT (or pass --production) for real use."
)


def make_sidecar(cfg: Config, key: SigningKey, observer: Observer,
                 event_settings: event_policy.EventSettings | None = None) -> Sidecar:
    observer.key_activated(key)
    return Sidecar(KeyHolder(key), salt=cfg.salt, namespace=cfg.uuid_namespace, default_ttl=cfg.default_ttl,
                   observer=observer, events=event_settings, previous_key_grace=cfg.previous_key_grace,
                   cache=make_cache(cfg))


def make_cache(cfg: Config) -> TokenCache | None:
    """The token cache of one worker process, or ``None`` when turned off.

    The configured size bounds the whole sidecar, so it is split across the
    pre-forked workers: memory stays flat whatever ``--workers`` is.
    """
    if cfg.token_cache_size == 0:
        return None
    return TokenCache(max(1, cfg.token_cache_size // cfg.workers), cfg.token_cache_min_remaining,
                      max_bytes=max(1024, cfg.token_cache_bytes // cfg.workers))


def load_events(cfg: Config) -> event_policy.EventSettings:
    """Read ``SIDECAR_EVENTS_CONFIG`` before serving: a bad file stops start-up (``ConfigError``,
    one line per problem); an event on both data lists is logged as a warning."""
    settings, warnings = event_policy.load(cfg.events_config)
    for warning in warnings:
        log.warning("events config %s: %s", cfg.events_config, warning)
    log.info("event settings from %s: %s", cfg.events_config or "the documented defaults", settings.as_dict())
    return settings


def make_observer(cfg: Config, registry: CollectorRegistry | None = None) -> Observer:
    """The observers in force: Prometheus metrics on ``registry`` and the audit log."""
    from prometheus_client import CollectorRegistry

    from sidecar.telemetry import audit, metrics

    metrics_obs = metrics.Metrics(registry if registry is not None else CollectorRegistry())
    writer = audit.configure(cfg.audit_level, cfg.audit_format)
    writer.on_drop = metrics_obs.audit_dropped  # dropped log and audit records, counted by reason
    return Observers(metrics_obs, audit.AuditLog(writer))


def key_rotator(cfg: Config, sidecar: Sidecar) -> KeyRotator | None:
    """The key file watcher (SIGHUP and file changes); ``None`` in development mode."""
    if cfg.key_file is None:
        return None
    return KeyRotator(sidecar.keys, sidecar.observer, cfg.key_file, cfg.key_passphrase_file,
                      next_key_file=cfg.next_key_file, next_activates_at=cfg.next_key_activates_at,
                      poll_interval=cfg.key_poll_interval.total_seconds(),
                      allow_insecure_permissions=cfg.allow_insecure_key_permissions)


def fast_path_threads(cfg: Config) -> int:
    """Fast-path threads per worker: one per CPU in all (0: the stock path).

    Signing releases the GIL, so one thread per CPU keeps every CPU signing;
    more would only queue on the GIL.
    """
    if cfg.call_path != "fast":
        return 0
    return max(1, available_cpus() // cfg.workers)


def server_options(cfg: Config, observer: Observer, rpc_metrics: RpcMetrics | None = None, *,
                   reuse_port: bool = False, unix: bool = True) -> ServerOptions:
    """How one worker's gRPC server is built: threads, limits, credentials and the guards, in order.

    Interceptors, outermost first: the RPC metrics (they see every refusal),
    the allow-list, the concurrency bound, the rate limit, the deadline check.
    """
    executor = admission.CountingExecutor(cfg.threads)
    guards: list[Any] = []  # grpc.ServerInterceptor, outermost first
    if rpc_metrics is not None:
        guards.append(MetricsInterceptor(rpc_metrics))
    if cfg.allowed_clients:
        guards.append(admission.AllowList(cfg.allowed_clients, observer))
    guards.append(admission.ConcurrencyLimit(cfg.max_concurrent_calls, executor, observer))
    if cfg.rate_limit > 0:
        guards.append(admission.RateLimit(cfg.rate_limit, cfg.rate_burst, observer))
    guards.append(admission.Deadline(observer))
    pending = admission.PendingCalls(cfg.max_pending_calls, cfg.max_pending_per_connection,
                                     cfg.request_read_timeout.total_seconds(), observer)
    executor.pending = pending
    return ServerOptions(
        max_workers=cfg.threads, executor=executor, interceptors=guards, pending=pending,
        options=connection_options(cfg),
        credentials=admission.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca),
        socket_mode=cfg.socket_mode, reuse_port=reuse_port, unix=unix,
        health_listen=cfg.health_listen, fast_path_threads=fast_path_threads(cfg),
        health_max_watchers=cfg.health_max_watchers, self_check_timeout=cfg.self_check_timeout.total_seconds())


#: File descriptors kept free of client connections: key files, ``/metrics``, logs, the health server.
RESERVED_FDS = 128


def max_connections(cfg: Config) -> int:
    """``SIDECAR_MAX_CONNECTIONS``, or (``0``) the open-file limit less :data:`RESERVED_FDS` (at least 16)."""
    if cfg.max_connections:
        return cfg.max_connections
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, int(soft) - RESERVED_FDS)


def connection_options(cfg: Config) -> list[tuple[str, Any]]:
    """grpc channel arguments of the main server: message size, streams and connections."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_concurrent_streams", cfg.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", max_connections(cfg)),
    ]
    idle_ms = int(cfg.connection_idle_timeout.total_seconds() * 1000)
    if idle_ms:
        options.append(("grpc.max_connection_idle_ms", idle_ms))
    return options


def http_listener(cfg: Config, runtime: Runtime, opts: ServerOptions, rpc_metrics: RpcMetrics | None, *,
                  reuse_port: bool, unix: bool) -> HttpServer:
    """The Connect protocol listener (``SIDECAR_HTTP_LISTEN``) over ``runtime``'s servicer, guards and health."""
    from concurrent import futures

    from sidecar.transport.connect import Application
    from sidecar.transport.httpserver import HttpServer, Tls

    # Calls run on a pool, as on the gRPC path: signing releases the GIL, so both cores sign and the loop never waits.
    pool = futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="http")
    app = Application(runtime.servicer, runtime.health, opts.interceptors, rpc_metrics, pool, cfg.max_message_bytes)
    return HttpServer(app.for_listener, cfg.http_addresses, socket_mode=cfg.socket_mode, reuse_port=reuse_port,
                      unix=unix, optional=cfg.http_listen is None,
                      tls=Tls(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert and cfg.tls_key else None)


def _no_key_file() -> None:
    log.warning("SIGHUP: development mode has no key file to reload")


def run_worker(cfg: Config, key: SigningKey, *, reuse_port: bool, unix: bool, index: int = 0,
               event_settings: event_policy.EventSettings | None = None) -> int:
    """Serve in this process until SIGTERM has drained it. Returns the exit code."""
    from sidecar.transport import runtime as runtime_mod

    registry, rpc_metrics, metrics_http = _worker_metrics(cfg)
    observer = make_observer(cfg, registry)
    sidecar = make_sidecar(cfg, key, observer, event_settings)
    opts = server_options(cfg, observer, rpc_metrics, reuse_port=reuse_port, unix=unix)
    runtime = runtime_mod.build(sidecar, cfg.listen, opts)
    if cfg.http_addresses:
        runtime.companions.append(http_listener(cfg, runtime, opts, rpc_metrics, reuse_port=reuse_port, unix=unix))
    rotator = key_rotator(cfg, sidecar)
    runtime.handle_signals(cfg.grace.total_seconds(), on_reload=rotator.request_reload if rotator else _no_key_file)
    if rotator is not None:
        rotator.start(initial=key)  # before serving: a scheduled cut-over limits the very first token
    runtime.start()
    from sidecar.ops.supervisor import WORKER_SIGNALS

    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)  # blocked since fork in pre-fork mode
    http = [a for c in runtime.companions for a in c.addresses]
    log.info("worker %d serving on %s%s", index, ", ".join(runtime.addresses),
             f"; Connect protocol on {', '.join(http)}" if http else "")
    runtime.wait()
    if rotator is not None:
        rotator.stop()
    if metrics_http is not None:
        metrics_http.close()
    from sidecar.telemetry import audit

    log.info("worker %d drained", index)
    if not audit.flush():  # the audit writer thread's queue: a forked worker leaves by os._exit, past atexit
        # stderr takes nothing (nobody reads the pipe): leave now rather than block at interpreter exit
        os._exit(0)
    return 0


def _worker_metrics(cfg: Config) -> tuple[CollectorRegistry, RpcMetrics, MetricsServer | None]:
    """This process's registry, its RPC metrics, and ``/metrics`` when it serves alone.

    With pre-forked workers the registry is never served: values go to the
    multiprocess files and the master serves their sum.
    """
    from prometheus_client import CollectorRegistry

    from sidecar.telemetry import metrics
    from sidecar.telemetry.rpc_metrics import service_methods
    from sidecar.transport.runtime import SERVICES

    registry = CollectorRegistry()
    protocols = ("grpc", "connect") if cfg.http_addresses else ("grpc",)
    rpc_metrics = RpcMetrics(registry, service_methods(*SERVICES), protocols)
    serve_here = cfg.workers == 1 and cfg.metrics_addr
    if serve_here:
        metrics.register_process_collectors(registry)
    return registry, rpc_metrics, metrics.MetricsServer(cfg.metrics_addr, registry) if serve_here else None


def _reserve_http(cfg: Config) -> tuple[list[str], list[Any]]:
    """Pin the Connect listener's TCP ports for the workers; development mode's default, if taken, is left off."""
    from sidecar.domain.errors import ConfigError
    from sidecar.ops.supervisor import reserve_tcp_ports

    try:
        return reserve_tcp_ports(cfg.http_addresses)
    except ConfigError:
        if cfg.http_listen is not None:
            raise
        log.warning("development mode: %s is taken, so the Connect listener is off (set SIDECAR_HTTP_LISTEN)",
                    ", ".join(cfg.http_addresses))
        return [], []


def serve(cfg: Config, key: SigningKey) -> int:
    """Run until drained; exit code 0 on a clean drain."""
    from prometheus_client import disable_created_metrics

    from sidecar.ops.supervisor import check_tcp_ports

    # Settings that name files: refused here, before the first log line, as one line on stderr.
    admission.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
    from sidecar.transport.runtime import check_unix_listen

    for setting, addresses in (("SIDECAR_LISTEN", cfg.listen), ("SIDECAR_HTTP_LISTEN", cfg.http_addresses)):
        for addr in addresses:
            if addr.startswith("unix://"):
                check_unix_listen(addr, setting)
    check_tcp_ports((*cfg.listen, *cfg.health_listen))
    settings = load_events(cfg)  # fail fast, before any worker starts
    if cfg.dev_mode:
        for line in ("!" * 78, DEV_BANNER, "!" * 78):
            log.warning(line)
    exposed = exposed_tcp((*cfg.listen, *cfg.http_addresses))
    if exposed and cfg.tls_client_ca is None:  # only with --insecure-tcp: Config refuses it otherwise
        log.warning("INSECURE TCP (--insecure-tcp): %s accept callers without a client certificate (%s); anyone who "
                    "reaches them can sign tokens, so a mesh must authenticate callers", ", ".join(exposed),
                    "server-only TLS" if cfg.tls_cert else "plaintext")
    log.info("signing key %s (%d bits) from %s", key.key_id, key.bits, key.source)
    # No *_created series: they would double the series count for nothing.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if cfg.workers == 1:
        return run_worker(cfg, key, reuse_port=False, unix=True, event_settings=settings)
    from dataclasses import replace

    from sidecar.ops.supervisor import Supervisor, reserve_tcp_ports
    from sidecar.telemetry.metrics import MultiprocessExporter

    listen, held = reserve_tcp_ports(cfg.listen)
    health_listen, health_held = reserve_tcp_ports(cfg.health_listen)
    http_listen, http_held = _reserve_http(cfg)
    held += health_held + http_held
    cfg = replace(cfg, listen=tuple(listen), health_listen=tuple(health_listen), http_listen=tuple(http_listen))
    log.info("pre-fork: %d workers on %s (Unix sockets served by worker 0)", cfg.workers, ", ".join(listen))
    exporter = MultiprocessExporter(cfg.metrics_addr)  # before forking: workers inherit its value class

    def worker(i: int) -> int:
        exporter.after_fork()
        return run_worker(cfg, key, reuse_port=True, unix=(i == 0), index=i, event_settings=settings)

    sup = Supervisor(cfg.workers, worker, cfg.grace.total_seconds(), on_exit=exporter.process_dead)
    exporter.workers = lambda: list(sup.children)  # their process_* are summed into the pod's
    try:
        return sup.run()
    finally:
        exporter.close()
        for s in held:
            s.close()
