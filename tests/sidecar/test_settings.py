"""Each subsystem takes its own settings, cut from the one flat configuration."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from lookout.sidecar import settings
from lookout.sidecar.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
KINDS = [kind for _, kind in inspect.getmembers(settings, dataclasses.is_dataclass)]
CONFIG_FIELDS = {field.name: field.type for field in dataclasses.fields(Config)}


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_settings_are_a_subset_of_the_options_under_the_same_names(kind) -> None:
    for field in dataclasses.fields(kind):
        assert CONFIG_FIELDS.get(field.name) == field.type, (kind.__name__, field.name)
    config = load_config({"shadow_rate": "7", "sample_quality": "55"}, env={})
    built = settings.of(kind, config)
    assert all(getattr(built, f.name) == getattr(config, f.name)
               for f in dataclasses.fields(kind))


def test_no_subsystem_reads_the_whole_configuration() -> None:
    """Only the composition (server, chain, admin) sees `Config`; the subpackages get
    their settings."""
    readers = []
    for path in sorted((REPO / "sidecar").glob("*/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "lookout.sidecar.config" \
                    and any(alias.name == "Config" for alias in node.names):
                readers.append(str(path.relative_to(REPO)))
    assert readers == []
