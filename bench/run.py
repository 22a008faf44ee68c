"""The sidecar's benchmark beside the physical limit: RSA-2048 signing as openssl does it.

One run measures, in this order:

1. ``openssl speed -seconds N rsa2048`` on one core (``--rounds`` times; the
   median is the unit) and ``-multi <cores>`` on all;
2. a real ``sidecar serve`` process (``--workers 1`` by default, the product's
   default: its fast call path signs on every core) driven by a bounded
   grpc.aio load generator over TCP and over the Unix socket, with unique
   identities (every call signs) and one repeated identity (token cache);
   then another with the Connect listener (``--http-listen``) driven the same
   way over HTTP/1.1 JSON (aiohttp) on TCP and its Unix socket (``connect``);
3. one caller, one call at a time, over the Unix socket: the latency one login sees
   (``--rounds`` runs of ``--latency-calls`` calls; the median of their p50s and p99s);
4. the peers, the services a team would write instead (``bench/peers``, started by
   ``bench/peerproc.py``): Node (``@grpc/grpc-js`` + ``jsonwebtoken``) and Go (``grpc-go``
   + ``golang-jwt``), same proto, same claims, key parsed once, each its own process under
   the same gRPC load (TCP, unique identities); a missing ``node`` or ``go`` stops the run
   (``--skip node,go`` leaves them out); and the floors under the sidecar
   (``bench/peers/floor``): its own fast call path answering a fixed response, and
   signing a token and nothing else (``--skip floor``);
5. the seeds' Flask app (PEM text parsed on every call) and the same app with the
   key parsed once, both under gunicorn with one worker per core, same concurrency;
6. RSS flatness: a fresh sidecar issuing unique tokens with the cache on, RSS
   read after the first and the second count (``--rss-counts``).

It prints a table, and writes ``results.json`` and ``results.png`` to ``--out``.
Server CPU per token is user+system of the server and all its workers (from
/proc) divided by tokens, in microseconds and in units of one openssl
single-core RSA-2048 signature. That unit is timed right beside the figure it
divides: ``openssl speed -seconds 1`` (``--openssl-beside``) runs just before
every measured round, because the shared host's speed drifts by 10-20 % within
minutes and a unit timed at the start of the run would carry that drift into
every ratio. Every scenario runs ``--rounds`` times back to back and each
figure is the median of its rounds (the rounds, with their units, are in
results.json). Nothing here asserts a speed.

    python bench/run.py                       # the full run (~2-3 min)
    python bench/run.py --smoke               # seconds: CI's check that it runs
    python bench/run.py --rss-counts 100000,1000000   # the issue's RSS figure (~10 min more)
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import loadgen  # noqa: E402  (bench modules beside this file)
import peerproc  # noqa: E402
import procstat  # noqa: E402


@dataclass
class Row:
    """One line of the table."""

    name: str
    server: str
    transport: str
    identities: str
    concurrency: int
    tokens: int
    errors: int
    seconds: float
    tokens_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    cpu_per_token_sigs: float
    cpu_per_token_us: float
    peak_rss_mib: float
    vs_openssl_1core: float
    vs_openssl_all: float
    first_error: str = ""
    #: Each round's own figures (the row holds their medians).
    rounds: list[dict[str, float | None]] = field(default_factory=list)


# --- openssl ---------------------------------------------------------------------------------

OPENSSL_LINE = re.compile(r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", re.MULTILINE)


def openssl_speed(seconds: int, multi: int | None) -> float:
    """RSA-2048 signatures per second (openssl divides by CPU user time unless -elapsed)."""
    cmd = ["openssl", "speed", "-seconds", str(seconds)]
    if multi:
        cmd += ["-multi", str(multi)]
    out = subprocess.run([*cmd, "rsa2048"], capture_output=True, text=True, check=True).stdout
    m = OPENSSL_LINE.search(out)
    if not m:
        raise SystemExit(f"cannot read `{' '.join(cmd)} rsa2048` output:\n{out}")
    return float(m.group(1))


# --- processes ---------------------------------------------------------------------------------


def make_key(keydir: Path) -> None:
    """``keydir/private.pem``: a throw-away RSA-2048 key, made by the openssl CLI as the guide does."""
    subprocess.run(["openssl", "genpkey", "-out", "private.pem", "-algorithm", "RSA",
                    "-pkeyopt", "rsa_keygen_bits:2048"], cwd=keydir, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


def wait_grpc(addr: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    from sidecar.transport.client import health_status

    deadline = time.monotonic() + timeout
    while health_status(addr, timeout=0.5) != "SERVING":
        if proc.poll() is not None:
            raise SystemExit(f"sidecar exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"sidecar at {addr} not SERVING after {timeout}s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextmanager
def sidecar(keydir: Path, workers: str, extra: list[str], log: Path,
            root: Path = ROOT, http: bool = False) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """A real ``sidecar serve`` on 127.0.0.1:<free> and a Unix socket (the code under ``root``).

    With ``http``, its Connect listener serves too, and the two addresses yielded are the Connect
    listener's (``127.0.0.1:<free>``, ``unix://.../h.sock``)."""
    port = free_port()
    sock = Path(tempfile.mkdtemp(prefix="scb-", dir="/tmp")) / "s.sock"
    tcp, unix = f"127.0.0.1:{port}", f"unix://{sock}"
    http_tcp, http_unix = f"127.0.0.1:{free_port()}", f"unix://{sock.parent / 'h.sock'}"
    if http:
        extra = [*extra, "--http-listen", f"{http_tcp},{http_unix}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONPATH"] = str(root)
    cmd = [sys.executable, "-m", "sidecar", "serve", "--key-file", str(keydir / "private.pem"),
           "--uuid-salt", "someString", "--listen", f"{tcp},{unix}", "--workers", workers,
           "--metrics-addr", f"127.0.0.1:{free_port()}", "--grace", "5s", "--log-level", "WARNING", *extra]
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_grpc(tcp, proc)
        wait_grpc(unix, proc)
        if http:
            wait_http(int(http_tcp.rpartition(":")[2]), proc)
            yield proc, http_tcp, http_unix
        else:
            yield proc, tcp, unix
    finally:
        code = stop(proc)
        shutil.rmtree(sock.parent, ignore_errors=True)
        if code != 0:
            print(f"warning: sidecar exited with {code} (see {log})", file=sys.stderr)


