import base64
import json
from datetime import timedelta

import jwt as pyjwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from sidecar.domain import keys, tokens


def b64json(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_header_and_payload_are_exactly_synerise_s(signing_key):
    t = tokens.sign(signing_key, "customer@synerise.com", "345d4c8f-5aff-591d-a19c-1ca48923d9ee",
                    timedelta(hours=24), clock=lambda: 1_700_000_000.9)
    header, payload, _ = t.jwt.split(".")
    assert b64json(header) == b'{"alg":"RS256","typ":"JWT"}'
    assert json.loads(b64json(payload)) == {"exp": 1_700_086_400, "uuid": "345d4c8f-5aff-591d-a19c-1ca48923d9ee",
                                            "email": "customer@synerise.com"}
    assert t.expires_at == 1_700_086_400 and t.key_id == signing_key.key_id


def test_verifies_with_an_independent_jose_library(signing_key, openssl_keys):
    t = tokens.sign(signing_key, "josé@example.com", "0f8fad5b-d9cb-469f-a165-70867728950e",
                    timedelta(minutes=5), clock=lambda: 1_700_000_000)
    public = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    obj = jws.deserialize_compact(t.jwt, public, algorithms=["RS256"])
    assert json.loads(obj.payload)["email"] == "josé@example.com"
    decoded = jwt.decode(t.jwt, public, algorithms=["RS256"])
    assert decoded.header == {"alg": "RS256", "typ": "JWT"}
    assert decoded.claims["exp"] == 1_700_000_300


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), timedelta(days=7), timedelta(days=30)])
def test_signer_itself_refuses_lifetimes_synerise_refuses(signing_key, ttl):
    with pytest.raises(ValueError, match="outside"):
        tokens.sign(signing_key, "a@b.c", "0f8fad5b-d9cb-469f-a165-70867728950e", ttl, clock=lambda: 0)


def test_exp_never_exceeds_requested_lifetime(signing_key):
    t = tokens.sign(signing_key, "a@b.c", "0f8fad5b-d9cb-469f-a165-70867728950e",
                    timedelta(days=7) - timedelta(seconds=1), clock=lambda: 100.999)
    assert t.expires_at - 100.999 < 7 * 86400


@settings(max_examples=300, deadline=None)
@given(email=st.text(min_size=1, max_size=60), uuid=st.uuids().map(str),
       now=st.floats(min_value=0, max_value=4e9), seconds=st.integers(min_value=1, max_value=7 * 86400 - 1))
def test_token_is_byte_for_byte_pyjwt_s(signing_key, email, uuid, now, seconds):
    """The hand-assembled compact JWS equals PyJWT's for the same claims (PKCS#1 v1.5 is deterministic),
    whatever the email holds: quotes, backslashes, control characters, non-ASCII."""
    t = tokens.sign(signing_key, email, uuid, timedelta(seconds=seconds), clock=lambda: now)
    reference = pyjwt.encode(tokens.claims(email, uuid, now, timedelta(seconds=seconds)), signing_key.private_key,
                             algorithm="RS256", headers=tokens.HEADER)
    assert t.jwt == reference


def test_b64url_has_no_padding_and_the_url_alphabet():
    assert keys.b64url(b"\xfb\xff") == b"-_8"
    assert keys.b64url(b"") == b""
