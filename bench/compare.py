"""Paired A/B of two sidecars: which one spends less server CPU per call.

On a shared machine the speed of everything drifts by 10-20 % within minutes,
so two configurations measured one after the other differ by the drift as much
as by themselves. This starts both sidecars at once (an idle one costs
nothing) and drives them in turns, ``--rounds`` short rounds each, A then B
then B then A..., so both see the same drift. It prints each side's median
server CPU per call and calls/s, and the median of the per-pair differences
with how many pairs went A's way.

    python bench/compare.py --b-arg=--sched-policy=normal          # this checkout, two settings
    git worktree add /tmp/old HEAD~3
    python bench/compare.py --a-root /tmp/old                      # an older commit against this one
    python bench/compare.py --repeated --b-arg=--token-cache-size=0

Every ``sidecar serve`` flag works in ``--a-arg`` / ``--b-arg`` (repeatable).
Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402  (bench modules beside this file)
import run  # noqa: E402


@dataclass
class Side:
    """One sidecar of the comparison and what its rounds measured."""

    label: str
    root: Path
    args: list[str]
    target: str = ""
    pid: int = 0
    cpu_us: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def measure(side: Side, a: argparse.Namespace, start_at: int, duration: float) -> int:
    """One round of ``duration`` seconds against ``side``; returns the calls it made."""
    cpu_us, res = loadgen.server_cpu_per_call(side.pid, side.target, concurrency=a.concurrency, duration=duration,
                                              channels=a.channels, repeated=a.repeated, start_at=start_at)
    if res.errors:
        raise SystemExit(f"{side.label}: {res.errors} failed calls, first: {res.first_error}")
    side.cpu_us.append(cpu_us)
    side.rates.append(res.rate)
    return res.calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a-root", type=Path, default=run.ROOT, help="checkout whose sidecar is A (this one)")
    p.add_argument("--b-root", type=Path, default=run.ROOT, help="checkout whose sidecar is B (this one)")
    p.add_argument("--a-arg", action="append", default=[], help="`sidecar serve` flag for A (repeatable)")
    p.add_argument("--b-arg", action="append", default=[], help="`sidecar serve` flag for B (repeatable)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per side (10)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per round (3)")
    loadgen.add_load_arguments(p)
    a = p.parse_args(argv)
    sides = [Side("A", a.a_root.resolve(), a.a_arg), Side("B", a.b_root.resolve(), a.b_arg)]
    for side in sides:
        if not (side.root / "sidecar" / "__init__.py").is_file():
            raise SystemExit(f"--{side.label.lower()}-root: {side.root} holds no sidecar package")
    work = Path(tempfile.mkdtemp(prefix="compare-"))
    try:
        run.make_key(work)
        with ExitStack() as stack:
            for side in sides:
                proc, tcp, unix = stack.enter_context(run.sidecar(work, "1", side.args, work / f"{side.label}.log",
                                                                  root=side.root))
                side.pid, side.target = proc.pid, unix if a.unix else tcp
            start = 10**9  # identities no round reuses: every unique call signs
            for side in sides:  # warm-up, not measured
                start += measure(side, a, start, 1.5) + 1
                side.cpu_us.clear()
                side.rates.clear()
            for n in range(a.rounds):
                for side in sides if n % 2 == 0 else sides[::-1]:
                    start += measure(side, a, start, a.duration) + 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for side in sides:
        flags = " ".join(side.args) or "(defaults)"
        where = "" if side.root == run.ROOT else f" from {side.root}"
        print(f"{side.label}: sidecar serve {flags}{where}: server CPU {statistics.median(side.cpu_us):.0f} us/call, "
              f"{statistics.median(side.rates):,.0f} calls/s (medians of {len(side.cpu_us)} rounds)")
    diffs = [x - y for x, y in zip(sides[0].cpu_us, sides[1].cpu_us, strict=True)]
    print(f"A - B per pair: median {statistics.median(diffs):+.0f} us/call "
          f"({statistics.median(diffs) / statistics.median(sides[1].cpu_us) * 100:+.1f} %); "
          f"A spent less in {sum(d < 0 for d in diffs)} of {len(diffs)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
