"""Limits: message size, concurrent calls, deadlines and a per-caller rate limit.

* Requests larger than ``max_message_bytes`` (16 KiB by default) are refused by
  grpc before they are parsed (``RESOURCE_EXHAUSTED``).
* :class:`CountingExecutor` counts every call grpc has accepted and not yet
  finished, queued or running; :class:`ConcurrencyLimit` refuses a new
  ``IdentityService`` call with ``RESOURCE_EXHAUSTED`` when that count reaches
  the bound. The executor's count is exact even for calls cancelled while
  queued, which a counter inside the handler would leak.
* :class:`Deadline` refuses to start work on a call whose deadline has already
  passed (it waited in the queue too long): ``DEADLINE_EXCEEDED``.
* :class:`RateLimit` gives each caller (certificate identity, IP address, or
  ``unix``) a token bucket; an empty bucket answers ``RESOURCE_EXHAUSTED``.

Each refusal is reported as ``observer.rejected(rpc, reason)`` with reason
``resource_exhausted``, ``deadline_exceeded`` or ``rate_limited``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from sidecar.access import GUARDED_PREFIX, Guard, caller_key, rpc_name
from sidecar.config import Config
from sidecar.observe import Observer

#: Distinct callers whose buckets are remembered; the least recently seen go first.
MAX_BUCKETS = 10_000


class CountingExecutor(futures.ThreadPoolExecutor):
    """A thread pool that knows how many submitted calls have not finished yet."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "rpc") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._count_lock = threading.Lock()
        self.in_flight = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._count_lock:
            self.in_flight += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: futures.Future[Any] | None) -> None:
        with self._count_lock:
            self.in_flight -= 1


def _refuse(rpc: str, observer: Observer, reason: str, code: grpc.StatusCode, message: str) -> Any:
    def behavior(_request: Any, context: grpc.ServicerContext) -> Any:
        observer.rejected(rpc, reason)
        context.abort(code, message)

    return behavior


class ConcurrencyLimit(grpc.ServerInterceptor):  # type: ignore[misc]
    """``RESOURCE_EXHAUSTED`` for a new call once ``limit`` calls are accepted and unfinished.

    The count is the stock pool's (``executor``) plus that of every call path
    added to :attr:`counters` (objects with an ``in_flight`` count).
    """

    def __init__(self, limit: int, executor: CountingExecutor, observer: Observer) -> None:
        self.limit = limit
        self.executor = executor
        self.observer = observer
        self.counters: list[Any] = []

    def in_flight(self) -> int:
        return self.executor.in_flight + sum(int(c.in_flight) for c in self.counters)

    def _message(self) -> str:
        return f"server busy: more than {self.limit} calls at once"

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        """For a call already counted (the fast path counts on accept)."""
        if self.in_flight() > self.limit:
            self.observer.rejected(rpc, "resource_exhausted")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message())

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(GUARDED_PREFIX):
            return handler
        # Runs on grpc's polling thread, before the call is queued (so not yet counted): the count is current.
        if self.in_flight() >= self.limit:
            refuse = _refuse(rpc_name(details.method), self.observer, "resource_exhausted",
                             grpc.StatusCode.RESOURCE_EXHAUSTED, self._message())
            return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        return handler


class Deadline(Guard):
    """Skip the work of a call whose deadline passed while it waited in the queue."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            self.observer.rejected(rpc, "deadline_exceeded")
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call started")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one call takes one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.updated = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimit(Guard):
    """Per-caller token bucket; an empty bucket answers ``RESOURCE_EXHAUSTED``."""

    def __init__(self, rate: float, burst: int, observer: Observer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst or max(1, int(rate)))
        self.observer = observer
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, caller: str) -> bool:
        """Take one token from ``caller``'s bucket; whether there was one."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                bucket = self._buckets[caller] = TokenBucket(self.rate, self.burst, now)
                if len(self._buckets) > MAX_BUCKETS:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(caller)
            return bucket.take(now)

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        if not self.allow(caller_key(context)):
            self.observer.rejected(rpc, "rate_limited")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limit: at most {self.rate:g} calls/s per caller")


def install(opts: Any, cfg: Config, observer: Observer) -> None:
    """Put the limits of ``cfg`` into ``opts`` (a ``ServerOptions``)."""
    executor = CountingExecutor(opts.max_workers)
    opts.executor = executor
    opts.options.append(("grpc.max_receive_message_length", cfg.max_message_bytes))
    opts.interceptors.append(ConcurrencyLimit(cfg.max_concurrent_calls, executor, observer))
    if cfg.rate_limit > 0:
        opts.interceptors.append(RateLimit(cfg.rate_limit, cfg.rate_burst, observer))
    opts.interceptors.append(Deadline(observer))
