"""The peers: the services a team would write instead of the sidecar, built and started as processes;
and the floors under the sidecar (``bench/peers/floor``: its fast path with a fixed answer, or signing only).

``bench/peers/node`` (``@grpc/grpc-js`` + ``jsonwebtoken``) and ``bench/peers/go`` (``grpc-go`` +
``golang-jwt``, Debian's, built offline in GOPATH mode) serve ``IssueToken`` from the same proto with
the same header and claims as the sidecar, the key parsed once at start. ``bench/run.py`` measures
them under its gRPC load generator; ``tests/test_bench_peers.py`` checks their tokens.

A missing toolchain is an error (:class:`PeerUnavailable`, with what to install), never a silent skip.
"""

from __future__ import annotations

import fcntl
import hashlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "peers" / "node"
GO_DIR = HERE / "peers" / "go"
#: What each peer is, for tables and messages.
DESCRIPTION = {"node": "Node: @grpc/grpc-js + jsonwebtoken", "go": "Go: grpc-go + golang-jwt",
               "floor-answer": "floor: the sidecar's fast path, a fixed answer",
               "floor-sign": "floor: the sidecar's fast path, a signature and nothing else"}
FLOOR = HERE / "peers" / "floor" / "server.py"


class PeerUnavailable(RuntimeError):
    """A peer cannot be built or started here; the message says what is missing."""


def _npm_stamp() -> str:
    return hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()


def ensure_node_modules() -> None:
    """``npm ci`` in ``bench/peers/node`` unless its node_modules already match package-lock.json.

    Under a file lock, so parallel test workers do not run two installs into one directory."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise PeerUnavailable(f"`{tool}` not found: the Node peer needs Node.js >= 18 with npm on PATH")
    stamp = NODE_DIR / "node_modules" / ".bench-lock-sha256"
    want = _npm_stamp()
    lock_path = Path(tempfile.gettempdir()) / f"sidecar-bench-npm-{hashlib.sha256(bytes(NODE_DIR)).hexdigest()[:12]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want:
            return
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PeerUnavailable(f"`npm ci` in {NODE_DIR} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        stamp.write_text(want)


def build_go(dest: Path) -> Path:
    """Build the Go peer into ``dest/peer-go`` (Go's build cache makes a rebuild quick)."""
    if shutil.which("go") is None:
        raise PeerUnavailable("`go` not found: `bash scripts/setup-system.sh` installs Debian's Go, grpc-go and "
                              "golang-jwt (scripts/apt.d/bench.txt)")
    out = dest / "peer-go"
    done = subprocess.run(["bash", str(GO_DIR / "build.sh"), str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PeerUnavailable(f"building the Go peer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return out


def prepare(kind: str, workdir: Path) -> list[str]:
    """Install or build peer ``kind`` (``node`` or ``go``); the command that starts it, less its arguments."""
    if kind == "node":
        ensure_node_modules()
        return ["node", str(NODE_DIR / "server.js")]
    if kind == "go":
        return [str(build_go(workdir))]
    if kind.startswith("floor-"):  # floor-answer, floor-sign, and the modes bench/ladder.py climbs
        return [sys.executable, str(FLOOR), "--mode", kind.removeprefix("floor-")]
    raise ValueError(f"unknown peer {kind!r} (node, go, floor-MODE)")


@contextmanager
def serve(cmd: list[str], key_file: Path, log: Path, timeout: float = 30,
          listen: str = "127.0.0.1:0") -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start a prepared peer on ``listen`` (127.0.0.1, a port of its own choosing; the floors also take
    ``unix:///path``); yield it and the address it reported.

    The peer prints ``listening ADDRESS`` once bound; its stderr goes to ``log``."""
    with log.open("ab") as err:
        proc = subprocess.Popen([*cmd, str(key_file), listen], stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise PeerUnavailable(f"{cmd[-1]} did not report its address within {timeout}s (see {log})")
            chunk = proc.stdout.read1(256)  # type: ignore[attr-defined]
            if not chunk:
                raise PeerUnavailable(f"{cmd[-1]} exited with {proc.wait()} before listening (see {log})")
            line += chunk
        word, _, addr = line.decode().strip().partition(" ")
        if word != "listening" or not addr:
            raise PeerUnavailable(f"{cmd[-1]} printed {line!r}, not 'listening HOST:PORT'")
        yield proc, addr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