@contextmanager
def gunicorn(module: str, keydir: Path, workers: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """One of the Flask apps under gunicorn, one sync worker per core."""
    port = free_port()
    exe = Path(sys.executable).with_name("gunicorn")
    cmd = [str(exe), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--chdir", str(keydir),
           "--pythonpath", str(HERE), "--timeout", "120", "--log-level", "warning", f"{module}:app"]
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_http(port, proc)
        yield proc, port
    finally:
        stop(proc)


# --- measuring ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, sig1: float, sig_all: float) -> None:
        self.args = args
        self.sig1 = sig1
        self.sig_all = sig_all
        self.rows: list[Row] = []
        self._next_id = 0

    def ids(self) -> int:
        """A fresh range of identity numbers, so no run hits tokens cached by another."""
        self._next_id += 10**8
        return self._next_id

    def measure(self, name: str, server: str, transport: str, identities: str, pid: int,
                run: Callable[[], Coroutine[Any, Any, loadgen.Result]]) -> Row:
        """``--rounds`` back-to-back runs of ``run()``; every figure of the row is their median."""
        rounds = []
        units = []  # the openssl single-core rate right before each round: that round's unit
        for _ in range(self.args.rounds):
            units.append(openssl_speed(self.args.openssl_beside, None) if self.args.openssl_beside else self.sig1)
            cpu0 = procstat.cpu_seconds(pid)
            res = asyncio.run(run())
            rounds.append((res, procstat.cpu_seconds(pid) - cpu0))
        med = statistics.median
        sigs = [cpu * unit / res.calls if res.calls else None for (res, cpu), unit in zip(rounds, units, strict=True)]
        done = [(res, cpu) for res, cpu in rounds if res.calls]
        rate = med([res.rate for res, _ in rounds])
        row = Row(name=name, server=server, transport=transport, identities=identities,
                  concurrency=self.args.concurrency, tokens=sum(r.calls for r, _ in rounds),
                  errors=sum(r.errors for r, _ in rounds), seconds=round(sum(r.seconds for r, _ in rounds), 3),
                  tokens_per_s=round(rate, 1),
                  p50_ms=round(med([r.percentile(50) for r, _ in done]) * 1e3, 2) if done else float("nan"),
                  p99_ms=round(med([r.percentile(99) for r, _ in done]) * 1e3, 2) if done else float("nan"),
                  server_cpu_s=round(sum(cpu for _, cpu in rounds), 3),
                  cpu_per_token_sigs=round(med([x for x in sigs if x is not None]), 3) if done else float("nan"),
                  cpu_per_token_us=round(med([cpu / r.calls * 1e6 for r, cpu in done]), 1) if done else float("nan"),
                  peak_rss_mib=round(procstat.peak_rss_mib(pid), 1),
                  vs_openssl_1core=round(rate / self.sig1, 3), vs_openssl_all=round(rate / self.sig_all, 3),
                  first_error=next((r.first_error for r, _ in rounds if r.first_error), ""),
                  rounds=[{"tokens_per_s": round(r.rate, 1),
                           "cpu_per_token_sigs": round(x, 3) if x is not None else None,
                           "cpu_per_token_us": round(cpu / r.calls * 1e6, 1) if r.calls else None,
                           "openssl_1core_sign_per_s": unit}
                          for (r, cpu), x, unit in zip(rounds, sigs, units, strict=True)])
        self.rows.append(row)
        per_round = ", ".join(f"{x['cpu_per_token_sigs']}" for x in row.rounds)
        print(f"  {name:<34} {row.tokens_per_s:>8.0f} tok/s  p99 {row.p99_ms:>7.2f} ms  "
              f"cpu/token {row.cpu_per_token_sigs:>5.2f} sig ({per_round})  errors {row.errors}", flush=True)
        return row

    def grpc(self, name: str, pid: int, target: str, transport: str, repeated: bool, concurrency: int | None = None,
             channels: int | None = None, server: str = "sidecar") -> Row:
        a = self.args
        conc = concurrency or a.concurrency
        chans = channels or a.channels
        warm = asyncio.run(loadgen.grpc_load(target, concurrency=conc, duration=a.warmup, channels=chans,
                                             repeated=repeated, start_at=self.ids()))
        if warm.errors and not warm.calls:
            print(f"  warm-up of {name} failed: {warm.first_error}", file=sys.stderr)
        def run() -> Coroutine[Any, Any, loadgen.Result]:
            return loadgen.grpc_load(target, concurrency=conc, duration=a.duration, channels=chans,
                                     repeated=repeated, start_at=self.ids())

        return self.measure(name, server, transport, "repeated" if repeated else "unique", pid, run)


def run_sidecar(b: Bench, keydir: Path, log: Path) -> dict[str, object]:
    a = b.args
    extra: dict[str, object] = {}
    chans = "1 client channel" if a.channels == 1 else f"{a.channels} client channels"
    print(f"sidecar serve {' '.join(['--workers', a.workers, *a.sidecar_arg])} ({chans})", flush=True)
    with sidecar(keydir, a.workers, a.sidecar_arg, log) as (proc, tcp, unix):
        extra["workers"] = len(procstat.descendants(proc.pid)) - (1 if a.workers not in ("1",) else 0)
        b.grpc("sidecar TCP, unique", proc.pid, tcp, "tcp", repeated=False)
        b.grpc("sidecar TCP, repeated (cache)", proc.pid, tcp, "tcp", repeated=True)
        b.grpc("sidecar Unix, unique", proc.pid, unix, "unix", repeated=False)
        b.grpc("sidecar Unix, repeated (cache)", proc.pid, unix, "unix", repeated=True)
        lat = extra["one_caller_unix"] = one_caller(unix, a)
        print(f"  one caller over Unix socket: {lat['calls']} calls, p50 {lat['p50_ms']} ms, "
              f"p99 {lat['p99_ms']} ms", flush=True)
    return extra


def run_connect(b: Bench, keydir: Path, log: Path) -> None:
    """The same IssueToken load over the Connect listener: JSON over HTTP/1.1, TCP and Unix socket."""
    a = b.args
    print(f"sidecar serve {' '.join(['--workers', a.workers, *a.sidecar_arg])} --http-listen (Connect, JSON, "
          f"HTTP/1.1, {a.concurrency} connections)", flush=True)
    with sidecar(keydir, a.workers, a.sidecar_arg, log, http=True) as (proc, tcp, unix):
        for target, transport in ((tcp, "tcp"), (unix, "unix")):
            for repeated in (False, True):
                asyncio.run(loadgen.connect_load(target, concurrency=a.concurrency, duration=a.warmup,
                                                 repeated=repeated, start_at=b.ids()))
                name = f"Connect {'TCP' if transport == 'tcp' else 'Unix'}, {'repeated (cache)' if repeated else 'unique'}"

                def run(target: str = target, repeated: bool = repeated) -> Coroutine[Any, Any, loadgen.Result]:
                    return loadgen.connect_load(target, concurrency=a.concurrency, duration=a.duration,
                                                repeated=repeated, start_at=b.ids())

                b.measure(name, "sidecar", f"connect-{transport}", "repeated" if repeated else "unique", proc.pid, run)


#: The peers' rows, by ``--skip`` name.
PEER_ROWS = {"node": "Node peer TCP, unique", "go": "Go peer TCP, unique",
             "floor-answer": "floor TCP: fast path, fixed answer", "floor-sign": "floor TCP: fast path, sign only"}
#: The peers a team would write instead (the issue's ratios); the rest are floors under the sidecar.
TEAM_PEERS = ("node", "go")


def prepare_peers(a: argparse.Namespace, workdir: Path) -> dict[str, list[str]]:
    """Install/build the peers not skipped, before anything is measured: a missing toolchain stops the run."""
    cmds = {}
    for kind in PEER_ROWS:
        if kind in a.skip or (kind.startswith("floor-") and "floor" in a.skip):
            continue
        try:
            cmds[kind] = peerproc.prepare(kind, workdir)
        except peerproc.PeerUnavailable as exc:
            raise SystemExit(f"bench/run.py: the {kind} peer: {exc}\n(`--skip {kind}` leaves it out of the run)") from exc
    return cmds


def one_caller(target: str, a: argparse.Namespace) -> dict[str, object]:
    """One blocking caller over ``target``, ``--rounds`` times ``--latency-calls`` calls: the median
    over the rounds of each round's p50 and p99 (in ms; the rounds are kept), and the largest call."""
    rounds = [loadgen.one_caller(target, a.latency_calls, a.duration * 2, start_at=n * a.latency_calls)
              for n in range(a.rounds)]  # identities of their own per round: each call signs
    p50 = [round(r.percentile(50) * 1e3, 3) for r in rounds]
    p99 = [round(r.percentile(99) * 1e3, 3) for r in rounds]
    return {"calls": sum(r.calls for r in rounds), "p50_ms": statistics.median(p50),
            "p99_ms": statistics.median(p99), "rounds_p50_ms": p50, "rounds_p99_ms": p99,
            "max_ms": round(max(max(r.latencies, default=0.0) for r in rounds) * 1e3, 3)}


def run_peers(b: Bench, cmds: dict[str, list[str]], keydir: Path, log: Path) -> dict[str, object]:
    """Each peer as its own process, under the sidecar's gRPC load: TCP, unique identities, its channels.
    The floors also get the one-caller latency run over a Unix socket, as the sidecar does."""
    extra: dict[str, object] = {}
    for kind, cmd in cmds.items():
        print(f"peer {peerproc.DESCRIPTION[kind]} ({' '.join(Path(c).name for c in cmd)})", flush=True)
        with peerproc.serve(cmd, keydir / "private.pem", log) as (proc, addr):
            b.grpc(PEER_ROWS[kind], proc.pid, addr, "tcp", repeated=False,
                   server=peerproc.DESCRIPTION[kind])
        if kind.startswith("floor-"):
            sock = f"unix://{keydir / (kind + '.sock')}"
            with peerproc.serve(cmd, keydir / "private.pem", log, listen=sock) as (_proc, addr):
                extra[f"one_caller_unix_{kind}"] = lat = one_caller(addr, b.args)
            print(f"  one caller over Unix socket: {lat['calls']} calls, p50 {lat['p50_ms']} ms, "
                  f"p99 {lat['p99_ms']} ms", flush=True)
    return extra


def run_flask(b: Bench, keydir: Path, log: Path) -> None:
    a = b.args
    for module, name in (("preloaded_app", "Flask, key preloaded"), ("seed_app", "Flask seed (PEM per call)")):
        print(f"gunicorn -w {a.cores} {module}:app", flush=True)
        with gunicorn(module, keydir, a.cores, log) as (proc, port):
            url = f"http://127.0.0.1:{port}/generate-jwt"
            asyncio.run(loadgen.http_load(url, concurrency=a.concurrency, duration=min(a.warmup, 1.0), repeated=False))
            b.measure(name, "gunicorn+flask", "http", "unique", proc.pid,
                      lambda url=url: loadgen.http_load(url, concurrency=a.concurrency, duration=a.duration,  # type: ignore[misc]
                                                        repeated=False))


def run_rss(b: Bench, keydir: Path, log: Path) -> dict[str, object]:
    a = b.args
    first, second = a.rss_counts
    out: dict[str, object] = {"counts": [first, second], "cache_size": a.rss_cache_size}
    print(f"RSS flatness: {first} then {second} unique tokens, cache size {a.rss_cache_size}", flush=True)
    cache_args = ["--token-cache-size", str(a.rss_cache_size)]
    with sidecar(keydir, a.workers, [*cache_args, *a.sidecar_arg], log) as (proc, tcp, _unix):
        issued, points, start = 0, [], 0
        for target_count in (first, second):
            res = asyncio.run(loadgen.grpc_load(tcp, concurrency=a.concurrency, duration=a.rss_timeout,
                                                channels=a.channels, repeated=False,
                                                max_calls=target_count - issued, start_at=start))
            issued += res.calls
            start += res.calls + res.errors
            points.append({"issued": issued, "rss_mib": round(procstat.rss_mib(proc.pid), 1),
                           "peak_rss_mib": round(procstat.peak_rss_mib(proc.pid), 1)})
            print(f"  after {issued} tokens: RSS {points[-1]['rss_mib']} MiB, peak {points[-1]['peak_rss_mib']} MiB",
                  flush=True)
        out["points"] = points
        p0, p1 = points[0]["peak_rss_mib"], points[1]["peak_rss_mib"]
        out["peak_growth"] = round(p1 / p0 - 1, 4) if p0 else None
    return out


# --- output ------------------------------------------------------------------------------------


def table(rows: list[Row], sig1: float, sig_all: float, cores: int) -> str:
    head = (f"openssl speed rsa2048: {sig1:,.0f} sign/s on 1 core (1 signature = {1e6 / sig1:.0f} us CPU), "
            f"{sig_all:,.0f} sign/s with -multi {cores}; CPU/token (sig) is in the openssl 1-core signatures "
            f"timed right before each round\n")
    cols = ("scenario", "tokens/s", "x openssl 1c", f"x openssl {cores}c", "p50 ms", "p99 ms",
            "CPU/token (sig)", "CPU/token us", "peak RSS MiB", "errors")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.tokens_per_s:,.0f} | {r.vs_openssl_1core:.2f} | {r.vs_openssl_all:.2f} | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_per_token_sigs:.2f} | {r.cpu_per_token_us:.0f} | "
                     f"{r.peak_rss_mib:.0f} | "
                     f"{r.errors} |")
    return head + "\n".join(lines)


