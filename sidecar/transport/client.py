"""Minimal internal client used by the CLI (health, public-key, demo).

Backends should use the client packages in ``clients/``; this module only
serves the sidecar's own commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.domain.errors import ConfigError
from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc


def target(addr: str) -> str:
    """A grpc target for ``unix:///path`` or ``host:port`` (grpc takes both as they are)."""
    return addr


@contextmanager
def connect(addr: str) -> Iterator[pb_grpc.IdentityServiceStub]:
    with grpc.insecure_channel(target(addr)) as channel:
        yield pb_grpc.IdentityServiceStub(channel)


def get_public_key(stub: pb_grpc.IdentityServiceStub, timeout: float = 5.0) -> pb.GetPublicKeyResponse:
    try:
        response: pb.GetPublicKeyResponse = stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=timeout)
        return response
    except grpc.RpcError as exc:
        raise ConfigError(f"GetPublicKey failed: {exc.code().name}: {exc.details()}") from None


def health_status(addr: str, timeout: float = 3.0, service: str = "") -> str:
    """The health status name, or the gRPC error code name if the call fails."""
    with grpc.insecure_channel(target(addr)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def refusal(call: Callable[[], object]) -> tuple[str, str] | None:
    """Run ``call``; the status code name and details if the server refused it, ``None`` if it answered."""
    try:
        call()
    except grpc.RpcError as exc:
        return str(exc.code().name), str(exc.details())
    return None


def verify_token(addr: str, token: str, timeout: float = 5.0) -> pb.VerifyTokenResponse:
    """Ask the server at ``addr`` whether ``token`` is valid (``sidecar verify``)."""
    with connect(addr) as stub:
        try:
            response: pb.VerifyTokenResponse = stub.VerifyToken(pb.VerifyTokenRequest(jwt=token), timeout=timeout)
            return response
        except grpc.RpcError as exc:
            raise ConfigError(f"VerifyToken failed: {exc.code().name}: {exc.details()}") from None
