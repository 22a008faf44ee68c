"""Assemble and run the server for ``sidecar serve``: one process or pre-forked workers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sidecar import keys as keys_mod
from sidecar.cache import TokenCache
from sidecar.config import Config
from sidecar.core import KeyHolder, Sidecar
from sidecar.keys import SigningKey
from sidecar.observe import Observer

log = logging.getLogger("sidecar")


def make_sidecar(cfg: Config, key: SigningKey, observer: Observer) -> Sidecar:
    observer.key_activated(key)
    return Sidecar(KeyHolder(key), salt=cfg.salt, namespace=cfg.uuid_namespace, default_ttl=cfg.default_ttl,
                   observer=observer, cache=make_cache(cfg))


def make_cache(cfg: Config) -> TokenCache | None:
    """The token cache of one worker process, or ``None`` when turned off.

    The configured size bounds the whole sidecar, so it is split across the
    pre-forked workers: memory stays flat whatever ``--workers`` is.
    """
    if cfg.token_cache_size == 0:
        return None
    return TokenCache(max(1, cfg.token_cache_size // cfg.workers), cfg.token_cache_min_remaining)


def make_observer(cfg: Config) -> Observer:
    """The observers in force (metrics and audit log plug in here)."""
    return Observer()


def reloader(cfg: Config, sidecar: Sidecar) -> Callable[[], None]:
    """SIGHUP: load the key file again; a bad key leaves the old one active."""

    def reload() -> None:
        if cfg.key_file is None:
            log.warning("SIGHUP: development mode has no key file to reload")
            return
        try:
            new = keys_mod.load(cfg.key_file, cfg.key_passphrase_file)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old key
            log.error("key reload failed, keeping key %s: %s", sidecar.keys.current.key_id, exc)
            sidecar.observer.key_reload("failure")
            return
        old = sidecar.keys.swap(new)
        sidecar.observer.key_reload("success")
        sidecar.observer.key_activated(new)
        log.info("key reloaded: %s -> %s", old.key_id if old else "-", new.key_id)

    return reload


def run_worker(cfg: Config, key: SigningKey, *, reuse_port: bool, unix: bool, index: int = 0) -> int:
    """Serve in this process until SIGTERM has drained it. Returns the exit code."""
    from sidecar import server

    observer = make_observer(cfg)
    sidecar = make_sidecar(cfg, key, observer)
    runtime = server.build(sidecar, cfg.listen, observer,
                           server.ServerOptions(reuse_port=reuse_port, unix=unix))
    runtime.handle_signals(cfg.grace.total_seconds(), on_reload=reloader(cfg, sidecar))
    runtime.start()
    log.info("worker %d serving on %s", index, ", ".join(runtime.addresses))
    runtime.wait()
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
