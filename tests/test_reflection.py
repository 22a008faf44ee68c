"""Server reflection: grpc.reflection.v1 (what grpcurl and newer tools ask first) beside v1alpha.

The v1 calls are made by method path with requests encoded by hand from the
protocol's field numbers, not through the server's own v1 registration: a
client that knows only upstream's v1 file gets these answers.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# ServerReflectionRequest: file_by_filename = 3, file_containing_symbol = 4, list_services = 7 (all strings).
FILE_BY_NAME, SYMBOL, LIST = 3, 4, 7


def field(number: int, text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def ask(channel: grpc.Channel, method: str, *requests: bytes) -> list[reflection_pb2.ServerReflectionResponse]:
    # ServerReflectionResponse has the same field numbers in v1 and v1alpha: v1alpha's class decodes either.
    call = channel.stream_stream(method, request_serializer=lambda b: b,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=10))


@pytest.fixture(params=["tcp", "unix"])
def channel(start_server, request) -> grpc.Channel:
    return start_server().channel(request.param)


def test_v1_lists_the_services_and_both_reflections(channel):
    (resp,) = ask(channel, V1, field(LIST, ""))
    assert not resp.HasField("error_response")
    assert {s.name for s in resp.list_services_response.service} == {
        "sidecar.v1.IdentityService", "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    }


def test_v1_describes_the_contract_as_grpcurl_does(channel):
    """describe: the file holding a symbol, then its imports by name, into a fresh pool."""
    (resp,) = ask(channel, V1, field(SYMBOL, "sidecar.v1.IdentityService"))
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in resp.file_descriptor_response.file_descriptor_proto]
    main = next(f for f in files if f.name == "sidecar/v1/identity.proto")
    assert main.options.go_package.endswith("/clients/go/sidecarv1;sidecarv1")
    have = {f.name for f in files}
    for dep in main.dependency:
        if dep not in have:
            (r,) = ask(channel, V1, field(FILE_BY_NAME, dep))
            files += [descriptor_pb2.FileDescriptorProto.FromString(b) for b in r.file_descriptor_response.file_descriptor_proto]
    pool = descriptor_pool.DescriptorPool()
    for f in sorted(files, key=lambda f: f.name.startswith("sidecar/")):  # imports first
        pool.Add(f)
    service = pool.FindServiceByName("sidecar.v1.IdentityService")
    assert [m.name for m in service.methods] == ["ResolveIdentity", "IssueToken", "GetPublicKey", "VerifyToken", "EvaluateEvent"]
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("sidecar.v1.ResolveIdentityRequest"))
    assert request(email="a@b.c").SerializeToString() == b"\n\x05a@b.c"


def test_v1_describes_itself_as_upstreams_v1_file(channel):
    (resp,) = ask(channel, V1, field(SYMBOL, "grpc.reflection.v1.ServerReflection"))
    (fdp,) = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in resp.file_descriptor_response.file_descriptor_proto]
    assert (fdp.name, fdp.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert fdp.options.go_package == "google.golang.org/grpc/reflection/grpc_reflection_v1"
    assert not fdp.options.deprecated
    (method,) = fdp.service[0].method
    assert (method.name, method.input_type, method.output_type, method.client_streaming, method.server_streaming) == (
        "ServerReflectionInfo", ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse", True, True)
    refs = {f.type_name for m in fdp.message_type for f in m.field if f.type_name}
    assert refs and all(r.startswith(".grpc.reflection.v1.") for r in refs)


def test_v1_and_v1alpha_answer_alike_on_one_stream(channel):
    asks = (field(LIST, ""), field(SYMBOL, "grpc.health.v1.Health"), field(SYMBOL, "no.such.Service"))
    v1, v1alpha = ask(channel, V1, *asks), ask(channel, V1ALPHA, *asks)
    assert [r.SerializeToString() for r in v1] == [r.SerializeToString() for r in v1alpha]
    assert v1[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1alpha_still_served_through_its_stubs(channel):
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (resp,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    assert "grpc.reflection.v1.ServerReflection" in {s.name for s in resp.list_services_response.service}