def ratios(rows: list[Row]) -> dict[str, float]:
    by = {r.name: r for r in rows}
    out: dict[str, float] = {}
    fresh = by.get("sidecar TCP, unique")
    # CPU per token: how many times the sidecar's the peer spends (the targets: >= 1.5 Node, >= 3 Go).
    for kind in TEAM_PEERS:
        other = PEER_ROWS[kind]
        if fresh and other in by and fresh.cpu_per_token_sigs:
            out[f"{kind}_cpu_per_token_over_sidecar"] = round(by[other].cpu_per_token_sigs / fresh.cpu_per_token_sigs, 2)
    for other, key in (("Flask, key preloaded", "sidecar_vs_flask_preloaded"),
                       ("Flask seed (PEM per call)", "sidecar_vs_flask_seed")):
        if fresh and other in by and by[other].tokens_per_s:
            out[key] = round(fresh.tokens_per_s / by[other].tokens_per_s, 2)
    return out


def chart(rows: list[Row], sig1: float, sig_all: float, cores: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    ax1.barh(names, [r.tokens_per_s for r in rows], color="tab:blue")
    ax1.axvline(sig1, color="tab:red", ls="--", label=f"openssl 1 core ({sig1:,.0f}/s)")
    ax1.axvline(sig_all, color="tab:red", ls=":", label=f"openssl -multi {cores} ({sig_all:,.0f}/s)")
    ax1.set_xscale("log")
    ax1.set_xlabel("tokens/s (log)")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.invert_yaxis()
    ax2.barh(names, [r.cpu_per_token_sigs for r in rows], color="tab:green")
    ax2.axvline(1.0, color="tab:red", ls="--", label="one RSA-2048 signature")
    ax2.set_xscale("log")
    ax2.set_xlabel("server CPU per token, in openssl 1-core signatures (log)")
    ax2.legend(loc="lower right", fontsize=8)
    ax2.invert_yaxis()
    ax2.set_yticklabels([])
    fig.suptitle("Synerise token issuance vs the RSA-2048 limit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of measured load per round (5)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measured rounds per scenario and openssl runs; figures are their medians (3)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each (2)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (64)")
    p.add_argument("--channels", type=int, default=None,
                   help="gRPC channels, each its own connection (default: 1, as a backend calls its sidecar, "
                        "or 4 per worker with --workers, so SO_REUSEPORT spreads them)")
    p.add_argument("--workers", default="1", help="sidecar --workers (1, the default: one process whose fast "
                   "call path runs a thread per core; auto: one process per core)")
    p.add_argument("--sidecar-arg", action="append", default=[], help="extra `sidecar serve` argument (repeatable)")
    p.add_argument("--openssl-seconds", type=int, default=3, help="openssl speed -seconds (3)")
    p.add_argument("--openssl-beside", type=int, default=1,
                   help="openssl speed -seconds run right before every measured round; that round's CPU per "
                        "token is in its signatures (1; 0: the start-of-run median for every round)")
    p.add_argument("--latency-calls", type=int, default=3000, help="calls of the one-caller latency run (3000)")
    p.add_argument("--rss-counts", default="20000,100000",
                   help="tokens issued before the two RSS readings (the issue's figure: 100000,1000000)")
    p.add_argument("--rss-cache-size", type=int, default=100_000, help="--token-cache-size of the RSS run (100000)")
    p.add_argument("--rss-timeout", type=float, default=900, help="give up an RSS leg after this many seconds")
    p.add_argument("--skip", default="",
                   help="comma list of parts to skip: openssl-multi,sidecar,connect,node,go,floor,flask,rss")
    p.add_argument("--out", default=str(HERE / "results"), help="directory for results.json and results.png")
    p.add_argument("--smoke", action="store_true", help="a few seconds in all: checks the bench runs, measures nothing")
    a = p.parse_args(argv)
    if a.smoke:
        a.duration, a.warmup, a.openssl_seconds, a.latency_calls, a.rounds = 1.0, 0.3, 1, 200, 1
        a.concurrency, a.rss_counts, a.rss_timeout = 16, "300,1000", 60
    a.rss_counts = tuple(int(x) for x in a.rss_counts.split(","))
    if len(a.rss_counts) != 2 or not 0 < a.rss_counts[0] < a.rss_counts[1]:
        p.error("--rss-counts: two increasing counts, e.g. 100000,1000000")
    a.skip = set(filter(None, a.skip.split(",")))
    a.cores = cores
    if a.channels is None:
        a.channels = channels_for(a.workers, cores)
    return a


def channels_for(workers: str, cores: int) -> int:
    """One channel for one process (what a backend holds); four per pre-forked worker, which
    SO_REUSEPORT spreads by connection.

    >>> channels_for("1", 2), channels_for("2", 2), channels_for("auto", 2)
    (1, 8, 8)
    """
    n = cores if workers == "auto" else int(workers)
    return 1 if n == 1 else 4 * n


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "servers.log"
    log.write_bytes(b"")
    keydir = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    results: dict[str, object] = {}
    try:
        peer_cmds = prepare_peers(a, keydir)  # first: a missing node or go stops the run before it starts
        loadavg = os.getloadavg()
        print(f"{a.cores} cores, load average {loadavg[0]:.2f} at start", flush=True)
        ones = [openssl_speed(a.openssl_seconds, None) for _ in range(a.rounds)]
        sig1 = statistics.median(ones)
        sig_all = sig1 * a.cores if "openssl-multi" in a.skip else openssl_speed(a.openssl_seconds, a.cores)
        print(f"openssl rsa2048 sign/s: 1 core {sig1:,.0f} (median of {', '.join(f'{x:,.0f}' for x in ones)}), "
              f"-multi {a.cores} {sig_all:,.0f}", flush=True)
        b = Bench(a, sig1, sig_all)
        make_key(keydir)
        if "sidecar" not in a.skip:
            results["sidecar"] = run_sidecar(b, keydir, log)
        if "connect" not in a.skip:
            run_connect(b, keydir, log)
        results["peers"] = run_peers(b, peer_cmds, keydir, log)
        if "flask" not in a.skip:
            run_flask(b, keydir, log)
        if "rss" not in a.skip:
            results["rss"] = run_rss(b, keydir, log)
    finally:
        shutil.rmtree(keydir, ignore_errors=True)
    text = table(b.rows, sig1, sig_all, a.cores)
    print()
    print(text)
    r = ratios(b.rows)
    sig_ms = 1e3 / sig1
    print()
    for name, part, key in (("sidecar", "sidecar", "one_caller_unix"),
                            ("floor, sign only", "peers", "one_caller_unix_floor-sign"),
                            ("floor, fixed answer", "peers", "one_caller_unix_floor-answer")):
        got = results.get(part, {})
        if isinstance(got, dict) and key in got:
            lat = got[key]
            print(f"one caller over the Unix socket, {name}: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
                  f"({lat['p99_ms'] / sig_ms:.1f} signatures' time)")
    rss = results.get("rss")
    if isinstance(rss, dict) and rss.get("points"):
        pts = rss["points"]
        print(f"peak RSS after {pts[0]['issued']} / {pts[1]['issued']} tokens: {pts[0]['peak_rss_mib']} / "
              f"{pts[1]['peak_rss_mib']} MiB ({100 * rss['peak_growth']:+.1f} %)")
    for k, v in r.items():
        print(f"{k}: {v}x")
    loadavg_end = os.getloadavg()
    doc = {"cores": a.cores, "loadavg_start": loadavg, "loadavg_end": loadavg_end,
           "openssl": {"sign_per_s_1core": sig1, "sign_per_s_1core_runs": ones, "sign_per_s_all": sig_all,
                       "seconds": a.openssl_seconds},
           "settings": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(a).items()},
           "rows": [asdict(row) for row in b.rows], "ratios": r, **results}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    if b.rows:
        chart(b.rows, sig1, sig_all, a.cores, out / "results.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.png'}; load average {loadavg_end[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
