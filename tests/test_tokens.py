import base64
import json
from datetime import timedelta

import pytest
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from sidecar import tokens


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
