"""Assemble and run the server for ``sidecar serve``: one process or pre-forked workers."""

from __future__ import annotations

import logging

from sidecar import access, limits
from sidecar.config import Config
from sidecar.core import KeyHolder, Sidecar
from sidecar.keys import SigningKey
from sidecar.observe import Observer
from sidecar.rotation import KeyRotator

log = logging.getLogger("sidecar")


def make_sidecar(cfg: Config, key: SigningKey, observer: Observer) -> Sidecar:
    observer.key_activated(key)
    return Sidecar(KeyHolder(key), salt=cfg.salt, namespace=cfg.uuid_namespace, default_ttl=cfg.default_ttl,
                   observer=observer)


def make_observer(cfg: Config) -> Observer:
    """The observers in force (metrics and audit log plug in here)."""
    return Observer()


def key_rotator(cfg: Config, sidecar: Sidecar) -> KeyRotator | None:
    """The key file watcher (SIGHUP and file changes); ``None`` in development mode."""
    if cfg.key_file is None:
        return None
    return KeyRotator(sidecar.keys, sidecar.observer, cfg.key_file, cfg.key_passphrase_file,
                      poll_interval=cfg.key_poll_interval.total_seconds(),
                      allow_insecure_permissions=cfg.allow_insecure_key_permissions)


def _no_key_file() -> None:
    log.warning("SIGHUP: development mode has no key file to reload")


def run_worker(cfg: Config, key: SigningKey, *, reuse_port: bool, unix: bool, index: int = 0) -> int:
    """Serve in this process until SIGTERM has drained it. Returns the exit code."""
    from sidecar import server

    observer = make_observer(cfg)
    sidecar = make_sidecar(cfg, key, observer)
    opts = server.ServerOptions(reuse_port=reuse_port, unix=unix)
    access.install(opts, cfg, observer)
    limits.install(opts, cfg, observer)
    runtime = server.build(sidecar, cfg.listen, observer, opts)
    rotator = key_rotator(cfg, sidecar)
    runtime.handle_signals(cfg.grace.total_seconds(), on_reload=rotator.request_reload if rotator else _no_key_file)
    runtime.start()
    if rotator is not None:
        rotator.start(initial=key)
    log.info("worker %d serving on %s", index, ", ".join(runtime.addresses))
    runtime.wait()
    if rotator is not None:
        rotator.stop()
    log.info("worker %d drained", index)
    return 0


def serve(cfg: Config, key: SigningKey) -> int:
    """Run until drained; exit code 0 on a clean drain."""
    if cfg.workers == 1:
        return run_worker(cfg, key, reuse_port=False, unix=True)
    from dataclasses import replace

    from sidecar.supervisor import Supervisor, reserve_tcp_ports

    listen, held = reserve_tcp_ports(cfg.listen)
    cfg = replace(cfg, listen=tuple(listen))
    log.info("pre-fork: %d workers on %s (Unix sockets served by worker 0)", cfg.workers, ", ".join(listen))
    sup = Supervisor(cfg.workers, lambda i: run_worker(cfg, key, reuse_port=True, unix=(i == 0), index=i),
                     cfg.grace.total_seconds())
    try:
        return sup.run()
    finally:
        for s in held:
            s.close()
