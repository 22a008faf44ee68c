"""The docs describe what the code reads: configuration drift fails here."""

import importlib.util
from pathlib import Path

import pytest

from sidecar.cli.config import ENV, SETTINGS
from sidecar.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def _generator():
    spec = importlib.util.spec_from_file_location("gen_settings_doc", ROOT / "scripts" / "gen_settings_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_table_is_generated_from_the_settings():
    assert _generator().render(CONFIGURATION) == CONFIGURATION, "run python scripts/gen_settings_doc.py"


def test_every_setting_is_in_the_configuration_table():
    table = CONFIGURATION.split("<!-- settings-table:begin -->", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    missing = [var for var in ENV.values() if f"`{var}`" not in table]
    missing += [s.flag for s in SETTINGS if f"`{s.flag}`" not in table]
    assert missing == []


def test_every_setting_is_in_serve_help(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    missing = [s.flag for s in SETTINGS if s.flag not in text]
    missing += [var for var in ENV.values() if f"[{var}]" not in text]
    assert missing == []


def test_the_generator_refuses_a_page_without_markers():
    with pytest.raises(SystemExit, match="markers"):
        _generator().render("# Configuration\n")


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block
