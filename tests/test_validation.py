from datetime import timedelta

import pytest

from sidecar.domain import validation
from sidecar.domain.errors import InvalidArgument


@pytest.mark.parametrize("ok", ["a@b", "customer@synerise.com", "josé@example.com", "a+tag@sub.example.co",
                                "x" * 240 + "@example.com"])
def test_email_accepts(ok):
    assert validation.email(ok) == ok


@pytest.mark.parametrize(
    ("bad", "reason", "rule"),
    [
        ("", "email_missing", "is required"),
        ("x" * 250 + "@abcd", "email_too_long", "at most 254"),
        ("no-at-sign", "email_format", "exactly one '@'"),
        ("two@@example.com", "email_format", "exactly one '@'"),
        ("a@b@c", "email_format", "exactly one '@'"),
        ("@example.com", "email_format", "non-empty part"),
        ("a@", "email_format", "non-empty part"),
        ("a b@example.com", "email_format", "whitespace or control"),
        (" a@example.com", "email_format", "whitespace or control"),
        ("a@example.com\n", "email_format", "whitespace or control"),
        ("a\x00@example.com", "email_format", "whitespace or control"),
        ("a\u200b@example.com", "email_format", "whitespace or control"),
        ("a\u00a0@example.com", "email_format", "whitespace or control"),
        ("a\ud800@example.com", "email_format", "whitespace or control"),
    ],
)
def test_email_refuses(bad, reason, rule):
    with pytest.raises(InvalidArgument) as exc:
        validation.email(bad)
    assert exc.value.reason == reason in validation.REASONS and exc.value.field == "email" and rule in str(exc.value)
    assert str(exc.value).startswith("email: ")


@pytest.mark.parametrize("ok", ["0f8fad5b-d9cb-469f-a165-70867728950e", "0F8FAD5B-D9CB-469F-A165-70867728950E",
                                "0f8FAD5b-d9CB-469f-A165-70867728950e"])
def test_uuid_accepts_and_lower_cases(ok):
    assert validation.customer_uuid(ok) == "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize("bad", ["0f8fad5bd9cb469fa16570867728950e", "{0f8fad5b-d9cb-469f-a165-70867728950e}",
                                 "0f8fad5b-d9cb-469f-a165-70867728950", "0f8fad5b-d9cb-469f-a165-70867728950e ",
                                 "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", "zf8fad5b-d9cb-469f-a165-70867728950e",
                                 "０f8fad5b-d9cb-469f-a165-70867728950e"])
def test_uuid_refuses(bad):
    with pytest.raises(InvalidArgument, match=r"^cookie_uuid: must be a canonical UUID") as exc:
        validation.customer_uuid(bad, "cookie_uuid")
    assert exc.value.reason == "uuid_format" and "uuid_format" in validation.REASONS


def test_uuid_required_or_optional():
    with pytest.raises(InvalidArgument, match=r"^uuid: is required"):
        validation.customer_uuid("")
    assert validation.customer_uuid("", required=False) == ""


@pytest.mark.parametrize("ok", ["", "0", "97", "-374943845", "2147483647", "-2147483648"])
def test_identity_hash_accepts(ok):
    assert validation.identity_hash(ok) == ok


@pytest.mark.parametrize("bad", ["2147483648", "-2147483649", "+5", "1.5", "abc", " 5", "--5", "99999999999", "٣",
                                 "-0", "00", "007", "-007", "0097", "5 ", "1_000", "-", "0x1f", "１"])
def test_identity_hash_refuses(bad):
    with pytest.raises(InvalidArgument, match=r"^identity_hash: must be empty or a signed 32-bit") as exc:
        validation.identity_hash(bad)
    assert exc.value.reason == "identity_hash_format" and "identity_hash_format" in validation.REASONS


DEFAULT = timedelta(hours=24)


@pytest.mark.parametrize(("value", "expected"), [(None, DEFAULT), (timedelta(seconds=1), timedelta(seconds=1)),
                                                 (timedelta(days=7) - timedelta(seconds=1),
                                                  timedelta(days=7) - timedelta(seconds=1))])
def test_ttl_accepts(value, expected):
    assert validation.ttl(value, DEFAULT) == expected


@pytest.mark.parametrize(("value", "reason"), [(timedelta(0), "ttl_not_positive"), (timedelta(seconds=-5), "ttl_not_positive"),
                                               (timedelta(milliseconds=500), "ttl_too_short"),
                                               (timedelta(days=7), "ttl_too_long"), (timedelta(days=8), "ttl_too_long")])
def test_ttl_refuses(value, reason):
    with pytest.raises(InvalidArgument, match=r"^ttl: ") as exc:
        validation.ttl(value, DEFAULT)
    assert exc.value.reason == reason and reason in validation.REASONS


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("30m", 1800), ("24h", 86400), ("6d", 518400), ("45s", 45)])
def test_parse_duration(text, seconds):
    assert validation.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "1w", "-5", "1.5h", "h", "24 hours"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError, match="duration must be"):
        validation.parse_duration(bad)


def test_the_ascii_shortcut_refuses_exactly_what_the_unicode_rule_refuses() -> None:
    from sidecar.domain.validation import _has_space_or_control, _is_space_or_control

    for code in range(128):
        ch = chr(code)
        assert _has_space_or_control(f"a{ch}b@x.io") is _is_space_or_control(ch), repr(ch)
    assert _has_space_or_control("ü\u00a0@x.io") and not _has_space_or_control("ü@x.io")
