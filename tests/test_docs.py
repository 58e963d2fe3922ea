"""Documentation that must not drift from the code."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from lookout.sidecar.config import ENV_PREFIX, Config
from tools.configuration_reference import reference

REPO = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1: lines.index("```")]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]


def test_the_configuration_reference_is_generated_from_the_option_declarations() -> None:
    """docs/CONFIGURATION.md is what tools/configuration_reference.py writes: an option
    added, renamed or re-documented without regenerating it fails here."""
    written = (REPO / "docs" / "CONFIGURATION.md").read_text()
    assert written == reference(), \
        "regenerate: python -m tools.configuration_reference > docs/CONFIGURATION.md"
    for option in fields(Config):
        assert f"| `{option.name}` | `{ENV_PREFIX}{option.name.upper()}` |" in written
