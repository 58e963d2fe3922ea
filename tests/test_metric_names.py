"""DESIGN: one catalog declares every metric; no other module spells a metric name in
code (docstrings and comments may talk about them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lookout.slo import catalog

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lookout", "sidecar", "shadow_eval", "slo", "alerts", "dashboards", "runbooks", "k8s",
            "canary", "lookout_demo", "bench", "tools")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_only_the_catalog_spells_metric_names() -> None:
    names = sorted({spec.name for spec in catalog.ALL}, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")")
    offenders = []
    for package in PACKAGES:
        for source in sorted((REPO / package).rglob("*.py")):
            if source == REPO / "slo" / "catalog.py":
                continue
            tree = ast.parse(source.read_text())
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and id(node) not in skip and pattern.search(node.value)):
                    offenders.append(f"{source.relative_to(REPO)}:{node.lineno}: "
                                     f"{node.value[:80]!r}")
    assert not offenders, "\n".join(offenders)
