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
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

from sidecar.identity import Resolution
from sidecar.keys import PublicKeyInfo
from sidecar.observe import Observer
from sidecar.tokens import Token

LOGGER = "sidecar.audit"
#: Records waiting for the writer thread. When it falls behind, request threads
#: wait for room (backpressure) rather than memory growing or records being lost.
QUEUE_SIZE = 4096
FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "OFF")


_second: tuple[int, str] = (-1, "")


def _time(record: logging.LogRecord) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is formatted once per second."""
    global _second
    whole = int(record.created)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((record.created - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One compact JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "audit", {})
        return json.dumps({"time": _time(record), "level": record.levelname, **fields},
                          separators=(",", ":"), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL event key=value ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "audit", {}))
        event = fields.pop("event", "-")
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{_time(record)} {record.levelname} {event} {pairs}"


#: The thread that formats and writes audit records; see :func:`configure`.
_listener: logging.handlers.QueueListener | None = None
_listener_lock = threading.Lock()


def configure(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None) -> logging.Logger:
    """Set up the ``sidecar.audit`` logger, writing to ``stream`` (stderr) in its own format.

    Request threads only put records on a queue; one background thread formats
    and writes them. Writing from the request threads made them queue on the
    stream's lock around a ``write()`` that releases the GIL: a lock convoy that
    cost more CPU than the signature itself under load. :func:`flush` waits for
    what is queued; the server calls it when it has drained.
    """
    global _listener
    if fmt not in FORMATS:
        raise ValueError(f"audit format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if level.upper() not in LEVELS:
        raise ValueError(f"audit level must be one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    records: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=QUEUE_SIZE)
    with _listener_lock:
        if _listener is not None:
            _listener.stop()  # writes out what the previous configuration queued
        _listener = logging.handlers.QueueListener(records, handler)
        _listener.start()
    logger.addHandler(_RecordQueue(records))
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1 if level.upper() == "OFF" else level.upper())
    return logger


def flush() -> None:
    """Write out every record queued so far (tests, drain, exit)."""
    with _listener_lock:
        if _listener is not None:
            _listener.stop()
            _listener.start()


atexit.register(flush)


class _RecordQueue(logging.handlers.QueueHandler):
    """Hands the record itself to the writer thread: the formatting happens there."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.records = records

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        self.records.put(record)  # blocks while the queue is full: bounded memory, nothing dropped


class AuditLog(Observer):
    """Writes audit records to ``logger``. Never raises."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(LOGGER)

    def _emit(self, level: int, fields: dict[str, Any]) -> None:
        try:
            if self.logger.isEnabledFor(level):
                self.logger.log(level, fields.get("event", "audit"), extra={"audit": {**fields, "pid": os.getpid()}})
        except Exception:
            logging.getLogger("sidecar").debug("audit record dropped", exc_info=True)

    def issued(self, rpc: str, token: Token, identity_hash: str, resolution: Resolution | None) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
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
