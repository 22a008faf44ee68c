"""Call admission: who may call, and how many calls at once, how fast, how late.

Every guard refuses a call the same way (:meth:`Guard.refuse`): it reports
``observer.rejected(rpc, reason)`` and aborts with a status code and a message
naming the rule. Guards share one protocol, :class:`Guard`: ``check(rpc,
context)``. As an interceptor a guard wraps the stock handlers; the fast call
path (:mod:`sidecar.transport.fastpath`) calls :meth:`Guard.check` itself, so
both paths apply the same rules.

* **Unix sockets** are created with mode 0660 (``SIDECAR_SOCKET_MODE``): only
  the socket's owner and group, i.e. the pod's app container sharing the
  volume, can connect. They carry no TLS; the file system is the access control.
* **TLS** on TCP listeners (:func:`server_credentials`); with a client CA the
  handshake *requires* a client certificate that chains to it.
* :class:`AllowList` narrows mTLS callers to certificates whose common name,
  subject or one of whose subject alternative names is listed:
  ``PERMISSION_DENIED`` (valid certificate, not listed) or ``UNAUTHENTICATED``
  (no certificate), counted as ``unauthenticated``.
* :class:`ConcurrencyLimit` refuses a new ``IdentityService`` call with
  ``RESOURCE_EXHAUSTED`` once the calls accepted and unfinished reach the bound;
  :class:`CountingExecutor` counts the stock pool's calls exactly, even those
  cancelled while queued.
* :class:`RateLimit` gives each caller (certificate identity, IP address, or
  ``unix``) a token bucket: ``RESOURCE_EXHAUSTED``, counted as ``rate_limited``.
* :class:`Deadline` refuses to start work on a call whose deadline passed while
  it waited: ``DEADLINE_EXCEEDED``.

Requests larger than the message limit are refused by grpc itself before they
are parsed. Everything here takes plain values; the composition root
(:mod:`sidecar.cli.serve`) decides which guards run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from sidecar.domain.errors import ConfigError
from sidecar.service.observer import Observer

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


def server_credentials(cert: str | None, key: str | None, client_ca: str | None = None
                       ) -> grpc.ServerCredentials | None:
    """TLS credentials for TCP listeners from PEM files, or ``None`` (no ``cert``) for plaintext.

    With a ``client_ca`` the handshake requires and verifies a client certificate.
    """
    if cert is None or key is None:
        return None
    cert_pem = _read(cert, "SIDECAR_TLS_CERT")
    key_pem = _read(key, "SIDECAR_TLS_KEY")
    ca = _read(client_ca, "SIDECAR_TLS_CLIENT_CA") if client_ca else None
    try:
        return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca,
                                           require_client_auth=ca is not None)
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
    """A check run before every unary ``IdentityService`` call; :meth:`check` refuses by aborting.

    As an interceptor it wraps the stock handlers; the fast call path
    (:mod:`sidecar.transport.fastpath`) calls :meth:`check` itself, so both
    paths apply the same rules.
    """

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        raise NotImplementedError

    def refuse(self, rpc: str, reason: str, code: grpc.StatusCode, message: str,
               context: grpc.ServicerContext) -> None:
        """Refuse the call: count it as rejected with ``reason``, then abort it (raises)."""
        self.observer.rejected(rpc, reason)
        context.abort(code, message)

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
        super().__init__(observer)
        self.allowed = frozenset(allowed)

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        if context.peer().startswith("unix:"):
            return
        names = peer_names(context)
        if not names:
            self.refuse(rpc, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED,
                        "caller: a client certificate is required", context)
        if not names & self.allowed:
            self.refuse(rpc, "unauthenticated", grpc.StatusCode.PERMISSION_DENIED,
                        "caller: client certificate is not on the allow-list", context)



#: Distinct callers whose buckets are remembered; the least recently seen go first.
MAX_BUCKETS = 10_000


class CountingExecutor(futures.ThreadPoolExecutor):
    """A thread pool that knows how many submitted calls have not finished yet.

    With :attr:`pending` set, a unary call reaches the pool only once its request
    message has arrived: until then it waits in :class:`PendingCalls` (its own
    bound and read deadline) and takes no thread. Stock grpcio would give it a pool
    thread that blocks until the message comes, so a few callers that never send
    one would hold every thread. This reads grpcio's private ``grpc._server``
    (pinned; :func:`_stock_unary` checks the shape and otherwise leaves calls as
    grpcio runs them); the code is :func:`sidecar.transport.fastpath.defer_until_message`.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "rpc") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._count_lock = threading.Lock()
        self.in_flight = 0
        self.pending: PendingCalls | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        if self.pending is not None and not kwargs and _stock_unary(args):
            return self._defer(fn, args)
        return self._submit(fn, *args, **kwargs)

    def _defer(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> futures.Future[Any]:
        """Ask for the call's message now; submit the call once it has arrived (grpc's serving thread).
        The code lives with the other use of grpc's private layer, :mod:`sidecar.transport.fastpath`."""
        from sidecar.transport import fastpath

        assert self.pending is not None
        return fastpath.defer_until_message(self._submit, self.pending, fn, args)

    def _submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
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


def _stock_unary(args: tuple[Any, ...]) -> bool:
    """Whether ``args`` are what grpcio's stock server submits for a unary-request, unary-response call."""
    if len(args) != 7:
        return False
    try:
        from grpc import _server
    except ImportError:  # pragma: no cover
        return False
    return args[0] is getattr(_server, "_unary_response_in_pool", None) and hasattr(_server, "_receive_message")


class ConcurrencyLimit(Guard):
    """``RESOURCE_EXHAUSTED`` for a new call once ``limit`` calls are accepted and unfinished.

    The count is the stock pool's (``executor``) plus that of every call path
    added to :attr:`counters` (objects with an ``in_flight`` count).
    """

    def __init__(self, limit: int, executor: CountingExecutor, observer: Observer) -> None:
        super().__init__(observer)
        self.limit = limit
        self.executor = executor
        self.counters: list[Any] = []

    def in_flight(self) -> int:
        return self.executor.in_flight + sum(int(c.in_flight) for c in self.counters)

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        """For a call already counted (the fast path counts on accept)."""
        if self.in_flight() > self.limit:
            self._refuse(rpc, context)

    def _refuse(self, rpc: str, context: grpc.ServicerContext) -> None:
        self.refuse(rpc, "resource_exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server busy: more than {self.limit} calls at once", context)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(GUARDED_PREFIX):
            return handler
        # Runs on grpc's polling thread, before the call is queued (so not yet counted): the count is current.
        if self.in_flight() >= self.limit:
            rpc = rpc_name(details.method)
            return grpc.unary_unary_rpc_method_handler(lambda _request, context: self._refuse(rpc, context),
                                                       request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        return handler


class Deadline(Guard):
    """Skip the work of a call whose deadline passed while it waited in the queue."""

    def check(self, rpc: str, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            self.refuse(rpc, "deadline_exceeded", grpc.StatusCode.DEADLINE_EXCEEDED,
                        "deadline exceeded before the call started", context)


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
        super().__init__(observer)
        self.rate = rate
        self.burst = float(burst or max(1, int(rate)))
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
            self.refuse(rpc, "rate_limited", grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"rate limit: at most {self.rate:g} calls/s per caller", context)



#: Seconds a call must have waited for its message before a newer one may push it out.
MIN_EVICT_AGE = 0.1


class PendingCalls:
    """Calls whose request message has not arrived yet, kept apart from the concurrency bound.

    A call counts here from its headers until its message arrives (:meth:`arrived`);
    only then does it take a slot of :class:`ConcurrencyLimit`. So a caller that sends
    headers and never the message holds no slot a legitimate call needs:

    * at most ``per_connection`` such calls per TCP connection: one more is refused
      (``RESOURCE_EXHAUSTED``, counted ``too_many_pending``); grpc names every
      Unix-socket peer alike, so there only the total applies;
    * at most ``total`` in all: one more pushes the oldest out (cancelled, counted
      ``too_many_pending``) if that one has waited :data:`MIN_EVICT_AGE` already, and
      is refused otherwise. A legitimate call's message follows its headers at once,
      so the oldest is the stalled one; the age keeps calls whose message has come
      but still waits in grpc's queue (a busy server) from being pushed out;
    * each is cancelled ``read_timeout`` seconds after it came (counted ``request_timeout``).

    ``cancel`` callbacks run on this object's reaper thread or on the caller's, never
    under its lock.
    """

    def __init__(self, total: int, per_connection: int, read_timeout: float, observer: Observer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(1, total)
        self.per_connection = max(1, per_connection)
        self.read_timeout = read_timeout
        self.observer = observer
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0
        #: ticket -> (deadline, connection, rpc, cancel), oldest first.
        self._calls: dict[int, tuple[float, str, str, Callable[[], None]]] = {}
        self._per_connection: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._calls)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._reap, name="pending-reaper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def admit(self, connection: str, rpc: str, cancel: Callable[[], None]) -> int | None:
        """A ticket for a new call, or ``None`` (refused, counted: the caller ends the call)."""
        evicted: tuple[float, str, str, Callable[[], None]] | None = None
        ticket: int | None = None
        with self._lock:
            if not connection.startswith(("ipv4:", "ipv6:")):  # Unix-socket peers all look alike
                connection = f"#{self._next}"
            now = self.clock()
            admit = self._per_connection.get(connection, 0) < self.per_connection
            if admit and len(self._calls) >= self.total:
                oldest = next(iter(self._calls))
                # Every waiting call young: a burst of a busy server, not a stall; refuse the new one.
                admit = self._calls[oldest][0] - self.read_timeout + MIN_EVICT_AGE <= now
                if admit:
                    evicted = self._forget(oldest)
            if admit:
                ticket = self._next
                self._next += 1
                self._calls[ticket] = (now + self.read_timeout, connection, rpc, cancel)
                self._per_connection[connection] = self._per_connection.get(connection, 0) + 1
        if ticket is None:
            self.observer.rejected(rpc, "too_many_pending")
        if evicted is not None:
            self.observer.rejected(evicted[2], "too_many_pending")
            evicted[3]()
        return ticket

    def arrived(self, ticket: int) -> bool:
        """The call's message arrived (or the call ended): it no longer counts. Whether it still did."""
        with self._lock:
            return self._forget(ticket) is not None

    def _forget(self, ticket: int) -> tuple[float, str, str, Callable[[], None]] | None:
        entry = self._calls.pop(ticket, None)
        if entry is not None:
            left = self._per_connection[entry[1]] - 1
            if left:
                self._per_connection[entry[1]] = left
            else:
                del self._per_connection[entry[1]]
        return entry

    def expire(self) -> int:
        """Cancel every call past its read deadline; how many."""
        now = self.clock()
        expired = []
        with self._lock:
            for ticket, entry in self._calls.items():
                if entry[0] > now:
                    break
                expired.append(ticket)
            entries = [self._forget(t) for t in expired]
        for gone in entries:
            if gone is not None:
                self.observer.rejected(gone[2], "request_timeout")
                gone[3]()
        return len(entries)

    def _reap(self) -> None:
        tick = min(0.25, max(0.01, self.read_timeout / 4))
        while not self._stop.wait(tick):
            try:
                self.expire()
            except Exception:
                logging.getLogger("sidecar.admission").exception("pending calls: cancel failed")
