"""The gRPC servicer: translate between protobuf and the use cases (:mod:`sidecar.service.usecases`).

Nothing here knows about hashing, UUIDs, lifetimes or claims. Errors from the
domain are mapped to status codes in one table, :data:`STATUS_FOR`; anything
unexpected becomes ``INTERNAL`` with a generic message and is logged here,
never sent.

Request bytes are parsed by :func:`request_parser`, on both call paths: bytes
that are not a valid message become a :class:`~sidecar.domain.errors.MalformedRequest`
handed to the method, which answers ``INVALID_ARGUMENT`` counted as
``malformed_request`` (grpc's own deserializer would answer ``INTERNAL`` and
log a traceback per call).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message_factory import GetMessageClass

from sidecar.domain import errors
from sidecar.domain.identity import Outcome
from sidecar.domain.tokens import Token
from sidecar.domain.validation import Duration
from sidecar.service.usecases import Sidecar
from sidecar.telemetry import correlation
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc

log = logging.getLogger("sidecar.servicer")

SERVICE = pb.DESCRIPTOR.services_by_name["IdentityService"]
SERVICE_NAME = SERVICE.full_name

#: Domain error class -> gRPC status. The first matching class wins.
STATUS_FOR: tuple[tuple[type[errors.SidecarError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NoKey, grpc.StatusCode.UNAVAILABLE),
    (errors.ServiceError, grpc.StatusCode.UNAVAILABLE),
)

OUTCOME_PB = {
    Outcome.NEW_IDENTITY: pb.OUTCOME_NEW_IDENTITY,
    Outcome.SAME_IDENTITY: pb.OUTCOME_SAME_IDENTITY,
    Outcome.SWITCHED_IDENTITY: pb.OUTCOME_SWITCHED_IDENTITY,
}

T = TypeVar("T")


def status_for(exc: errors.SidecarError) -> grpc.StatusCode:
    """The status code for a domain error (``INTERNAL`` if none matches)."""
    for cls, code in STATUS_FOR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def request_parser(message_class: Any) -> Callable[[bytes], Any]:
    """``message_class.FromString`` that never raises: bytes it cannot parse give a
    :class:`~sidecar.domain.errors.MalformedRequest` (returned, not raised) for the method to refuse."""
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError, or whatever else bytes from the wire provoke
            return errors.MalformedRequest(name)

    return lenient


def generic_handler(servicer: IdentityServicer) -> grpc.GenericRpcHandler:
    """``IdentityService`` for the stock grpc server, with :func:`request_parser` as each method's deserializer."""
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name),
            request_deserializer=request_parser(GetMessageClass(m.input_type)),
            response_serializer=GetMessageClass(m.output_type).SerializeToString)
        for m in SERVICE.methods
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _ttl(request: pb.ResolveIdentityRequest | pb.IssueTokenRequest) -> Duration | None:
    """The request's optional lifetime, as sent (the use case checks it)."""
    return Duration(request.ttl.seconds, request.ttl.nanos) if request.HasField("ttl") else None


def _fill_token(msg: pb.Token, token: Token) -> None:
    """Set the response's ``token`` in place (half the cost of building and copying sub-messages)."""
    msg.jwt = token.jwt
    msg.expires_at.seconds = token.expires_at
    msg.key_id = token.key_id


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    """Translates ``sidecar.v1.IdentityService`` calls to :class:`Sidecar`."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.observer = sidecar.observer

    def _run(self, rpc: str, request: object, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        # Both call paths come through here: the caller's traceparent / x-request-id, if any,
        # go into every audit record of this call.
        ids = correlation.enter(correlation.from_metadata(context.invocation_metadata()))
        try:
            if isinstance(request, errors.MalformedRequest):
                # A fresh exception, not the parser's object: raising that one would tie its traceback to
                # this frame, which holds it, and the cycle would keep the call (and its HTTP/2 stream,
                # counted against the stream limit) alive until the garbage collector ran.
                raise errors.InvalidArgument(request.field, request.rule, request.reason)
            return fn()
        except errors.SidecarError as exc:
            self.observer.rejected(rpc, exc.reason)
            code = status_for(exc)
            context.abort(code, str(exc) if code is not grpc.StatusCode.INTERNAL else "internal error")
        except Exception:
            log.exception("unexpected error in %s", rpc)
            self.observer.rejected(rpc, "internal")
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            correlation.leave(ids)
        raise AssertionError("unreachable")  # context.abort raises

    def ResolveIdentity(self, request: pb.ResolveIdentityRequest, context: grpc.ServicerContext) -> pb.ResolveIdentityResponse:
        def call() -> pb.ResolveIdentityResponse:
            resolution, token = self.sidecar.resolve_identity(
                request.email, request.identity_hash, request.cookie_uuid, request.cookie_header, _ttl(request)
            )
            response = pb.ResolveIdentityResponse(
                uuid=resolution.uuid,
                identity_hash=resolution.identity_hash,
                outcome=OUTCOME_PB[resolution.outcome],
                set_identity=resolution.set_identity,
            )
            _fill_token(response.token, token)
            return response

        return self._run("ResolveIdentity", request, context, call)

    def IssueToken(self, request: pb.IssueTokenRequest, context: grpc.ServicerContext) -> pb.IssueTokenResponse:
        def call() -> pb.IssueTokenResponse:
            token = self.sidecar.issue_token(request.email, request.uuid, _ttl(request))
            response = pb.IssueTokenResponse()
            _fill_token(response.token, token)
            return response

        return self._run("IssueToken", request, context, call)

    def GetPublicKey(self, request: pb.GetPublicKeyRequest, context: grpc.ServicerContext) -> pb.GetPublicKeyResponse:
        def call() -> pb.GetPublicKeyResponse:
            key, scheduled = self.sidecar.public_keys()
            response = pb.GetPublicKeyResponse(
                pem=key.public_pem,
                certificate_code=key.certificate_code,
                certificate_code_bare=key.certificate_code_bare,
                jwk=json.dumps(key.public_jwk(), separators=(",", ":")),
                key_id=key.key_id,
                bits=key.bits,
            )
            if scheduled is not None:
                nxt = scheduled.key
                response.next_key.CopyFrom(pb.NextKey(
                    pem=nxt.public_pem, certificate_code=nxt.certificate_code,
                    certificate_code_bare=nxt.certificate_code_bare, key_id=nxt.key_id,
                    activates_at=timestamp_pb2.Timestamp(seconds=scheduled.activates_at)))
            return response

        return self._run("GetPublicKey", request, context, call)

    def VerifyToken(self, request: pb.VerifyTokenRequest, context: grpc.ServicerContext) -> pb.VerifyTokenResponse:
        def call() -> pb.VerifyTokenResponse:
            v = self.sidecar.verify_token(request.jwt)
            if not v.valid:
                return pb.VerifyTokenResponse(valid=False, reason=v.reason)
            return pb.VerifyTokenResponse(valid=True, email=v.email, uuid=v.uuid, key_id=v.key_id,
                                          expires_at=timestamp_pb2.Timestamp(seconds=v.expires_at))

        return self._run("VerifyToken", request, context, call)

    def EvaluateEvent(self, request: pb.EvaluateEventRequest,
                      context: grpc.ServicerContext) -> pb.EvaluateEventResponse:
        def call() -> pb.EvaluateEventResponse:
            d = self.sidecar.evaluate_event(request.action, request.changes_customer_data, request.jwt)
            return pb.EvaluateEventResponse(accepted=d.accepted, requires_jwt=d.requires_jwt, rule=d.rule,
                                            reason=d.reason)

        return self._run("EvaluateEvent", request, context, call)


