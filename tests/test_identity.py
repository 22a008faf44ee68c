import uuid

import pytest

from sidecar.domain.identity import Outcome, customer_uuid, identity_hash, parse_namespace, resolve

COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customer@synerise.com", "-374943845"),
        ("john.doe@example.com", "-1116351980"),
        ("a", "97"),
        ("", "0"),
        ("josé@example.com", "1626701080"),
    ],
)
def test_identity_hash_spec_vectors(text, expected):
    assert identity_hash(text) == expected


def java_hash(s: str) -> int:
    """Independent reference: iterate UTF-16 code units as Java's charAt does."""
    units = [int.from_bytes(s.encode("utf-16-le")[i:i + 2], "little") for i in range(0, len(s.encode("utf-16-le")), 2)]
    h = 0
    for u in units:
        h = (31 * h + u) % 2**32
    return h - 2**32 if h >= 2**31 else h


@pytest.mark.parametrize("text", ["😀@example.com", "Customer@Synerise.com ", "ß" * 300, "\u0000x", "a" * 1000])
def test_identity_hash_matches_java_reference_on_utf16_units(text):
    assert identity_hash(text) == str(java_hash(text))


def test_identity_hash_does_not_normalise():
    assert identity_hash("Customer@synerise.com") != identity_hash("customer@synerise.com")
    assert identity_hash(" customer@synerise.com") != identity_hash("customer@synerise.com")


def test_uuid_documented_vectors():
    assert str(customer_uuid("customer@synerise.com", "someString")) == "345d4c8f-5aff-591d-a19c-1ca48923d9ee"
    assert str(customer_uuid("customer@synerise.com", "yourdomain.com")) == "7023e164-2318-542c-9992-0b70cf4c5625"


def test_uuid_plugin_schemes():
    magento = uuid.UUID("ea1c3a9d-64a6-45d0-a70c-d2a055f350d3")
    assert customer_uuid("a@b.c", "", magento) == uuid.uuid5(magento, "a@b.c")
    assert customer_uuid("a@b.c", "", parse_namespace("dns")) == uuid.uuid5(uuid.NAMESPACE_DNS, "a@b.c")
    assert customer_uuid("a@b.c", "s").version == 5


@pytest.mark.parametrize(("text", "ns"), [("url", uuid.NAMESPACE_URL), ("DNS", uuid.NAMESPACE_DNS),
                                          (" ea1c3a9d-64a6-45d0-a70c-d2a055f350d3 ",
                                           uuid.UUID("ea1c3a9d-64a6-45d0-a70c-d2a055f350d3"))])
def test_parse_namespace(text, ns):
    assert parse_namespace(text) == ns


@pytest.mark.parametrize("bad", ["", "oid-ish", "1234", "ea1c3a9d-64a6-45d0-a70c"])
def test_parse_namespace_refuses(bad):
    with pytest.raises(ValueError, match="namespace must be 'url', 'dns' or a UUID"):
        parse_namespace(bad)


EMAIL = "customer@synerise.com"
DERIVED = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"


@pytest.mark.parametrize(
    ("current", "cookie", "outcome", "uuid_", "set_identity"),
    [
        ("", COOKIE, Outcome.NEW_IDENTITY, COOKIE, True),
        ("", "", Outcome.NEW_IDENTITY, DERIVED, True),
        ("-374943845", COOKIE, Outcome.SAME_IDENTITY, COOKIE, False),
        ("-374943845", "", Outcome.SAME_IDENTITY, DERIVED, True),
        ("12345", COOKIE, Outcome.SWITCHED_IDENTITY, DERIVED, True),
        ("12345", "", Outcome.SWITCHED_IDENTITY, DERIVED, True),
    ],
)
def test_resolve_branches(current, cookie, outcome, uuid_, set_identity):
    r = resolve(EMAIL, current, cookie, salt="someString")
    assert (r.outcome, r.uuid, r.set_identity, r.identity_hash) == (outcome, uuid_, set_identity, "-374943845")
