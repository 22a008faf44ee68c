"""Where the sidecar's server CPU per call goes, one part at a time, on its own fast call path.

Starts, all at once, the floors of ``bench/peers/floor/server.py`` (a fixed
answer; then the sidecar's servicer and use cases; then its RPC metrics; its
admission guards; its bound on calls waiting for their message; its channel
arguments) and a real ``sidecar serve`` (development mode, its defaults), and
drives them in turns (order reversed every round, so all see the same drift of
the shared host), ``--rounds`` rounds of ``--duration`` seconds, with the same
load generator as ``bench/run.py`` (TCP, one channel, 64 calls in flight). It
prints each step's median server CPU per call (user + system from /proc, in µs
and in openssl signatures timed beside the run), and what the step added. With
``--repeated`` every call is the same identity (token cache hits); without it,
every call signs and the ``sign`` floor (a signature and nothing else) is
measured too. Nothing here asserts a speed.

    python bench/ladder.py --repeated          # cache hits
    python bench/ladder.py                     # fresh tokens
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402  (bench modules beside this file)
import peerproc  # noqa: E402
import run  # noqa: E402

#: The steps, in order: floor modes, then the real server.
STEPS = ("answer", "servicer", "metrics", "guards", "pending", "options", "sidecar serve")
WHAT = {"answer": "fast path, fixed answer", "sign": "fast path, a signature and nothing else",
        "servicer": "+ servicer and use cases (validation, cache, token metrics, audit)",
        "metrics": "+ RPC metrics", "guards": "+ admission guards", "pending": "+ pending-call bound",
        "options": "+ channel arguments", "sidecar serve": "the real server (health, self-check, /metrics)"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeated", action="store_true", help="one identity: token cache hits")
    p.add_argument("--rounds", type=int, default=8, help="rounds per step (8)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per round (2)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (64)")
    a = p.parse_args(argv)
    steps = list(STEPS) if a.repeated else ["answer", "sign", *STEPS[1:]]
    keydir = Path(tempfile.mkdtemp(prefix="ladder-"))
    run.make_key(keydir)
    log = keydir / "servers.log"
    cpu: dict[str, list[float]] = {s: [] for s in steps}
    units: list[float] = []
    try:
        with ExitStack() as stack:
            targets: dict[str, tuple[int, str]] = {}
            for step in steps:
                if step == "sidecar serve":
                    proc, tcp, _unix = stack.enter_context(run.sidecar(keydir, "1", [], log))
                    targets[step] = (proc.pid, tcp)
                else:
                    cmd = peerproc.prepare(f"floor-{step}", keydir)
                    peer, addr = stack.enter_context(peerproc.serve(cmd, keydir / "private.pem", log))
                    targets[step] = (peer.pid, addr)
            start = 0
            for _pid, addr in targets.values():  # warm-up
                res = asyncio.run(loadgen.grpc_load(addr, concurrency=a.concurrency, duration=1.0, channels=1,
                                                    repeated=a.repeated, start_at=10**9 + start))
                start += res.calls + res.errors
            for n in range(a.rounds):
                units.append(1e6 / run.openssl_speed(1, None))
                for step in (steps if n % 2 == 0 else steps[::-1]):
                    pid, addr = targets[step]
                    cpu_us, res = loadgen.server_cpu_per_call(pid, addr, concurrency=a.concurrency, duration=a.duration,
                                                              channels=1, repeated=a.repeated, start_at=start)
                    start += res.calls + res.errors
                    if res.errors:
                        raise SystemExit(f"{step}: {res.errors} failed calls, first: {res.first_error}")
                    cpu[step].append(cpu_us)
    finally:
        shutil.rmtree(keydir, ignore_errors=True)
    unit = statistics.median(units)
    print(f"{'cache hits' if a.repeated else 'fresh tokens'}, {a.rounds} rounds of {a.duration:g} s per step; "
          f"1 openssl signature = {unit:.0f} us (median of {len(units)}, {min(units):.0f}-{max(units):.0f})")
    print("| step | server CPU per call, µs (median) | signatures | added, µs | rounds, µs |")
    print("|---|---|---|---|---|")
    before: float | None = None
    for step in steps:
        med = statistics.median(cpu[step])
        added = "" if before is None else f"{med - before:+.0f}"
        spread = f"{min(cpu[step]):.0f}-{max(cpu[step]):.0f}"
        print(f"| {WHAT[step]} | {med:.0f} | {med / unit:.2f} | {added} | {spread} |")
        before = med
    return 0


if __name__ == "__main__":
    sys.exit(main())
