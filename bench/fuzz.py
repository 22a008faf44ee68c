"""Fuzz every IdentityService RPC on both call paths; count status codes and tracebacks.

One in-process server per call path (``fast`` and ``stock``), built as ``sidecar
serve`` builds it (limits, guards, the 16 KiB message bound), a real key made by
openssl, and the calls over loopback TCP. Each RPC gets ``--calls`` fuzzed calls
per path: half are messages with hostile field values (unicode, NULs, controls,
huge and oversize strings, upper-case and broken UUIDs, ``-0`` and ``007``
hashes, cookie headers, JWT-like strings, padded tokens, invalid durations),
half raw bytes (random, truncated and bit-flipped valid requests) sent past the
client's serializer. Allowed answers: OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED.
Metrics and the audit log are on, as ``sidecar serve`` has them. Every log record
of the process is captured, and its stderr (audit lines, grpc core, uncaught
thread exceptions) goes to a file: a record with a traceback, or a
``Traceback`` in stderr, counts.

    python bench/fuzz.py                      # 10,000 calls per RPC per path (~100,000 calls)
    python bench/fuzz.py --calls 500 --seed 7

Exit status 1 if any call got INTERNAL or UNKNOWN (or any other code not
allowed), or any traceback was logged.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.cli.config import Config  # noqa: E402
from sidecar.cli.serve import server_options  # noqa: E402
from sidecar.domain import keys, tokens  # noqa: E402
from sidecar.transport.runtime import Runtime, build  # noqa: E402
from sidecar.v1 import identity_pb2 as pb  # noqa: E402

METHODS = ("ResolveIdentity", "IssueToken", "GetPublicKey", "VerifyToken", "EvaluateEvent")
ALLOWED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
REQUEST = {m: getattr(pb, f"{m}Request") for m in METHODS}
RESPONSE = {m: getattr(pb, f"{m}Response") for m in METHODS}
UUID = "345d4c8f-5aff-591d-a19c-1ca48923d9ee"
EMAIL = "customer@synerise.com"


class Fuzzer:
    """Hostile field values and byte strings from one seeded random generator."""

    def __init__(self, seed: int, token: str) -> None:
        self.r = random.Random(seed)
        self.token = token

    def text(self) -> str:
        r = self.r
        kind = r.randrange(12)
        if kind == 0:
            return ""
        if kind == 1:
            return "".join(chr(r.choice((r.randrange(0x20), r.randrange(0x20, 0x7F), r.randrange(0x80, 0xD800),
                                         r.randrange(0xE000, 0x110000)))) for _ in range(r.randrange(1, 40)))
        if kind == 2:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 60))).decode("latin-1")
        if kind == 3:
            return ("é\x00" * 8000)[: r.randrange(250, 12_000)]
        if kind == 4 and r.random() < 0.1:
            return "x" * r.randrange(17_000, 30_000)  # over the message bound
        if kind == 5:
            return r.choice([EMAIL, "a@b", "@", "a@b@c", "\x00@\x00", "josé@example.com", " a@b", "a@b\n"])
        if kind == 6:
            return self.uuid()
        if kind == 7:
            return self.hash()
        if kind == 8:
            return self.jwt()
        return "".join(r.choice("abc@.-_0Aé\x00 ;=&:%\"") for _ in range(r.randrange(1, 30)))

    def uuid(self) -> str:
        u = UUID if self.r.random() < 0.5 else str(random.Random(self.r.random()).getrandbits(128).to_bytes(16).hex())
        if len(u) == 32:
            u = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
        return self.r.choice([u, u.upper(), u.replace("-", ""), "{" + u + "}", u + " ", u[:-1], u[:-1] + "g"])

    def hash(self) -> str:
        r = self.r
        return r.choice(["-374943845", "0", "-0", "007", "-007", "+1", "0x1f", "1_000", "2147483648", "-2147483649",
                         "-", "٣", str(r.randrange(-(2**40), 2**40)), " 5"])

    def jwt(self) -> str:
        r = self.r
        parts = self.token.split(".")
        kind = r.randrange(6)
        if kind == 0:
            return self.token + "=" * r.randrange(1, 3)
        if kind == 1:
            i = r.randrange(3)
            parts[i] = parts[i].replace("-", "+").replace("_", "/") + r.choice(["", "=", "\n"])
            return ".".join(parts)
        if kind == 2:
            t = list(self.token)
            t[r.randrange(len(t))] = r.choice("A-_.=+/ \x00é")
            return "".join(t)
        if kind == 3:
            return ".".join(base64.urlsafe_b64encode(r.randbytes(r.randrange(40))).decode().rstrip("=")
                            for _ in range(r.randrange(1, 5)))
        if kind == 4:
            return self.token[: r.randrange(len(self.token))]
        return self.text() if r.random() < 0.5 else self.token

    def cookie(self) -> str:
        r = self.r
        pieces = ["_snrs_uuid=", "_snrs_p=", ";", "; ", "=", "&", ":", "identityHash:", "uuid:", "host:shop.example",
                  "%00", "%ZZ", '"', "%2D0", UUID, UUID.upper(), "-374943845", "-0", "007"]
        return "".join(r.choice(pieces) if r.random() < 0.8 else self.text()[:20] for _ in range(r.randrange(30)))

    def ttl(self) -> duration_pb2.Duration | None:
        r = self.r
        kind = r.randrange(4)
        if kind == 0:
            return None
        if kind == 1:
            return duration_pb2.Duration(seconds=r.randrange(-(2**63), 2**63), nanos=r.randrange(-(2**31), 2**31))
        return duration_pb2.Duration(seconds=r.randrange(-10, 8 * 86400), nanos=r.randrange(-(10**9), 10**9 + 1))

    def message(self, method: str) -> Any:
        r = self.r
        if method == "ResolveIdentity":
            return pb.ResolveIdentityRequest(
                email=self.text() if r.random() < 0.6 else EMAIL,
                identity_hash=self.hash() if r.random() < 0.6 else self.text(),
                cookie_uuid=self.uuid() if r.random() < 0.6 else self.text(),
                cookie_header=self.cookie() if r.random() < 0.6 else self.text(),
                ttl=self.ttl())
        if method == "IssueToken":
            return pb.IssueTokenRequest(email=self.text() if r.random() < 0.7 else EMAIL,
                                        uuid=self.uuid() if r.random() < 0.6 else self.text(), ttl=self.ttl())
        if method == "GetPublicKey":
            return pb.GetPublicKeyRequest()
        if method == "VerifyToken":
            return pb.VerifyTokenRequest(jwt=self.jwt())
        return pb.EvaluateEventRequest(action=self.text(), jwt=self.jwt(), changes_customer_data=r.random() < 0.5)

    def raw(self, method: str) -> bytes:
        """Bytes that are often no valid message: random, cut or bit-flipped valid ones."""
        r = self.r
        valid: bytes = self.message(method).SerializeToString()
        kind = r.randrange(4)
        if kind == 0:
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 80)))
        if kind == 1 and valid:
            return valid[: r.randrange(len(valid))]
        if kind == 2 and valid:
            b = bytearray(valid)
            for _ in range(r.randrange(1, 4)):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            return bytes(b)
        return r.choice([b"\x0a\xff\xff\xff\xff\x0f", b"\xff", b"\x08", b"\x00", b"\x0c", b"\x0a\x02\xc3\x28"])


class Tracebacks(logging.Handler):
    """Every record of the process; keeps those with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.with_traceback: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        if record.exc_info or "Traceback" in record.getMessage():
            self.with_traceback.append(f"{record.name}: {record.getMessage()}")


