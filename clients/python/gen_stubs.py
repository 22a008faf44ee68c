"""Regenerate ``sidecar_client/_pb/`` from the repository's ``proto/`` (``--check``: fail on drift).

The client carries its own copy of the message classes so that it does not
depend on the server package (and its PyJWT/cryptography/prometheus stack).
The copy keeps the descriptor name ``sidecar/v1/identity.proto``: protobuf's
default pool accepts the same file twice when the bytes are identical, so the
client and the server package can live in one process. Run it with the
grpcio-tools pinned in the top-level ``pyproject.toml``::

    ../../.venv/bin/python gen_stubs.py
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "sidecar/v1/identity.proto"
OUT = HERE / "sidecar_client" / "_pb"
GENERATED = ("identity_pb2.py", "identity_pb2.pyi")


def generate(out: Path) -> None:
    """Run protoc (messages and type stubs only; the client builds its own method callables)."""
    include = Path(protoc.__file__).parent / "_proto"
    if protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}", PROTO]):
        raise SystemExit("protoc failed")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "sidecar" / "v1"
        if "--check" in argv:
            stale = [n for n in GENERATED if not (OUT / n).exists()
                     or not filecmp.cmp(fresh / n, OUT / n, shallow=False)]
            if stale:
                print(f"sidecar_client/_pb is stale: {', '.join(stale)}; run gen_stubs.py", file=sys.stderr)
                return 1
            print("sidecar_client/_pb matches proto/")
            return 0
        for n in GENERATED:
            shutil.copyfile(fresh / n, OUT / n)
    print("regenerated sidecar_client/_pb/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
