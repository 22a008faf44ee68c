"""Where a call's server CPU goes: user and system time and context switches per call.

A diagnostic beside ``run.py``: it starts one ``sidecar serve`` (any flags after
``--``), drives it as ``run.py`` does, and prints per call the server's user and
system CPU, its voluntary and involuntary context switches (all threads), and
the load generator's own CPU. Several ``--rounds`` show how noisy the machine is.

    python bench/callcost.py                              # fresh tokens, default flags
    python bench/callcost.py --repeated -- --call-path stock
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402  (bench modules beside this file)
import procstat  # noqa: E402
import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=6.0, help="seconds per round (6)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    loadgen.add_load_arguments(p)
    p.add_argument("sidecar_args", nargs="*", help="flags for `sidecar serve` (after --)")
    a = p.parse_args(argv)
    keydir = Path(tempfile.mkdtemp(prefix="callcost-keys-"))
    run.make_key(keydir)
    log = keydir / "servers.log"
    start = 0
    with run.sidecar(keydir, "1", a.sidecar_args, log) as (proc, tcp, unix):
        target = unix if a.unix else tcp
        asyncio.run(loadgen.grpc_load(target, concurrency=a.concurrency, duration=2, channels=a.channels,
                                      repeated=a.repeated, start_at=10**9))
        for n in range(a.rounds):
            (u0, s0), (v0, i0), c0 = procstat.user_system_seconds(proc.pid), procstat.context_switches(proc.pid), os.times()
            res = asyncio.run(loadgen.grpc_load(target, concurrency=a.concurrency, duration=a.duration,
                                                channels=a.channels, repeated=a.repeated, start_at=start))
            (u1, s1), (v1, i1), c1 = procstat.user_system_seconds(proc.pid), procstat.context_switches(proc.pid), os.times()
            start += res.calls + res.errors
            calls = max(1, res.calls)
            client = (c1.user - c0.user) + (c1.system - c0.system)
            print(f"round {n}: {res.rate:,.0f} calls/s, errors {res.errors}; per call: server user "
                  f"{(u1 - u0) / calls * 1e6:.0f} us, system {(s1 - s0) / calls * 1e6:.0f} us, context switches "
                  f"{(v1 - v0) / calls:.2f} voluntary + {(i1 - i0) / calls:.2f} involuntary; "
                  f"load generator {client / calls * 1e6:.0f} us", flush=True)
    shutil.rmtree(keydir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
