"""Regenerate the Python stubs in sidecar/v1/ from proto/ (``make proto``).

The protobuf messages and the gRPC stubs come from grpcio-tools' protoc, the
Connect protocol stubs (``identity_connect.py``) from connectrpc's own plugin,
``protoc-gen-connectrpc`` (``protobuf=google``: over the same message classes).
Run with the pinned grpcio-tools and plugin so the output is byte-for-byte reproducible;
``--check`` regenerates into a temporary folder and fails if the committed
stubs differ (CI runs it).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted(p.relative_to(ROOT / "proto") for p in (ROOT / "proto").rglob("*.proto"))
GENERATED = ("identity_pb2.py", "identity_pb2.pyi", "identity_pb2_grpc.py", "identity_connect.py")
#: connectrpc's code generator, installed beside this interpreter by the dev/test extras.
CONNECT_PLUGIN = Path(sys.executable).parent / "protoc-gen-connectrpc"


def generate(out: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", f"--plugin=protoc-gen-connectrpc={CONNECT_PLUGIN}",
            f"--connectrpc_out={out}", "--connectrpc_opt=protobuf=google", *map(str, PROTOS)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str]) -> int:
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = [n for n in GENERATED
                     if not (ROOT / "sidecar/v1" / n).exists()
                     or not filecmp.cmp(Path(tmp) / "sidecar/v1" / n, ROOT / "sidecar/v1" / n, shallow=False)]
        if stale:
            print(f"generated stubs are stale: {', '.join(stale)}; run `make proto` and commit", file=sys.stderr)
            return 1
        print("generated stubs match proto/")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for n in GENERATED:
            shutil.copyfile(Path(tmp) / "sidecar/v1" / n, ROOT / "sidecar/v1" / n)
    print("regenerated sidecar/v1/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
