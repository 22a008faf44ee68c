"""Loading, describing and generating the RSA signing key.

The key is parsed once (a PEM parse costs ~37 ms of CPU holding the GIL, about
150 signatures' worth) and the resulting object is reused for every token.
Nothing in this module ever formats private key material into a message.

>>> key = generate()
>>> key.bits, len(key.key_id)
(2048, 43)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sidecar.domain.errors import ConfigError, NoKey, UnusableKey

MIN_BITS = 2048
PEM_HEADER = "-----BEGIN PUBLIC KEY-----"
PEM_FOOTER = "-----END PUBLIC KEY-----"


def b64url(data: bytes) -> bytes:
    """Base64url without padding (RFC 7515 §2), as JOSE writes every binary value."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64url_uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")).decode("ascii")


@dataclass(frozen=True)
class PublicKeyInfo:
    """Every public description of an RSA key."""

    public_key: rsa.RSAPublicKey = field(repr=False)
    #: RFC 7638 JWK thumbprint (SHA-256, base64url), used as ``key_id``.
    key_id: str
    bits: int
    #: SubjectPublicKeyInfo PEM, as ``openssl rsa -pubout`` writes it.
    public_pem: str
    #: Where the key came from (a path, or ``"generated"``); never the key itself.
    source: str
    #: When it was loaded (unix seconds).
    loaded_at: float

    @property
    def certificate_code(self) -> str:
        """Synerise's one-line "Certificate code", header and footer kept."""
        return "".join(line.strip() for line in self.public_pem.splitlines())

    @property
    def certificate_code_bare(self) -> str:
        """The certificate code without header and footer."""
        return self.certificate_code.removeprefix(PEM_HEADER).removesuffix(PEM_FOOTER)

    def public_jwk(self) -> dict[str, str]:
        """The public JWK with ``kid``, ``alg`` and ``use``."""
        nums = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "n": _b64url_uint(nums.n),
            "e": _b64url_uint(nums.e),
            "kid": self.key_id,
            "alg": "RS256",
            "use": "sig",
        }


@dataclass(frozen=True)
class SigningKey(PublicKeyInfo):
    """A loaded RSA private key and its public descriptions."""

    private_key: rsa.RSAPrivateKey = field(repr=False, kw_only=True)


