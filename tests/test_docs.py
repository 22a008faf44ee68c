"""The docs describe what the code reads: configuration drift fails here."""

from pathlib import Path

from sidecar.cli.config import ENV

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    table = CONFIGURATION.split("<!-- settings-table:begin -->", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    missing = [var for var in ENV.values() if f"`{var}`" not in table]
    assert missing == []


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block
