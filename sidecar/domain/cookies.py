"""Reading Synerise's browser cookies out of a raw ``Cookie`` header.

>>> c = parse_cookie_header("a=1; _snrs_uuid=6f1c2f2a-0b1e-4f4e-9d1a-1a2b3c4d5e6f; "
...                         "_snrs_p=host:shop.example&uuid:x&identityHash:-374943845&init:1")
>>> c.uuid, c.identity_hash
('6f1c2f2a-0b1e-4f4e-9d1a-1a2b3c4d5e6f', '-374943845')
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

UUID_COOKIE = "_snrs_uuid"
PARAMS_COOKIE = "_snrs_p"


@dataclass(frozen=True, slots=True)
class SyneriseCookies:
    """The Synerise values found in a ``Cookie`` header (empty when absent)."""

    uuid: str = ""
    identity_hash: str = ""


def parse_cookie_header(header: str) -> SyneriseCookies:
    """Return ``_snrs_uuid`` and ``_snrs_p``'s ``identityHash`` from ``header``.

    Tolerant the way browsers are: other cookies, odd spacing, empty pairs,
    quoted or percent-encoded values, and pairs without ``=`` are skipped over
    rather than refused. The first occurrence of a name wins, as in browsers
    sending the most specific path first. Validation of the values found is the
    caller's job, with the rules of the request fields (SPEC §9): the use case
    lower-cases ``_snrs_uuid`` and refuses an ``identityHash`` that is not
    canonical decimal (``-0``, ``007``) as ``cookie_header._snrs_p.identityHash``.
    """
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name in found or name not in (UUID_COOKIE, PARAMS_COOKIE):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found[name] = unquote(value)
    return SyneriseCookies(
        uuid=found.get(UUID_COOKIE, "").strip(),
        identity_hash=_param(found.get(PARAMS_COOKIE, ""), "identityHash"),
    )


def _param(params: str, key: str) -> str:
    """Return ``key``'s value in an ``&``-separated ``key:value`` list."""
    for pair in params.split("&"):
        k, sep, v = pair.partition(":")
        if sep and k.strip() == key:
            return v.strip()
    return ""
