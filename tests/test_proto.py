"""The contract's language options: real package names, pinned here so a change is deliberate.

``buf breaking`` (CI, buf.yaml) leaves these options to this test; everything
else about the file it checks against main.
"""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.v1 import identity_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
GO_MODULE = "github.com/synerise-sidecar/synerise-identity-sidecar/clients/go"

OPTIONS = {
    "go_package": f"{GO_MODULE}/sidecarv1;sidecarv1",
    "java_package": "io.github.synerise_sidecar.sidecar.v1",
    "java_multiple_files": True,
    "java_outer_classname": "IdentityProto",
    "php_namespace": "SyneriseSidecar\\V1",
    "php_metadata_namespace": "SyneriseSidecar\\V1\\GPBMetadata",
    "csharp_namespace": "SyneriseSidecar.V1",
    "ruby_package": "SyneriseSidecar::V1",
    "objc_class_prefix": "SVX",
}


def test_language_options_are_the_real_names():
    opts = pb.DESCRIPTOR.GetOptions()
    assert {name: getattr(opts, name) for name in OPTIONS} == OPTIONS
    assert "example" not in str(opts)


def test_go_package_is_the_go_module_in_clients_go():
    go_mod = (ROOT / "clients/go/go.mod").read_text()
    assert re.search(rf"^module {re.escape(GO_MODULE)}$", go_mod, re.M)
    stubs = ROOT / "clients/go/sidecarv1"
    assert {p.name for p in stubs.glob("*.go")} >= {"identity.pb.go", "identity_grpc.pb.go"}
    assert all(p.read_text().count("\npackage sidecarv1\n") == 1 for p in stubs.glob("*.pb.go"))


def test_buf_gen_yaml_writes_the_committed_go_package():
    gen = (ROOT / "buf.gen.yaml").read_text()
    assert gen.count(f"opt: module={GO_MODULE}") == 2
    assert gen.count("out: clients/go") == 2


def test_copies_of_the_proto_are_the_proto():
    proto = (ROOT / "proto/sidecar/v1/identity.proto").read_bytes()
    assert (ROOT / "clients/node/proto/sidecar/v1/identity.proto").read_bytes() == proto
