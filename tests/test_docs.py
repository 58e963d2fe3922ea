"""Documentation that must not drift from the code."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from lookout.sidecar.config import ENV_PREFIX, Config

REPO = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1: lines.index("```")]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]


def test_the_configuration_reference_documents_every_option_and_its_env_variable() -> None:
    reference = (REPO / "docs" / "CONFIGURATION.md").read_text()
    for option in fields(Config):
        assert f"| `{option.name}` | `{ENV_PREFIX}{option.name.upper()}` |" in reference, \
            option.name
