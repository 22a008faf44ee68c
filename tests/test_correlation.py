"""Correlation ids in the audit log: a caller's W3C ``traceparent`` and ``x-request-id``, validated,
recorded as ``trace_id`` and ``request_id`` on both call paths (the fast path and grpc's stock one)."""

from __future__ import annotations

import io
import json

import grpc
import pytest

from sidecar.telemetry import audit, correlation
from sidecar.v1 import identity_pb2 as pb

EMAIL = "customer@synerise.com"
COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture(params=["fast", "stock"])
def call_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _restore_audit_logger():
    yield
    audit.configure("INFO", "json")


def audited(start_server):
    stream = io.StringIO()
    observer = audit.AuditLog(audit.configure("INFO", "json", stream))
    running = start_server(observer=observer)
    running.sidecar.observer = observer
    return stream, running


def records(stream: io.StringIO) -> list[dict[str, object]]:
    audit.flush()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_ids_of_the_call_are_in_its_records_and_only_in_them(start_server):
    stream, s = audited(start_server)
    stub = s.stub()
    md = (("traceparent", TRACEPARENT), ("x-request-id", "req-7f3a/42"))
    stub.ResolveIdentity(pb.ResolveIdentityRequest(email=EMAIL, cookie_uuid=COOKIE), metadata=md)
    with pytest.raises(grpc.RpcError):
        stub.IssueToken(pb.IssueTokenRequest(email="no-at-sign", uuid=COOKIE), metadata=md)
    stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE))  # sends none
    stub.IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE), metadata=(("x-request-id", "only-this"),))
    issued, rejected, plain, only_request = records(stream)
    assert (issued["event"], issued["trace_id"], issued["request_id"]) == ("token_issued", TRACE, "req-7f3a/42")
    assert (rejected["event"], rejected["trace_id"], rejected["request_id"]) == ("token_rejected", TRACE,
                                                                               "req-7f3a/42")
    assert "trace_id" not in plain and "request_id" not in plain  # nothing carried over from the last call
    assert only_request["request_id"] == "only-this" and "trace_id" not in only_request


@pytest.mark.parametrize(("traceparent", "request_id"), [
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", "has space"),  # uppercase hex; a space
    (f"ff-{TRACE}-00f067aa0ba902b7-01", 'quote"d'),  # version ff is invalid; a quote
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", "x" * 129),  # all-zero trace id; too long
    (f"00-{TRACE}-{'0' * 16}-01", "semi;colon"),  # all-zero parent id; a character outside the set
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", ""),  # version 00 has exactly four fields
    ("garbage", "back\\slash"),
])
def test_bad_ids_are_left_out_and_the_call_is_served(start_server, traceparent, request_id):
    stream, s = audited(start_server)
    r = s.stub().IssueToken(pb.IssueTokenRequest(email=EMAIL, uuid=COOKIE),
                            metadata=(("traceparent", traceparent), ("x-request-id", request_id)))
    assert r.token.jwt
    (rec,) = records(stream)
    assert "trace_id" not in rec and "request_id" not in rec


def test_parsing_rules():
    assert correlation.trace_id(TRACEPARENT) == TRACE
    # a later version may append fields (W3C Trace Context, forward compatibility)
    assert correlation.trace_id(f"01-{TRACE}-00f067aa0ba902b7-01-what-comes-next") == TRACE
    assert correlation.trace_id(f"01-{TRACE}-00f067aa0ba902b7-01-" + "x" * 600) == ""  # bounded
    assert correlation.request_id("0f8fad5b-d9cb-469f-a165-70867728950e") == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert correlation.request_id("x" * correlation.MAX_REQUEST_ID) == "x" * correlation.MAX_REQUEST_ID
    assert correlation.request_id("") == ""
    # what grpc's own client refuses to send, a server may still receive from another one
    assert correlation.request_id("tab\there") == correlation.request_id("é-not-ascii") == ""
    # the first of a repeated key counts; a binary (-bin) value is never one of these keys
    ids = correlation.from_metadata([("x-request-id", "a"), ("x-request-id", "b"), ("traceparent", b"00")])
    assert ids == correlation.Correlation("", "a")
    assert correlation.current() is correlation.NONE
