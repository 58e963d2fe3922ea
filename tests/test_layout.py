"""The layout's law: which package may import which, as ARCHITECTURE.md's table says, and
the `lookout.` namespace that holds them all."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_INSTALLED = {"tests", "bench", "tools"}


def _table() -> dict[str, set[str] | None]:
    """folder -> the modules it may import (None: everything)."""
    architecture = (REPO / "ARCHITECTURE.md").read_text()
    section = architecture[architecture.index("## Layout"):]
    rules: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        folder = cells[0].strip("`/")
        allowed = cells[2]
        rules[folder] = None if allowed == "everything" else set(
            re.findall(r"`([a-z0-9_.]+)`", allowed))
    return rules


RULES = _table()
PACKAGES = sorted(path.parent.name for path in REPO.glob("*/__init__.py")
                  if path.parent.name not in NOT_INSTALLED)


def _lookout_imports(path: Path) -> list[tuple[int, str]]:
    """Every `lookout.*` module a file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("lookout.")]


def test_every_package_folder_has_a_row_and_installs_under_lookout() -> None:
    assert set(PACKAGES) <= set(RULES), set(PACKAGES) - set(RULES)
    for package in PACKAGES:
        name = package if package == "lookout" else f"lookout.{package}"
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        # found at lookout/<room>/, the link to the room at the top: what mypy and
        # editors resolve `lookout.<room>` to without an import hook
        assert Path(spec.origin).parent == REPO / "lookout" / package or \
            package == "lookout", spec.origin
        assert Path(spec.origin).resolve().parent == REPO / package


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_table(package: str) -> None:
    allowed = RULES[package]
    if allowed is None:
        return
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in _lookout_imports(path):
            target = module.split(".")[1] if package != "lookout" else "lookout"
            if target == package or module in ("lookout", "lookout.cli"):
                continue
            inner = module.removeprefix("lookout.")
            if not any(inner == rule or inner.startswith(rule + ".") or rule.startswith(
                    inner + ".") for rule in allowed):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            if inner.startswith("cli") or module.startswith("lookout.cli"):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports the command line")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_nothing_imports_a_bare_top_level_package() -> None:
    parts = [package for package in PACKAGES if package != "lookout"]
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(parts)})\b", re.M)
    offenders = [str(path.relative_to(REPO)) for folder in [*PACKAGES, *NOT_INSTALLED]
                 for path in (REPO / folder).rglob("*.py") if bare.search(path.read_text())]
    assert not offenders, offenders
