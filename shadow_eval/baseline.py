"""The drift baseline on disk: per-image feature rows, JSON.

Rows rather than summary bins, so the same file serves the online detector (which
bins them) and Evidently's report (which wants the reference data itself).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lookout.shadow_eval.features import FeatureRow
from lookout.shadow_eval.limits import FEATURES

FORMAT_VERSION = 1


class BaselineError(ValueError):
    """The baseline file cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Baseline:
    rows: tuple[FeatureRow, ...]
    source: str = ""
    created: float = field(default_factory=time.time)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Written to a temporary file and renamed: a crash leaves the old file."""
        path = Path(path)
        temporary = path.with_name(path.name + ".tmp")
        document = {"format": "lookout-drift-baseline", "version": FORMAT_VERSION,
                    "created": self.created, "source": self.source,
                    "features": list(FEATURES),
                    "rows": [[row.get(name) for name in FEATURES] for row in self.rows]}
        temporary.write_text(json.dumps(document))
        temporary.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except OSError as error:
            raise BaselineError(f"baseline {path}: {error.strerror or error}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BaselineError(f"baseline {path} is not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != "lookout-drift-baseline":
            raise BaselineError(f"{path} is not a lookout drift baseline "
                                f"(write one with `lookout shadow baseline`)")
        if document.get("version") != FORMAT_VERSION:
            raise BaselineError(f"baseline {path} has format version "
                                f"{document.get('version')}; this lookout reads {FORMAT_VERSION}")
        names = document.get("features")
        rows = document.get("rows")
        if not isinstance(names, list) or not isinstance(rows, list) or not all(
                isinstance(row, list) and len(row) == len(names) for row in rows):
            raise BaselineError(f"baseline {path}: 'features' and 'rows' do not line up")
        return cls(tuple(dict(zip(names, row, strict=True)) for row in rows),
                   str(document.get("source", "")), float(document.get("created", 0)))

    @classmethod
    def from_rows(cls, rows: Iterable[FeatureRow], source: str) -> Baseline:
        return cls(tuple(rows), source)

    def column(self, name: str) -> Sequence[float | str | None]:
        return [row.get(name) for row in self.rows]