def thumbprint(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint: required members only, sorted, no whitespace, SHA-256."""
    nums = public.public_numbers()
    canonical = json.dumps(
        {"e": _b64url_uint(nums.e), "kty": "RSA", "n": _b64url_uint(nums.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(hashlib.sha256(canonical.encode()).digest()).decode("ascii")


def _pem(public: rsa.RSAPublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def describe_public(public: rsa.RSAPublicKey, source: str) -> PublicKeyInfo:
    """Describe a public key (``sidecar public-key`` on a ``public.pem``)."""
    return PublicKeyInfo(public, thumbprint(public), public.key_size, _pem(public), source, time.time())


def describe(private_key: rsa.RSAPrivateKey, source: str) -> SigningKey:
    """Wrap a parsed private key with its public forms and thumbprint."""
    public = private_key.public_key()
    return SigningKey(public, thumbprint(public), public.key_size, _pem(public), source, time.time(),
                      private_key=private_key)


def parse(data: bytes, passphrase: bytes | None, source: str) -> SigningKey:
    """Parse PKCS#8 PEM, PKCS#1 PEM or PKCS#8 DER (optionally encrypted).

    Raises :class:`~sidecar.errors.UnusableKey` with one line that names
    ``source`` and the problem, never the key's content.
    """
    is_pem = data.lstrip().startswith(b"-----BEGIN")
    if is_pem and b"ENCRYPTED" in data.split(b"\n", 1)[0] + data[:200] and passphrase is None:
        raise UnusableKey(f"key file {source}: the key is encrypted; set SIDECAR_KEY_PASSPHRASE_FILE")
    loader = serialization.load_pem_private_key if is_pem else serialization.load_der_private_key
    try:
        key = loader(data, password=passphrase)
    except TypeError as exc:
        # cryptography: "Password was not given but private key is encrypted"
        # or "Password was given but private key is not encrypted".
        if passphrase is None:
            raise UnusableKey(f"key file {source}: the key is encrypted; set SIDECAR_KEY_PASSPHRASE_FILE") from None
        raise UnusableKey(f"key file {source}: a passphrase was given but the key is not encrypted") from exc
    except UnsupportedAlgorithm:
        raise UnusableKey(f"key file {source}: unsupported key algorithm; an RSA key is required") from None
    except ValueError:
        if passphrase is not None and is_pem and b"ENCRYPTED" in data[:200]:
            raise UnusableKey(f"key file {source}: wrong passphrase, or the key is corrupt") from None
        if passphrase is not None and not is_pem:
            raise UnusableKey(f"key file {source}: cannot decrypt or parse the DER key (wrong passphrase?)") from None
        raise UnusableKey(
            f"key file {source}: not a private key (expected PKCS#8 PEM, PKCS#1 PEM or PKCS#8 DER)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnusableKey(f"key file {source}: {type(key).__name__.lstrip('_')} is not an RSA key; Synerise requires RSA (RS256)")
    if key.key_size < MIN_BITS:
        raise UnusableKey(f"key file {source}: RSA key has {key.key_size} bits; at least {MIN_BITS} are required")
    return describe(key, source)


def read_passphrase(path: str) -> bytes:
    """Read a passphrase file; one trailing newline is dropped."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnusableKey(f"passphrase file {path}: cannot read it ({exc.strerror})") from None
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if not data:
        raise UnusableKey(f"passphrase file {path}: is empty")
    return data


def load(path: str, passphrase_file: str | None = None) -> SigningKey:
    """Read and parse the key at ``path`` (see :func:`parse`)."""
    passphrase = read_passphrase(passphrase_file) if passphrase_file else None
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UnusableKey(f"key file {path}: does not exist") from None
    except IsADirectoryError:
        raise UnusableKey(f"key file {path}: is a directory") from None
    except OSError as exc:
        raise UnusableKey(f"key file {path}: cannot read it ({exc.strerror})") from None
    if not data.strip():
        raise UnusableKey(f"key file {path}: is empty")
    return parse(data, passphrase, path)


def generate(bits: int = MIN_BITS) -> SigningKey:
    """Generate a fresh RSA key (development mode and ``sidecar keygen``)."""
    return describe(rsa.generate_private_key(public_exponent=65537, key_size=bits), "generated")


def private_pem(key: SigningKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (what ``openssl genpkey`` writes)."""
    return key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())


def write_keypair(key: SigningKey, out_dir: str,
                  extra: Mapping[str, tuple[bytes, int]] | None = None) -> list[Path]:
    """Write ``private.pem`` (PKCS#8), ``private.der`` (PKCS#8 DER) and
    ``public.pem`` exactly as the openssl commands in Synerise's guide do, and the ``extra``
    files (name -> content and mode) beside them.

    Private files are created with mode 0600 and never overwrite an existing file:
    if any of them exists, nothing is written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pk = key.private_key
    files = {
        "private.pem": (private_pem(key), 0o600),
        "private.der": (pk.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), 0o600),
        "public.pem": (key.public_pem.encode("ascii"), 0o644),
        **(extra or {}),
    }
    for name in files:
        if (out / name).exists():
            raise UnusableKey(f"{out / name} already exists; refusing to overwrite a key")
    written = []
    for name, (data, mode) in files.items():
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        written.append(path)
    return written


#: 9999-12-31T23:59:59Z, the last instant a protobuf Timestamp holds.
MAX_INSTANT = 253402300799
#: RFC 3339 date-time with a mandatory offset (``Z`` or ``+hh:mm``); a space may stand for ``T``.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def parse_instant(text: str, source: str) -> int:
    """An RFC 3339 instant with offset as unix seconds; one trailing newline is allowed.

    Whole seconds only: a token's ``exp`` is whole seconds, so a cut-over
    between two seconds could not be honoured. Raises :class:`ConfigError`
    naming ``source`` and the rule.

    >>> parse_instant("2026-12-03T10:00:00Z\\n", "test")
    1796292000
    """
    value = text.removesuffix("\n").removesuffix("\r")
    if not _RFC3339.fullmatch(value):
        raise ConfigError(f"{source}: must be an RFC 3339 instant with offset, e.g. 2026-12-03T10:00:00Z, "
                          f"got {value[:40]!r}")
    try:
        instant = datetime.fromisoformat(value.upper().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{source}: not a valid date and time ({exc}), got {value[:40]!r}") from None
    if instant.microsecond:
        raise ConfigError(f"{source}: must be a whole second (token expiry is whole seconds), got {value[:40]!r}")
    seconds = int(instant.timestamp())
    if not 0 < seconds <= MAX_INSTANT:
        raise ConfigError(f"{source}: must be after 1970 and before 10000 (UTC), got {value[:40]!r}")
    return seconds


def format_instant(unix_seconds: float) -> str:
    """``2026-12-03T10:00:00Z``: how the sidecar writes an instant back."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Scheduled:
    """A next key and the instant it becomes the signing key (unix seconds)."""

    key: SigningKey
    activates_at: int


class KeyHolder:
    """The active signing key, swapped atomically on rotation, and the next key, if one is scheduled.

    Readers take one reference (:attr:`current`, or :meth:`at` when signing)
    and use it for a whole call, so a swap never mixes two keys in one token.

    A scheduled next key becomes the active key at its instant T by this
    holder's ``clock``: the first reader at or after T makes the switch (so
    every process sharing the clock switches at the same instant, without
    any message between them), and until then :meth:`at` tells the signer
    to let no token outlive T.

    >>> a, b = generate(), generate()
    >>> now = [100.0]
    >>> h = KeyHolder(a, clock=lambda: now[0])
    >>> h.schedule(b, 200)
    >>> h.at(150.0) == (a, 200), h.current is a
    (True, True)
    >>> now[0] = 200.0
    >>> h.current is b, h.next
    (True, None)
    """

    def __init__(self, key: SigningKey | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._next: Scheduled | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[SigningKey | None, SigningKey], None]] = []
        self._cutover_listeners: list[Callable[[SigningKey, Scheduled, float], None]] = []

    @property
    def current(self) -> SigningKey:
        """The active key now (making a due scheduled key active first)."""
        return self.at(self._clock())[0]

    def at(self, now: float) -> tuple[SigningKey, int | None]:
        """The key that signs at ``now`` and the expiry no token may pass (``None``: no limit)."""
        nxt = self._next
        if nxt is not None:
            if now >= nxt.activates_at:
                return self._activate(nxt, late=0.0), None
            key = self._key
            if key is not None:
                return key, nxt.activates_at
        key = self._key
        if key is None:
            raise NoKey("no signing key is loaded")
        return key, None

    @property
    def loaded(self) -> bool:
        return self._key is not None

    @property
    def next(self) -> Scheduled | None:
        """The scheduled next key, if any and not yet active."""
        nxt = self._next
        if nxt is not None and self._clock() >= nxt.activates_at:
            self._activate(nxt, late=0.0)
            return None
        return nxt

    def snapshot(self) -> tuple[SigningKey, Scheduled | None]:
        """The active key and the scheduled one, as one consistent pair (``GetPublicKey``)."""
        self.current  # noqa: B018 - a due key becomes active first
        with self._lock:
            key, nxt = self._key, self._next
        if key is None:
            raise NoKey("no signing key is loaded")
        return key, nxt

    def on_swap(self, listener: Callable[[SigningKey | None, SigningKey], None]) -> None:
        """Call ``listener(old, new)`` after every swap (caches, metrics)."""
        self._listeners.append(listener)

    def on_cutover(self, listener: Callable[[SigningKey, Scheduled, float], None]) -> None:
        """Call ``listener(old, scheduled, late)`` after a scheduled key became active
        (after the :meth:`on_swap` listeners); ``late`` is how long after T the key
        arrived (0: it was there before T)."""
        self._cutover_listeners.append(listener)

    def swap(self, key: SigningKey) -> SigningKey | None:
        """Make ``key`` active now; returns the previous key."""
        with self._lock:
            old, self._key = self._key, key
        for listener in self._listeners:
            listener(old, key)
        return old

    def schedule(self, key: SigningKey, activates_at: int) -> None:
        """Make ``key`` the signing key at ``activates_at``; at once (counted late) if that has passed."""
        nxt = Scheduled(key, activates_at)
        with self._lock:
            self._next = nxt
        now = self._clock()
        if now >= activates_at:
            self._activate(nxt, late=now - activates_at)

    def unschedule(self) -> Scheduled | None:
        """Drop the scheduled key (before T); returns it, or ``None`` if nothing was pending."""
        self.next  # noqa: B018 - a due key becomes active rather than being dropped
        with self._lock:
            nxt, self._next = self._next, None
        return nxt

    def _activate(self, nxt: Scheduled, late: float) -> SigningKey:
        with self._lock:
            if self._next is not nxt:  # another reader switched already, or it was dropped
                key = self._key
                if key is None:
                    raise NoKey("no signing key is loaded")
                return key
            old, self._key, self._next = self._key, nxt.key, None
        for listener in self._listeners:
            listener(old, nxt.key)
        if old is not None:
            for cutover in self._cutover_listeners:
                cutover(old, nxt, late)
        return nxt.key
