"""What the generator scripts share: write a generated file, or with ``--check`` say it is stale."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(target: Path, wanted: Callable[[], str], *, script: str, description: str,
         argv: Sequence[str] | None = None) -> int:
    """Write ``wanted()`` to ``target``; with ``--check`` print the diff and exit 1 when it differs.

    ``script`` is the file name of the generator, named in the message when ``target`` is stale.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {target.name} is not what would be written")
    args = parser.parse_args(argv)
    text = wanted()
    current = target.read_text() if target.exists() else ""
    if current == text:
        return 0
    name = target.relative_to(ROOT)
    if args.check:
        print("\n".join(difflib.unified_diff(current.splitlines(), text.splitlines(), str(target), "generated",
                                             lineterm="")))
        print(f"{name} is stale: run python scripts/{script}", file=sys.stderr)
        return 1
    target.write_text(text)
    print(f"wrote {name}")
    return 0
