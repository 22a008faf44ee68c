"""Start-up time and memory at rest of a real ``sidecar serve``.

Each run starts ``python -m sidecar serve`` with a real openssl-made RSA-2048
key on a free 127.0.0.1 port and measures:

- **exec to SERVING**: wall time from just before ``exec`` to the first
  ``grpc.health.v1`` answer ``SERVING`` (probed every ``--probe-ms``: a TCP
  connect until the port accepts, then health checks);
- **start-up CPU**: user + system seconds the server spent until then (less
  noisy than wall time on a shared host);
- **RSS at rest**: ``VmRSS`` of the process (and its workers) ``--settle``
  seconds after SERVING, before any call; then again after ``--calls`` calls of
  each kind (IssueToken, ResolveIdentity, GetPublicKey, VerifyToken), since a
  module imported on first use moves memory, it does not save it;
- **SIGTERM to exit**: how long the drain of an idle server takes.

Each checkout's ``sidecar/`` is byte-compiled first, as the image is
(``compileall`` at build time, ``PYTHONDONTWRITEBYTECODE=1`` at run time);
``--no-compile`` measures what a checkout without ``__pycache__`` pays.

Figures are medians over ``--runs`` runs, with the spread (min-max). With
``--b-root`` (or ``--b-arg``) two checkouts are measured in turns (A B B A ...) so both see the
same drift of the host. ``--importtime N`` adds where start-up spends its import
time: ``python -X importtime -m sidecar serve`` until SERVING, the self times
summed per top-level package, medians of N runs.

    python bench/startup.py                               # this checkout, 15 runs
    git worktree add /tmp/old HEAD~3
    python bench/startup.py --a-root /tmp/old --b-root . --importtime 3  # an older commit against this one
    python bench/startup.py --b-arg=--call-path=stock

Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import grpc  # noqa: E402
import procstat  # noqa: E402  (bench modules beside this file)
import run  # noqa: E402

from sidecar.transport.client import health_status  # noqa: E402
from sidecar.v1 import identity_pb2 as pb  # noqa: E402
from sidecar.v1 import identity_pb2_grpc as pb_grpc  # noqa: E402


@dataclass
class Side:
    """One checkout (and flags) under test, and what its runs measured."""

    label: str
    root: Path
    args: list[str]
    serving_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    rss_rest_mib: list[float] = field(default_factory=list)
    #: The anonymous part of it (the rest is file-backed: shared-library pages, shared by every process mapping them).
    rss_anon_rest_mib: list[float] = field(default_factory=list)
    rss_after_calls_mib: list[float] = field(default_factory=list)
    peak_rss_mib: list[float] = field(default_factory=list)
    stop_s: list[float] = field(default_factory=list)


def serve_command(side: Side, keydir: Path, tcp: str, workers: str, python: list[str]) -> list[str]:
    return [*python, "-m", "sidecar", "serve", "--key-file", str(keydir / "private.pem"),
            "--uuid-salt", "someString", "--listen", tcp, "--workers", workers,
            "--metrics-addr", f"127.0.0.1:{run.free_port()}", "--grace", "5s", "--log-level", "WARNING",
            *side.args]


def clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONPATH"] = str(root)
    return env


def wait_serving(tcp: str, proc: subprocess.Popen[bytes], probe: float, timeout: float) -> None:
    """Return once ``tcp`` answers SERVING (fails if the process exits or ``timeout`` passes)."""
    host, _, port = tcp.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:  # a refused connect costs the probe almost nothing, a gRPC channel does not
        if proc.poll() is not None:
            raise SystemExit(f"sidecar exited with {proc.returncode} before listening")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listening on {tcp} after {timeout}s")
        time.sleep(probe)
    while health_status(tcp, timeout=1) != "SERVING":
        if proc.poll() is not None:
            raise SystemExit(f"sidecar exited with {proc.returncode} before SERVING")
        if time.monotonic() > deadline:
            raise SystemExit(f"{tcp} not SERVING after {timeout}s")
        time.sleep(probe)


def some_calls(tcp: str, calls: int) -> None:
    """``calls`` calls of each use case: every code path a real pod reaches in its first seconds."""
    with grpc.insecure_channel(tcp) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        jwt = ""
        for n in range(calls):
            uuid = f"00000000-0000-4000-8000-{n:012x}"
            jwt = stub.IssueToken(pb.IssueTokenRequest(email=f"u{n}@startup.example", uuid=uuid), timeout=10).token.jwt
            stub.ResolveIdentity(pb.ResolveIdentityRequest(email=f"u{n}@startup.example"), timeout=10)
            stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=10)
            stub.VerifyToken(pb.VerifyTokenRequest(jwt=jwt), timeout=10)


def one_run(side: Side, keydir: Path, a: argparse.Namespace, log: Path) -> None:
    tcp = f"127.0.0.1:{run.free_port()}"
    cmd = serve_command(side, keydir, tcp, a.workers, [sys.executable])
    with log.open("ab") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=clean_env(side.root), cwd=side.root, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_serving(tcp, proc, a.probe_ms / 1e3, a.timeout)
        side.serving_s.append(time.monotonic() - t0)
        side.cpu_s.append(procstat.cpu_seconds(proc.pid))
        time.sleep(a.settle)
        side.rss_rest_mib.append(procstat.rss_mib(proc.pid))
        side.rss_anon_rest_mib.append(procstat.anon_mib(proc.pid))
        if a.calls:
            some_calls(tcp, a.calls)
            time.sleep(a.settle)
        side.rss_after_calls_mib.append(procstat.rss_mib(proc.pid))
        side.peak_rss_mib.append(procstat.peak_rss_mib(proc.pid))
    finally:
        t1 = time.monotonic()
        code = run.stop(proc)
        side.stop_s.append(time.monotonic() - t1)
    if code != 0:
        raise SystemExit(f"{side.label}: sidecar exited with {code} (see {log})")


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def import_breakdown(side: Side, keydir: Path, a: argparse.Namespace, work: Path) -> dict[str, object]:
    """One ``-X importtime`` run of ``sidecar serve`` until SERVING: self time per top-level package."""
    tcp = f"127.0.0.1:{run.free_port()}"
    log = work / f"{side.label}-importtime.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(serve_command(side, keydir, tcp, a.workers, [sys.executable, "-X", "importtime"]),
                                env=clean_env(side.root), cwd=side.root, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_serving(tcp, proc, a.probe_ms / 1e3, a.timeout)
        lines = log.read_text().splitlines()  # what was imported by the time it answered SERVING
    finally:
        run.stop(proc)
    per_package: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for line in lines:
        m = IMPORT_LINE.match(line)
        if not m:
            continue
        parts = m.group(4).split(".")
        top = ".".join(parts[:2]) if parts[0] in ("sidecar", "google", "grpc_health", "grpc_reflection") else parts[0]
        per_package[top] += int(m.group(1))
        counts[top] += 1
    total = sum(per_package.values())
    rows = sorted(per_package.items(), key=lambda kv: -kv[1])
    return {"total_ms": round(total / 1e3, 1), "modules": sum(counts.values()),
            "packages": [{"package": k, "self_ms": round(v / 1e3, 1), "modules": counts[k]} for k, v in rows]}


def median_breakdown(runs: list[dict[str, Any]]) -> dict[str, object]:
    """Per package, the median self time of several :func:`import_breakdown` runs."""
    times: dict[str, list[float]] = defaultdict(list)
    modules: dict[str, int] = {}
    for r in runs:
        for row in r["packages"]:
            times[row["package"]].append(row["self_ms"])
            modules[row["package"]] = row["modules"]
    rows = sorted(((k, statistics.median(v + [0.0] * (len(runs) - len(v)))) for k, v in times.items()),
                  key=lambda kv: -kv[1])
    return {"total_ms": round(statistics.median([r["total_ms"] for r in runs]), 1),
            "modules": statistics.median([r["modules"] for r in runs]), "runs": len(runs),
            "packages": [{"package": k, "self_ms": round(v, 1), "modules": modules[k]} for k, v in rows]}


def spread(xs: list[float], unit: str, digits: int) -> str:
    if not xs:
        return "n/a"
    return (f"{statistics.median(xs):.{digits}f} {unit} (min {min(xs):.{digits}f}, max {max(xs):.{digits}f})")


def summary(side: Side) -> dict[str, object]:
    def figures(xs: list[float], digits: int) -> dict[str, float]:
        return {"median": round(statistics.median(xs), digits), "min": round(min(xs), digits),
                "max": round(max(xs), digits)} if xs else {}

    return {"label": side.label, "root": str(side.root), "args": side.args, "runs": len(side.serving_s),
            "exec_to_serving_s": figures(side.serving_s, 3), "startup_cpu_s": figures(side.cpu_s, 3),
            "rss_at_rest_mib": figures(side.rss_rest_mib, 1), "rss_anon_at_rest_mib": figures(side.rss_anon_rest_mib, 1),
            "rss_after_calls_mib": figures(side.rss_after_calls_mib, 1),
            "peak_rss_mib": figures(side.peak_rss_mib, 1), "sigterm_to_exit_s": figures(side.stop_s, 3),
            "raw": asdict(side) | {"root": str(side.root)}}


def floor(a: argparse.Namespace) -> dict[str, object]:
    """What the interpreter and the libraries every gRPC sidecar needs cost by themselves."""
    out: dict[str, object] = {}
    probes = {"python -c pass": "pass",
              "import grpc": "import grpc",
              "import grpc, cryptography RSA, protobuf":
                  "import grpc, google.protobuf.message\n"
                  "from cryptography.hazmat.primitives.asymmetric import rsa",
              "... + prometheus_client, grpc_health (all the sidecar serves with)":
                  "import grpc, google.protobuf.message, prometheus_client\n"
                  "from grpc_health.v1 import health\n"
                  "from cryptography.hazmat.primitives.asymmetric import rsa"}
    for name, code in probes.items():
        times, rss = [], []
        for _ in range(a.floor_runs):
            # VmRSS once the imports are done, read inside: ru_maxrss would carry the forking parent's peak
            prog = code + "\nprint(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])"
            t0 = time.monotonic()
            res = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True,
                                 env=clean_env(ROOT))
            times.append(time.monotonic() - t0)
            rss.append(int(res.stdout.split()[-1]) / 1024)
        out[name] = {"wall_s": round(statistics.median(times), 3), "rss_mib": round(statistics.median(rss), 1)}
        print(f"  floor: {name:<40} {statistics.median(times):.3f} s, RSS {statistics.median(rss):.1f} MiB",
              flush=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=15, help="start-ups per side (15)")
    p.add_argument("--a-root", type=Path, default=ROOT, help="checkout whose sidecar is A (this one)")
    p.add_argument("--b-root", type=Path, default=None, help="checkout whose sidecar is B (none: A only)")
    p.add_argument("--a-arg", action="append", default=[], help="`sidecar serve` flag for A (repeatable)")
    p.add_argument("--b-arg", action="append", default=[], help="`sidecar serve` flag for B (repeatable)")
    p.add_argument("--workers", default="1", help="--workers of the sidecar (1)")
    p.add_argument("--probe-ms", type=float, default=2.0, help="probe interval in ms (2)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds at rest before reading RSS (1)")
    p.add_argument("--calls", type=int, default=50, help="calls of each use case before the second RSS reading (50)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a start-up may take before the run fails")
    p.add_argument("--importtime", type=int, default=0, metavar="RUNS",
                   help="also the import time per package: the medians of this many -X importtime runs")
    p.add_argument("--floor-runs", type=int, default=0,
                   help="also time bare imports of python, grpc, cryptography, protobuf this many times")
    p.add_argument("--no-compile", action="store_true",
                   help="do not byte-compile the checkouts first (PYTHONDONTWRITEBYTECODE=1 then compiles every run)")
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sides = [Side("A", a.a_root.resolve(), a.a_arg)]
    if a.b_root is not None or a.b_arg:
        sides.append(Side("B", (a.b_root or ROOT).resolve(), a.b_arg))
    for side in sides:
        if not (side.root / "sidecar" / "__init__.py").is_file():
            raise SystemExit(f"--{side.label.lower()}-root: {side.root} holds no sidecar package")
    if not a.no_compile:  # as the image does (compileall at build): no run pays for compiling the sources
        for side in sides:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(side.root / "sidecar")], check=True)
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    result: dict[str, object] = {"runs": a.runs, "workers": a.workers, "settle_s": a.settle, "calls": a.calls}
    try:
        run.make_key(work)
        (work / "private.pem").chmod(0o600)
        for side in sides:  # one start-up each, not measured: the page cache holds the code afterwards
            one_run(side, work, argparse.Namespace(**(vars(a) | {"calls": 0, "settle": 0})), work / "serve.log")
            for xs in (side.serving_s, side.cpu_s, side.rss_rest_mib, side.rss_anon_rest_mib, side.rss_after_calls_mib,
                       side.peak_rss_mib, side.stop_s):
                xs.clear()
        for n in range(a.runs):
            for side in sides if n % 2 == 0 else sides[::-1]:
                one_run(side, work, a, work / "serve.log")
        result["sides"] = [summary(s) for s in sides]
        for side in sides:
            flags = " ".join(side.args) or "(defaults)"
            where = "" if side.root == ROOT else f" from {side.root}"
            print(f"{side.label}: sidecar serve --workers {a.workers} {flags}{where}, {len(side.serving_s)} runs, "
                  f"medians (min, max):")
            print(f"  exec to SERVING      {spread(side.serving_s, 's', 3)}")
            print(f"  start-up CPU         {spread(side.cpu_s, 's', 3)}")
            print(f"  RSS at rest          {spread(side.rss_rest_mib, 'MiB', 1)}")
            print(f"    of which anonymous {spread(side.rss_anon_rest_mib, 'MiB', 1)}")
            print(f"  RSS after {a.calls:>3} calls  {spread(side.rss_after_calls_mib, 'MiB', 1)}")
            print(f"  peak RSS             {spread(side.peak_rss_mib, 'MiB', 1)}")
            print(f"  SIGTERM to exit      {spread(side.stop_s, 's', 3)}", flush=True)
        if len(sides) == 2:
            d = [x - y for x, y in zip(sides[0].serving_s, sides[1].serving_s, strict=True)]
            print(f"A - B exec to SERVING per pair: median {statistics.median(d) * 1e3:+.0f} ms; "
                  f"B faster in {sum(x > 0 for x in d)} of {len(d)} pairs")
        if a.importtime:
            result["importtime"] = {}
            runs: dict[str, list[dict[str, Any]]] = {side.label: [] for side in sides}
            for n in range(a.importtime):  # in turns too
                for side in sides if n % 2 == 0 else sides[::-1]:
                    runs[side.label].append(import_breakdown(side, work, a, work))
            for side in sides:
                bd = median_breakdown(runs[side.label])
                result["importtime"][side.label] = bd  # type: ignore[index]
                print(f"{side.label}: -X importtime, sidecar serve until SERVING: {bd['total_ms']} ms in "
                      f"{bd['modules']} modules (self time per package, top 15; medians of {bd['runs']} runs):")
                for row in bd["packages"][:15]:  # type: ignore[index]
                    print(f"  {row['package']:<32} {row['self_ms']:>7.1f} ms  {row['modules']:>4} modules")
        if a.floor_runs:
            result["floor"] = floor(a)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
