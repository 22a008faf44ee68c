"""The audit log: one line per issued or rejected token, on stderr.

Each record says when, which RPC, the outcome (or the rejection reason), the
key id, the token's uuid and the identity hash -- the hash stands in for the
email, which is never written, and neither is a token or any key material.
Issued tokens and key events log at INFO, rejections and failed reloads at
WARNING; ``SIDECAR_AUDIT_LEVEL=WARNING`` keeps only the latter, ``OFF`` none.

JSON (the default) for log pipelines::

    {"time":"2024-05-01T12:00:00.123Z","level":"INFO","event":"token_issued","rpc":"ResolveIdentity",
     "outcome":"new_identity","key_id":"...","uuid":"...","identity_hash":"-374943845",...}

``text`` for development::

    2024-05-01T12:00:00.123Z INFO token_issued rpc=ResolveIdentity outcome=new_identity ...

The sidecar's own log lines (start-up, rotation, drain) use the same format
(:func:`configure_logging`), as ``"event": "log"`` records with the logger's
name and the message, so one parser reads all of stderr.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from sidecar.domain.identity import Resolution
from sidecar.domain.keys import PublicKeyInfo
from sidecar.domain.tokens import Token
from sidecar.service.observer import Observer
from sidecar.telemetry import correlation

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "OFF")
#: How often the writer thread writes out what has been queued, in seconds.
WRITE_INTERVAL = 0.05
#: Lines waiting at most; past it a new record is dropped and counted (a call never waits for the sink).
MAX_PENDING = 4096
#: Why records are dropped: the sink is not keeping up, it fails (full disk, closed pipe), or it is closed.
DROP_REASONS = ("queue_full", "write_failed", "closed", "unformattable")
#: Seconds between two warnings that records were dropped.
DROP_WARNING_INTERVAL = 10.0
#: Longest :func:`flush` waits for a writer busy on a stalled sink, in seconds.
FLUSH_TIMEOUT = 1.0

_second: tuple[int, str] = (-1, "")


def _time(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is formatted once per second."""
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((created - whole) * 1000):03d}Z"


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_line(created: float, level: str, fields: dict[str, Any], pid: int) -> str:
    """One compact JSON object."""
    return _JSON.encode({"time": _time(created), "level": level, **fields, "pid": pid})


def text_line(created: float, level: str, fields: dict[str, Any], pid: int) -> str:
    """``time LEVEL event key=value ...`` for humans."""
    rest = {**fields, "pid": pid}
    event = rest.pop("event", "-")
    pairs = " ".join(f"{k}={v}" for k, v in rest.items())
    return f"{_time(created)} {level} {event} {pairs}"


def formatter(fmt: str) -> Callable[[float, str, dict[str, Any], int], str]:
    """The line formatter of ``SIDECAR_AUDIT_FORMAT`` ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"audit format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return json_line if fmt == "json" else text_line


class LogFormatter(logging.Formatter):
    """Formats the sidecar's own log records as audit lines (``event: log``), in JSON or text."""

    def __init__(self, fmt: str = "json") -> None:
        super().__init__()
        self.line = formatter(fmt)

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"event": "log", "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, fields, record.process or os.getpid())