def start(path: str, key: keys.SigningKey, sock_dir: Path) -> Runtime:
    from prometheus_client import CollectorRegistry

    from sidecar.cli.serve import make_observer, make_sidecar
    from sidecar.telemetry.rpc_metrics import RpcMetrics, service_methods
    from sidecar.transport.runtime import SERVICES

    cfg = Config(call_path=path, uuid_salt="someString")
    registry = CollectorRegistry()
    observer = make_observer(cfg, registry)  # metrics and the audit log, as serve has them
    opts = server_options(cfg, observer, RpcMetrics(registry, service_methods(*SERVICES)))
    opts.fast_path_threads = 2 if path == "fast" else 0
    # The use cases as serve builds them: token cache, default lifetime, namespace and all.
    runtime = build(make_sidecar(cfg, key, observer), ["127.0.0.1:0", f"unix://{sock_dir}/{path}.sock"], opts)
    runtime.start()
    if (runtime.fast is not None) is not (path == "fast"):
        raise SystemExit(f"the {path} path is not what serves IdentityService")
    return runtime


def fuzz_path(path: str, runtime: Runtime, fuzzer: Fuzzer, calls: int, threads: int) -> dict[str, Counter[str]]:
    channel = grpc.insecure_channel(runtime.addresses[0])
    codes: dict[str, Counter[str]] = {m: Counter() for m in METHODS}
    try:
        for method in METHODS:
            full = f"/sidecar.v1.IdentityService/{method}"
            typed = channel.unary_unary(full, request_serializer=REQUEST[method].SerializeToString,
                                        response_deserializer=RESPONSE[method].FromString)
            raw = channel.unary_unary(full)  # bytes as they are
            requests: list[tuple[Callable[..., Any], Any]] = [
                (typed, fuzzer.message(method)) if i % 2 == 0 else (raw, fuzzer.raw(method)) for i in range(calls)]

            def one(item: tuple[Callable[..., Any], Any]) -> str:
                fn, request = item
                try:
                    fn(request, timeout=30)
                    return "OK"
                except grpc.RpcError as exc:
                    return str(exc.code().name)

            with futures.ThreadPoolExecutor(threads) as pool:
                codes[method].update(pool.map(one, requests, chunksize=64))
    finally:
        channel.close()
    return codes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=10_000, help="fuzzed calls per RPC per call path (10000)")
    p.add_argument("--seed", type=int, default=16, help="random seed (16)")
    p.add_argument("--threads", type=int, default=4, help="client threads (4)")
    p.add_argument("--paths", default="fast,stock", help="call paths (fast,stock)")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    # The process's stderr (audit lines, grpc core, uncaught thread exceptions) goes to a file, scanned after.
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    stderr_file = open(work / "stderr", "wb")
    os.dup2(stderr_file.fileno(), 2)
    catcher = Tracebacks()
    root = logging.getLogger()
    root.addHandler(catcher)
    root.setLevel(logging.DEBUG)
    try:
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", str(work / "private.pem")], check=True, capture_output=True)
        os.chmod(work / "private.pem", 0o600)
        key = keys.load(str(work / "private.pem"))
        genuine = tokens.sign(key, EMAIL, UUID, timedelta(hours=1), time.time).jwt
        total: Counter[str] = Counter()
        bad = 0
        print(f"| path | rpc | calls | {' | '.join(sorted(ALLOWED))} | other |")
        print("|---|---|---|---|---|---|---|")
        for path in a.paths.split(","):
            runtime = start(path, key, work)
            started = time.monotonic()
            try:
                codes = fuzz_path(path, runtime, Fuzzer(a.seed, genuine), a.calls, a.threads)
            finally:
                runtime.drain(0)
            for method, counts in codes.items():
                other = {c: n for c, n in counts.items() if c not in ALLOWED}
                bad += sum(other.values())
                total.update(counts)
                print(f"| {path} | {method} | {sum(counts.values())} | "
                      f"{' | '.join(str(counts.get(c, 0)) for c in sorted(ALLOWED))} | {other or 0} |")
            print(f"<!-- {path}: {time.monotonic() - started:.1f} s -->")
        from sidecar.telemetry import audit

        audit.flush()
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)
        err = (work / "stderr").read_text(errors="replace")
        in_stderr = err.count("Traceback")
        print()
        print(f"calls: {sum(total.values())}; INTERNAL: {total.get('INTERNAL', 0)}; UNKNOWN: {total.get('UNKNOWN', 0)}; "
              f"codes not allowed: {bad}; log records: {catcher.records}; with a traceback: {len(catcher.with_traceback)}; "
              f"stderr lines: {err.count(chr(10))}, tracebacks in it: {in_stderr}")
        for line in catcher.with_traceback[:5]:
            print(f"  traceback: {line[:200]}")
        return 1 if bad or catcher.with_traceback or in_stderr else 0
    finally:
        os.dup2(saved_stderr, 2)
        stderr_file.close()
        root.removeHandler(catcher)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
