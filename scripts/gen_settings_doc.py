"""Write the settings tables of docs/configuration.md from the declarations in sidecar/cli/config.py.

    python scripts/gen_settings_doc.py           # rewrite the part between the markers
    python scripts/gen_settings_doc.py --check   # exit 1 if it is stale (CI)

Only the text between ``<!-- settings-table:begin -->`` and ``<!-- settings-table:end -->``
is generated; the prose around it is left as written.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.cli.config import SETTINGS  # noqa: E402
from sidecar.cli.settings import Setting, doc_table  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def render(text: str, settings: Sequence[Setting] = SETTINGS) -> str:
    """``text`` (the page) with the part between the markers generated from ``settings``."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{DOC}: the markers {BEGIN} and {END} are missing")
    return f"{head}{BEGIN}\n{doc_table(settings)}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not what would be written")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = render(current)
    if current == wanted:
        return 0
    if args.check:
        diff = difflib.unified_diff(current.splitlines(), wanted.splitlines(), str(DOC), "generated", lineterm="")
        print("\n".join(diff))
        print(f"{DOC.relative_to(ROOT)} is stale: run python scripts/gen_settings_doc.py", file=sys.stderr)
        return 1
    DOC.write_text(wanted)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
