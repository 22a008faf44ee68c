"""The README documents what the code reads: configuration drift fails here."""

from pathlib import Path

from sidecar.config import ENV

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [var for var in ENV.values() if f"`{var}`" not in table]
    assert missing == []


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block
