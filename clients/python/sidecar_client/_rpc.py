"""The five RPCs: path, message classes, request building and result conversion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2

from sidecar_client import models
from sidecar_client._pb import identity_pb2 as pb

SERVICE = "sidecar.v1.IdentityService"


@dataclass(frozen=True)
class Method:
    """One unary RPC of ``sidecar.v1.IdentityService``."""

    name: str
    request: Any
    response: Any
    convert: Callable[[Any], Any]

    @property
    def path(self) -> str:
        return f"/{SERVICE}/{self.name}"


RESOLVE_IDENTITY = Method("ResolveIdentity", pb.ResolveIdentityRequest, pb.ResolveIdentityResponse, models.identity)
ISSUE_TOKEN = Method("IssueToken", pb.IssueTokenRequest, pb.IssueTokenResponse, models.issued)
GET_PUBLIC_KEY = Method("GetPublicKey", pb.GetPublicKeyRequest, pb.GetPublicKeyResponse, models.public_key)
VERIFY_TOKEN = Method("VerifyToken", pb.VerifyTokenRequest, pb.VerifyTokenResponse, models.verification)
EVALUATE_EVENT = Method("EvaluateEvent", pb.EvaluateEventRequest, pb.EvaluateEventResponse, models.event_decision)
METHODS = (RESOLVE_IDENTITY, ISSUE_TOKEN, GET_PUBLIC_KEY, VERIFY_TOKEN, EVALUATE_EVENT)


def duration(ttl: timedelta | float | None) -> duration_pb2.Duration | None:
    """A protobuf Duration for a timedelta or a number of seconds; ``None`` leaves the server default."""
    if ttl is None:
        return None
    d = duration_pb2.Duration()
    d.FromTimedelta(ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl))
    return d


def resolve_identity(email: str, identity_hash: str, cookie_uuid: str, cookie_header: str,
                     ttl: timedelta | float | None) -> pb.ResolveIdentityRequest:
    return pb.ResolveIdentityRequest(email=email, identity_hash=identity_hash, cookie_uuid=cookie_uuid,
                                     cookie_header=cookie_header, ttl=duration(ttl))


def issue_token(email: str, uuid: str, ttl: timedelta | float | None) -> pb.IssueTokenRequest:
    return pb.IssueTokenRequest(email=email, uuid=uuid, ttl=duration(ttl))


def evaluate_event(action: str, jwt: str, changes_customer_data: bool) -> pb.EvaluateEventRequest:
    return pb.EvaluateEventRequest(action=action, jwt=jwt, changes_customer_data=changes_customer_data)
