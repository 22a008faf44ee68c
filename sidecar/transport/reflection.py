"""Server reflection as ``grpc.reflection.v1`` beside the deprecated ``v1alpha``.

grpcio-reflection serves only ``grpc.reflection.v1alpha.ServerReflection``;
grpcurl and newer tools ask for ``grpc.reflection.v1`` first. ``v1`` is the
same protocol under a new package name (the same messages, field numbers and
stream), so one servicer answers both: the ``v1`` method decodes and encodes
with the ``v1alpha`` message classes, whose bytes are identical. So that
reflection can describe ``v1`` itself, its file (the ``v1alpha`` file
renamed, as upstream's ``grpc/reflection/v1/reflection.proto`` is) is added to
the default descriptor pool.

Nothing of grpcio-reflection is imported, and nothing added to the pool,
before the first reflection call: a sidecar that is never introspected pays
neither at start-up (:class:`_Lazy` builds the servicer on that call).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from google.protobuf import descriptor_pb2

V1ALPHA_SERVICE_NAME = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
_METHODS = tuple(f"/{name}/ServerReflectionInfo" for name in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME))


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """``v1alpha``'s file descriptor under ``v1``'s package, file name and language options."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    fdp = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(fdp)
    old, new = f".{fdp.package}.", ".grpc.reflection.v1."
    fdp.name, fdp.package = V1_FILE, "grpc.reflection.v1"
    for message in fdp.message_type:
        for f in message.field:
            if f.type_name.startswith(old):
                f.type_name = new + f.type_name.removeprefix(old)
    for service in fdp.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    fdp.options.Clear()
    fdp.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    fdp.options.java_package = "io.grpc.reflection.v1"
    fdp.options.java_outer_classname = "ServerReflectionProto"
    fdp.options.java_multiple_files = True
    return fdp


def _register_v1_file() -> None:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(_v1_file().SerializeToString())


def _handler(service_names: tuple[str, ...]) -> grpc.RpcMethodHandler:
    """The one stream handler both reflection methods share (``v1``'s bytes are ``v1alpha``'s)."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2

    assert reflection.SERVICE_NAME == V1ALPHA_SERVICE_NAME
    _register_v1_file()
    servicer = reflection.ReflectionServicer((*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME))
    return grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )


class _Lazy(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type hints
    """Both reflection methods, built on the first call to either."""

    def __init__(self, service_names: Iterable[str]) -> None:
        self._names = tuple(service_names)
        self._built: grpc.RpcMethodHandler | None = None
        self._lock = threading.Lock()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method not in _METHODS:
            return None
        with self._lock:
            if self._built is None:
                self._built = _handler(self._names)
            return self._built


def enable(server: grpc.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    server.add_generic_rpc_handlers((_Lazy(service_names),))
