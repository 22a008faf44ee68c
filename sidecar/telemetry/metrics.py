"""Prometheus metrics for what the sidecar does, and the ``/metrics`` endpoint.

:class:`Metrics` is an :class:`~sidecar.observe.Observer` whose metrics live
on the registry passed in, so tests read them from a fresh
``CollectorRegistry``. Label values come only from the small fixed sets
below (never an email, UUID or token), and every known series is created at
0 so ``rate()`` works from the first scrape.

With pre-forked workers each worker records into prometheus_client's
multiprocess files and the master serves the sum (:class:`MultiprocessExporter`).

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = Metrics(reg)
>>> m.rejected("IssueToken", "email_format")
>>> reg.get_sample_value("sidecar_token_rejections_total", {"rpc": "IssueToken", "reason": "email_format"})
1.0
"""

from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sidecar import __version__
from sidecar.domain import validation, verify
from sidecar.domain.errors import ConfigError
from sidecar.domain.identity import Outcome, Resolution
from sidecar.domain.keys import PublicKeyInfo
from sidecar.domain.tokens import Token
from sidecar.service.observer import Observer
from sidecar.telemetry import audit

log = logging.getLogger("sidecar.metrics")

#: RPCs that issue tokens; their series are pre-created.
TOKEN_RPCS = ("ResolveIdentity", "IssueToken")
#: Every RPC name accepted as the ``rpc`` label; anything else becomes ``other``.
RPCS = (*TOKEN_RPCS, "GetPublicKey", "VerifyToken", "EvaluateEvent")
#: Rejection reasons: one per validation rule, then the service's own.
REASONS: tuple[str, ...] = (
    *validation.REASONS,
    "no_key",  # no usable signing key loaded (UNAVAILABLE)
    "internal",  # an unexpected error (INTERNAL)
    "unauthenticated",  # the caller was refused by access control
    "rate_limited",  # the caller's rate limit was exceeded
    "resource_exhausted",  # too many concurrent calls
    "message_too_large",  # the request exceeded the maximum message size
    "malformed_request",  # the request's bytes are not a valid message (INVALID_ARGUMENT)
    "deadline_exceeded",  # the call's deadline passed while it waited for a thread (DEADLINE_EXCEEDED)
    "request_timeout",  # the request message did not arrive within the read deadline
    "too_many_pending",  # too many calls waiting for their request message (per connection or in all)
    "health_watchers",  # too many health Watch streams at once
)
#: The label value for anything outside a fixed set.
OTHER = "other"
OUTCOMES = tuple(o.value for o in Outcome)
RELOAD_RESULTS = ("success", "failure")
#: What a next-key refusal was about (``sidecar_next_key_refusals_total{what}``).
NEXT_KEY_REFUSALS = ("key", "instant")
CACHE_RESULTS = ("hit", "miss")
#: VerifyToken answers: a valid token, or the first rule it breaks.
VERIFY_RESULTS = ("valid", *verify.REASONS)
#: RSA-2048 signs in ~250 µs on one core; buckets cover 100 µs .. 1 s.
SIGNING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Label values other modules pass for events: short code names only.
_NAME_RE = re.compile(r"[a-z][a-z0-9_.]{0,47}")