class QueuedHandler(logging.Handler):
    """Formats a log record on the caller's thread and queues the line on the process's
    :class:`AuditWriter`: logging never waits for stderr either."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted must not break its caller
            writer().drop("unformattable")
            return
        writer().put(line)

    def flush(self) -> None:
        """Write out what is queued (``logging.shutdown``, or before ``os._exit``); at most
        :data:`FLUSH_TIMEOUT` on a stalled sink."""
        flush()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Every log record of the process (the sidecar's and its libraries', grpc's included) to stderr,
    as audit-format lines, at ``level`` and above; replaces an earlier call's handler."""
    handler = QueuedHandler()
    handler.setFormatter(LogFormatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, LogFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def ensure_std_fds() -> None:
    """Open ``/dev/null`` on any of fds 0-2 that is closed, so that no file opened later takes
    their number (grpc core writes its own log lines to fd 2, whatever it then is)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


class AuditWriter:
    """Formats a record on the caller's thread, queues the line, and writes lines in batches.

    One background thread writes whatever is queued every
    :data:`WRITE_INTERVAL` seconds, in one ``write()``. A request thread never
    waits for the stream and never wakes another thread for its record:
    writing from request threads made them queue on the stream's lock (a lock
    convoy), and waking a writer per record cost a GIL hand-over per token;
    both cost as much CPU as the signature.

    A call never waits for the sink: when :data:`MAX_PENDING` lines are waiting
    (stderr is a pipe nobody reads, a blocked logging driver) a new record is
    dropped; so is a batch the stream fails to take (full disk, closed pipe).
    Each drop is counted by reason (:data:`DROP_REASONS`, ``on_drop``: the
    ``sidecar_audit_dropped_total`` counter) and a warning line says so, at most
    every :data:`DROP_WARNING_INTERVAL` seconds. :meth:`flush` writes out what is
    queued (drain, exit), waiting at most :data:`FLUSH_TIMEOUT` for a stalled sink.
    """

    def __init__(self, level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None,
                 interval: float | None = WRITE_INTERVAL) -> None:
        """``interval``: seconds between the writer thread's writes; ``None``: no thread (only
        :meth:`flush` and the :data:`MAX_PENDING` bound write)."""
        self.format = formatter(fmt)
        if level.upper() not in LEVELS:
            raise ValueError(f"audit level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.threshold = logging.CRITICAL + 1 if level.upper() == "OFF" else logging.getLevelName(level.upper())
        self.stream = stream
        self.pid = os.getpid()
        self._lines: deque[str] = deque()
        self._write_lock = threading.Lock()
        #: Records dropped so far, by reason; ``on_drop(reason, n)`` is told of each drop.
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.on_drop: Callable[[str, int], None] | None = None
        self._unwarned = 0
        self._warned_at = -DROP_WARNING_INTERVAL
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval is not None:
            self._thread = threading.Thread(target=self._run, args=(interval,), name="audit-writer", daemon=True)
            self._thread.start()

    def enabled(self, level: int) -> bool:
        return level >= self.threshold

    def write(self, level: int, fields: dict[str, Any]) -> None:
        """Queue one record (``fields`` get ``pid``); never raises."""
        try:
            line = self.format(time.time(), logging.getLevelName(level), fields, self.pid)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted must not break the call
            self.drop("unformattable")
            return
        self.put(line)

    def put(self, line: str) -> None:
        """Queue one formatted line, or drop it (counted) when :data:`MAX_PENDING` are waiting."""
        if len(self._lines) >= MAX_PENDING:
            self.drop("queue_full")
            return
        self._lines.append(line)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records dropped for ``reason``; queue a warning if none was given lately."""
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._unwarned += n
        hook = self.on_drop
        if hook is not None:
            try:
                hook(reason, n)
            except Exception:  # noqa: BLE001 - counting must not break the call either
                pass
        now = time.monotonic()
        if now - self._warned_at >= DROP_WARNING_INTERVAL:
            self._warned_at = now
            unwarned, self._unwarned = self._unwarned, 0
            # One line past the bound: the warning waits with the records the sink has still to take.
            self._lines.append(self.format(time.time(), "WARNING", {
                "event": "log", "logger": "sidecar.audit",
                "message": f"{unwarned} log/audit records dropped (last reason: {reason}); "
                           f"see sidecar_audit_dropped_total"}, self.pid))

    def flush(self, timeout: float | None = None) -> bool:
        """Write out every line queued so far; whether it could (``False``: the writer is stuck on
        the sink for longer than ``timeout`` seconds, :data:`FLUSH_TIMEOUT` by default)."""
        if not self._write_lock.acquire(timeout=FLUSH_TIMEOUT if timeout is None else timeout):
            return False
        try:
            lines = self._lines
            batch = []
            try:
                while True:
                    batch.append(lines.popleft())
            except IndexError:
                pass
            if not batch:
                return True
            stream = self.stream if self.stream is not None else sys.stderr
            try:
                stream.write("\n".join(batch) + "\n")
                stream.flush()
            except ValueError:  # I/O on a closed file
                self.drop("closed", len(batch))
            except Exception:  # noqa: BLE001 - a full disk or broken pipe must not break calls
                self.drop("write_failed", len(batch))
            return True
        finally:
            self._write_lock.release()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush(timeout=interval)

    def close(self) -> None:
        """Stop the writer thread and write out what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=FLUSH_TIMEOUT)
        self.flush()


_current: AuditWriter | None = None
_current_lock = threading.Lock()


def configure(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None) -> AuditWriter:
    """The process's audit writer on ``stream`` (stderr); replaces (and flushes) the previous one."""
    global _current
    writer = AuditWriter(level, fmt, stream)
    with _current_lock:
        previous, _current = _current, writer
    if previous is not None:
        writer.on_drop = previous.on_drop
        previous.close()
    return writer


def writer() -> AuditWriter:
    """The process's audit writer (one on stderr with the defaults if none was configured)."""
    current = _current
    return current if current is not None else configure()


def flush() -> bool:
    """Write out every record queued so far (tests, drain, exit); ``False``: gave up on a sink
    stalled for :data:`FLUSH_TIMEOUT`."""
    current = _current
    return current.flush() if current is not None else True


def _at_exit() -> None:
    """Stop the writer thread and write out what is left, before the interpreter finalizes
    (a daemon thread stopped mid-write there would hold stderr's lock)."""
    current = _current
    if current is not None:
        current.close()


atexit.register(_at_exit)


class AuditLog(Observer):
    """Writes audit records through ``writer`` (the process's, see :func:`configure`). Never raises."""

    def __init__(self, writer: AuditWriter | None = None) -> None:
        self.writer = writer if writer is not None else (_current or configure())

    def _emit(self, level: int, fields: dict[str, Any]) -> None:
        if self.writer.enabled(level):
            ids = correlation.current()  # the backend's trace and request id, when the call sent them
            if ids is not correlation.NONE:
                fields.update(ids.fields())
            self.writer.write(level, fields)

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: Resolution | None) -> None:
        if not self.writer.enabled(logging.INFO):
            return
        fields: dict[str, Any] = {
            "event": "token_issued",
            "rpc": rpc,
            "outcome": resolution.outcome.value if resolution else "issued",
            "key_id": token.key_id,
            "uuid": token.uuid,
            "identity_hash": identity_hash,
            "expires_at": token.expires_at,
        }
        if resolution is not None:
            fields["set_identity"] = resolution.set_identity
        self._emit(logging.INFO, fields)

    def rejected(self, rpc: str, reason: str) -> None:
        self._emit(logging.WARNING, {"event": "token_rejected", "rpc": rpc, "reason": reason})

    def key_activated(self, key: PublicKeyInfo) -> None:
        self._emit(logging.INFO, {"event": "key_activated", "key_id": key.key_id, "bits": key.bits,
                                  "source": key.source})

    def key_reload(self, result: str) -> None:
        self._emit(logging.INFO if result == "success" else logging.WARNING,
                   {"event": "key_reload", "result": result})
