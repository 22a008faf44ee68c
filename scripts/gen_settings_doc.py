"""Write the settings tables of docs/configuration.md from the declarations in sidecar/cli/config.py.

    python scripts/gen_settings_doc.py           # rewrite the part between the markers
    python scripts/gen_settings_doc.py --check   # exit 1 if it is stale (CI)

Only the text between ``<!-- settings-table:begin -->`` and ``<!-- settings-table:end -->``
is generated; the prose around it is left as written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import generated  # noqa: E402  (beside this file)

ROOT = generated.ROOT

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
    return generated.main(DOC, lambda: render(DOC.read_text()), script="gen_settings_doc.py",
                          description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    sys.exit(main())