def _pick(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


def _name(value: str) -> str:
    return value if _NAME_RE.fullmatch(value) else OTHER


def multiprocess_enabled() -> bool:
    """Whether metric values go to prometheus_client's multiprocess files."""
    return getattr(values.ValueClass, "_multiprocess", False) is True


def _retire(gauge: Gauge, *labels: str) -> None:
    """Take a labelled series of ``gauge`` out: removed, or set to 0 across worker processes (where
    removal is not supported)."""
    if multiprocess_enabled():
        gauge.labels(*labels).set(0)
    else:
        gauge.remove(*labels)


class Metrics(Observer):
    """The ``sidecar_*`` metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, version: str = __version__) -> None:
        r = registry
        self.issued_total = Counter("sidecar_tokens_issued", "Tokens signed and returned, by RPC.",
                                    ["rpc"], registry=r)
        self.rejections_total = Counter(
            "sidecar_token_rejections", "Requests refused, by RPC and fixed reason code (see README).",
            ["rpc", "reason"], registry=r)
        self.resolutions_total = Counter(
            "sidecar_identity_resolutions", "ResolveIdentity results by branch of the identity flow.",
            ["outcome"], registry=r)
        self.signing_seconds = Histogram("sidecar_token_signing_seconds", "Time to sign one token (RS256).",
                                         buckets=SIGNING_BUCKETS, registry=r)
        self.key_info = Gauge("sidecar_signing_key_info",
                              "1 for the active signing key (key_id = RFC 7638 thumbprint).",
                              ["key_id", "bits"], multiprocess_mode="livemax", registry=r)
        self.key_loaded = Gauge("sidecar_signing_key_loaded_timestamp_seconds",
                                "Unix time the active signing key was loaded.", multiprocess_mode="livemax", registry=r)
        self.key_reloads_total = Counter("sidecar_key_reloads", "Key reloads (SIGHUP, file change) by result.",
                                         ["result"], registry=r)
        # The scheduled cut-over (SPEC §8).
        self.key_state_info = Gauge(
            "sidecar_key_info", "1 for the active key and for the scheduled next key (0: no longer so); "
            "key_id = RFC 7638 thumbprint.", ["key_id", "state"], multiprocess_mode="livemax", registry=r)
        self.next_activation = Gauge(
            "sidecar_key_next_activation_timestamp_seconds",
            "Unix time the scheduled next key starts signing; 0 when none is scheduled.",
            multiprocess_mode="livemax", registry=r)
        self.next_key_refusals_total = Counter(
            "sidecar_next_key_refusals", "Next-key settings refused (nothing changed), by what was bad.",
            ["what"], registry=r)
        self.late_activations_total = Counter(
            "sidecar_key_late_activations", "Next keys that arrived after their instant and became active at once.",
            registry=r)
        self.late_activation_seconds = Gauge(
            "sidecar_key_late_activation_seconds", "How late (seconds after its instant) the last late next key "
            "became active.", multiprocess_mode="livemax", registry=r)
        for what in NEXT_KEY_REFUSALS:
            self.next_key_refusals_total.labels(what)
        self.next_activation.set(0)
        self._next: str | None = None
        self.event_decisions_total = Counter("sidecar_event_decisions", "EvaluateEvent decisions by deciding rule.",
                                             ["decision", "rule"], registry=r)
        self.token_cache_total = Counter("sidecar_token_cache_requests", "Token cache look-ups by result.",
                                         ["result"], registry=r)
        self.audit_dropped_total = Counter(
            "sidecar_audit_dropped", "Log and audit records dropped because stderr did not take them, by reason.",
            ["reason"], registry=r)
        for reason in audit.DROP_REASONS:
            self.audit_dropped_total.labels(reason)
        self.build_info = Gauge("sidecar_build_info", "Always 1; the version label is the sidecar's version.",
                                ["version"], multiprocess_mode="livemax", registry=r)
        self.build_info.labels(version).set(1)
        self.verifications_total = Counter(
            "sidecar_token_verifications", "VerifyToken answers: valid, or the reason the token is not.",
            ["result"], registry=r)
        for result in VERIFY_RESULTS:
            self.verifications_total.labels(result)
        for rpc in TOKEN_RPCS:
            self.issued_total.labels(rpc)
            for reason in REASONS:
                self.rejections_total.labels(rpc, reason)
        for outcome in OUTCOMES:
            self.resolutions_total.labels(outcome)
        for result in RELOAD_RESULTS:
            self.key_reloads_total.labels(result)
        self._active: tuple[str, str] | None = None
        # The children every token touches, looked up once: ``labels()`` costs more than ``inc()``.
        self._issued = {rpc: self.issued_total.labels(rpc) for rpc in TOKEN_RPCS}
        self._cache_hit, self._cache_miss = (self.token_cache_total.labels(result) for result in CACHE_RESULTS)

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: Resolution | None) -> None:
        child = self._issued.get(rpc)
        (child if child is not None else self.issued_total.labels(_pick(rpc, RPCS))).inc()
        if resolution is not None:
            self.resolutions_total.labels(resolution.outcome.value).inc()

    def audit_dropped(self, reason: str, n: int = 1) -> None:
        """``n`` log or audit records dropped for ``reason`` (the audit writer's ``on_drop``)."""
        self.audit_dropped_total.labels(_pick(reason, audit.DROP_REASONS)).inc(n)

    def rejected(self, rpc: str, reason: str) -> None:
        self.rejections_total.labels(_pick(rpc, RPCS), _pick(reason, REASONS)).inc()

    def signed(self, seconds: float) -> None:
        self.signing_seconds.observe(seconds)

    def key_activated(self, key: PublicKeyInfo) -> None:
        labels = (key.key_id, str(key.bits))
        old, self._active = self._active, labels
        if old is not None and old != labels:
            _retire(self.key_info, *old)
        self.key_info.labels(*labels).set(1)
        self.key_loaded.set(key.loaded_at)
        if old is not None and old[0] != key.key_id:
            self._drop_state(old[0], "active")
        self.key_state_info.labels(key.key_id, "active").set(1)

    def _drop_state(self, key_id: str, state: str) -> None:
        _retire(self.key_state_info, key_id, state)

    def next_key(self, key: PublicKeyInfo | None, activates_at: int | None) -> None:
        new = key.key_id if key is not None else None
        old, self._next = self._next, new
        if old is not None and old != new:
            self._drop_state(old, "next")
        if new is not None:
            self.key_state_info.labels(new, "next").set(1)
        self.next_activation.set(activates_at if key is not None and activates_at is not None else 0)

    def next_key_refused(self, what: str) -> None:
        self.next_key_refusals_total.labels(_pick(what, NEXT_KEY_REFUSALS)).inc()

    def key_late(self, seconds: float) -> None:
        self.late_activations_total.inc()
        self.late_activation_seconds.set(seconds)

    def key_reload(self, result: str) -> None:
        self.key_reloads_total.labels(_pick(result, RELOAD_RESULTS)).inc()

    def event_decision(self, decision: str, rule: str) -> None:
        self.event_decisions_total.labels(_name(decision), _name(rule)).inc()

    def token_cache(self, hit: bool) -> None:
        (self._cache_hit if hit else self._cache_miss).inc()

    def verified(self, result: str) -> None:
        self.verifications_total.labels(_pick(result, VERIFY_RESULTS)).inc()


def register_process_collectors(registry: CollectorRegistry) -> None:
    """``process_*``, ``python_info`` and ``python_gc_*`` of this process, for a sidecar that is one
    process (with ``--workers`` the master exports the sum instead: :class:`MultiprocessExporter`)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


#: How the master combines its own and its live workers' ``process_*`` values.
_SUMMED = ("process_virtual_memory_bytes", "process_resident_memory_bytes", "process_open_fds",
           "process_cpu_seconds_total")


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class WorkersProcessCollector:
    """``process_*`` of the whole sidecar with ``--workers``: the master and its live workers, summed.

    Summed rather than one series per worker: the pod is the unit that is scheduled, limited and
    alerted on, the series are the same as with one process (so the dashboard and rules are too),
    and worker pids come and go. CPU includes the workers that have exited (the master's
    ``RUSAGE_CHILDREN``), so the counter never goes back. Resident memory counts pages the
    workers still share with the master after fork once per process, so it overstates; cAdvisor's
    ``container_memory_working_set_bytes`` is the exact figure. Start time and the fd limit are
    the master's.
    """

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, float] = dict.fromkeys(_SUMMED, 0.0)
        docs: dict[str, tuple[str, str]] = {}
        master: dict[str, float] = {}
        for pid in (os.getpid(), *self._pids()):
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                for sample in family.samples:
                    docs[sample.name] = (family.name, family.documentation)
                    if sample.name in totals:
                        totals[sample.name] += sample.value
                    elif pid == os.getpid():
                        master[sample.name] = sample.value
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        totals["process_cpu_seconds_total"] += children.ru_utime + children.ru_stime
        for name, value in (*totals.items(), *master.items()):
            if name not in docs:
                continue
            family_name, doc = docs[name]
            if name.endswith("_total"):
                yield CounterMetricFamily(family_name, doc, value=value)
            else:
                yield GaugeMetricFamily(family_name, doc, value=value)


class MetricsServer:
    """The ``/metrics`` HTTP endpoint, served from a daemon thread."""

    def __init__(self, addr: str, registry: CollectorRegistry) -> None:
        host, _, port = addr.rpartition(":")
        try:
            server, self._thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
        except OSError as exc:
            raise ConfigError(f"SIDECAR_METRICS_ADDR: cannot listen on {addr} ({exc.strerror})") from None
        self._server: WSGIServer = server
        bound = server.server_address
        self.address = f"{host}:{bound[1]}"
        log.info("metrics on http://%s/metrics", self.address)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def close_in_child(self) -> None:
        """In a forked child: drop the inherited listening socket (the thread did not survive the fork)."""
        self._server.socket.close()


def enable_multiprocess(path: str) -> None:
    """Make every metric created from now on (in this process and its forks) write to ``path``.

    prometheus_client picks its value class when it is imported, from
    ``PROMETHEUS_MULTIPROC_DIR``; the master may have imported it already, so
    the class is switched here as well.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class MultiprocessExporter:
    """The master's side of multiprocess metrics: a private directory, ``/metrics`` over the sum.

    Counters and histograms of dead workers stay in the sum (they are past
    events); ``live*`` gauges of a dead worker are dropped by :meth:`process_dead`.
    """

    def __init__(self, addr: str, workers: Callable[[], Iterable[int]] = tuple) -> None:
        """``workers``: the pids of the live workers, for the summed ``process_*``."""
        self.path = tempfile.mkdtemp(prefix="sidecar-metrics-")
        enable_multiprocess(self.path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.path)  # type: ignore[no-untyped-call]
        registry.register(WorkersProcessCollector(lambda: self.workers()))
        # python_info is the same in every process; python_gc_* is per process and only the
        # process that serves /metrics could read it, so it is left out in this mode.
        PlatformCollector(registry=registry)
        self.workers = workers
        try:
            self.server: MetricsServer | None = MetricsServer(addr, registry) if addr else None
        except ConfigError:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def after_fork(self) -> None:
        """In a worker: only the master serves ``/metrics``."""
        if self.server is not None:
            self.server.close_in_child()

    def process_dead(self, pid: int) -> None:
        """A worker exited: forget its live gauges (e.g. its key info)."""
        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        shutil.rmtree(self.path, ignore_errors=True)
