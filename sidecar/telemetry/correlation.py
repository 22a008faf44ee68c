"""Correlation ids of the call being served, for the audit record: ``trace_id`` and ``request_id``.

A backend ties a token to its own request by sending, as gRPC metadata (HTTP headers on
the wire), a W3C Trace Context ``traceparent`` and/or an ``x-request-id``. The transport
reads them once per call (:func:`from_metadata`) and holds them in a context variable
for the length of the call (:func:`enter`, :func:`leave`); the audit log adds them to every record the
call writes. Both are validated and length-bounded: a value that breaks its rule is left
out (the call itself is served as usual), so nothing a caller sends reaches the log
unchecked.

>>> from_metadata([("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
...                ("x-request-id", "req-42")])
Correlation(trace_id='4bf92f3577b34da6a3ce929d0e0e4736', request_id='req-42')
>>> from_metadata([("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")])
Correlation(trace_id='', request_id='')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

#: The metadata keys (HTTP headers) the ids are read from: W3C Trace Context's, and the request id's.
TRACEPARENT, REQUEST_ID = "traceparent", "x-request-id"
HEADERS = (TRACEPARENT, REQUEST_ID)
#: The longest ``x-request-id`` recorded; longer ones are left out, not cut.
MAX_REQUEST_ID = 128
#: ``x-request-id``: printable ASCII without spaces, quotes or backslashes (UUIDs, ULIDs,
#: base64url and the ``host/pid-seq`` styles of common proxies all fit).
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._~:/=+@-]{{1,{MAX_REQUEST_ID}}}")
#: W3C Trace Context ``traceparent``: version-traceid-parentid-flags, lowercase hex. A
#: version above 00 may append fields after another ``-`` (the spec's forward compatibility).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: A traceparent longer than this is not parsed at all.
MAX_TRACEPARENT = 512


@dataclass(frozen=True, slots=True)
class Correlation:
    """The ids of one call; an empty string is "not sent, or refused"."""

    trace_id: str = ""
    request_id: str = ""

    def fields(self) -> dict[str, str]:
        """The audit record's fields: only the ids that are set."""
        out = {}
        if self.trace_id:
            out["trace_id"] = self.trace_id
        if self.request_id:
            out["request_id"] = self.request_id
        return out


NONE = Correlation()
_current: ContextVar[Correlation] = ContextVar("sidecar_correlation", default=NONE)


def trace_id(traceparent: str) -> str:
    """The trace id of a valid ``traceparent``, else ``""``."""
    if len(traceparent) > MAX_TRACEPARENT:
        return ""
    m = _TRACEPARENT.fullmatch(traceparent.strip(" \t"))
    if m is None:
        return ""
    version, trace, parent, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return ""
    if trace == "0" * 32 or parent == "0" * 16:
        return ""
    return trace


def request_id(value: str) -> str:
    """``value`` if it is a well-formed ``x-request-id``, else ``""``."""
    return value if _REQUEST_ID.fullmatch(value) else ""


def from_metadata(metadata: Iterable[Any] | None) -> Correlation:
    """The ids in a call's invocation metadata (``(key, value)`` pairs; the first of each key counts)."""
    trace = req = None
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == TRACEPARENT and trace is None:
            trace = trace_id(value) if isinstance(value, str) else ""
        elif key == REQUEST_ID and req is None:
            req = request_id(value) if isinstance(value, str) else ""
    if not trace and not req:
        return NONE
    return Correlation(trace or "", req or "")


def current() -> Correlation:
    """The ids of the call this thread is serving (``NONE`` outside a call)."""
    return _current.get()


def enter(ids: Correlation) -> Token[Correlation] | None:
    """Make ``ids`` the current call's until :func:`leave` (``None``, and nothing to undo, for ``NONE``).

    A pair of calls rather than a context manager: this runs on every call, and a
    generator-based ``with`` costs about a microsecond more than the work itself.
    """
    return None if ids is NONE else _current.set(ids)


def leave(token: Token[Correlation] | None) -> None:
    """Undo :func:`enter`."""
    if token is not None:
        _current.reset(token)
