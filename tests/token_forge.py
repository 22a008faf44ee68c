"""Tokens for the event and verification tests, made independently of the sidecar.

Well-formed RS256 tokens are signed with joserfc (not PyJWT, which the sidecar
uses); attack tokens (``alg: none``, HS256 with the public key as secret,
tampered parts) are assembled by hand, as an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from conftest import openssl
from cryptography.hazmat.primitives import serialization
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from sidecar.domain import keys

UUID = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"
EMAIL = "customer@synerise.com"
NOW = 1_700_000_000
HOUR = 3600
DAY = 86400


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: object) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def claims(exp: int | None = NOW + HOUR, uuid: str | None = UUID, email: str | None = EMAIL,
           **extra: object) -> dict[str, object]:
    c: dict[str, object] = {k: v for k, v in (("exp", exp), ("uuid", uuid), ("email", email)) if v is not None}
    c.update(extra)
    return c


def rs256(key: keys.SigningKey, payload: dict[str, object], header: dict[str, object] | None = None) -> str:
    """Sign with joserfc, RS256, header ``{"typ": "JWT", "alg": "RS256"}`` plus ``header``."""
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return jose_jwt.encode({"alg": "RS256", **(header or {})}, payload, RSAKey.import_key(pem))


def alg_none(payload: dict[str, object], alg: str = "none") -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload)}."


def hs256_with_public_key(secret: bytes, payload: dict[str, object]) -> str:
    """The key-confusion attack: HMAC-SHA256 keyed with the public key's bytes."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def replace_part(token: str, index: int, obj: object) -> str:
    parts = token.split(".")
    parts[index] = b64json(obj)
    return ".".join(parts)


@pytest.fixture(scope="session")
def foreign_key(tmp_path_factory: pytest.TempPathFactory) -> keys.SigningKey:
    """A second RSA key made by openssl: Synerise has never seen its certificate."""
    d: Path = tmp_path_factory.mktemp("foreign-key")
    openssl("genpkey", "-out", "private.pem", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", cwd=d)
    return keys.load(str(d / "private.pem"))
