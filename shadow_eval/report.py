"""Drift reports for people: Evidently's DataDriftPreset (HTML and JSON) comparing the
baseline with a window of stored features, plus lookout's own per-feature tests so the
report and the live detector can be read side by side.

Evidently is imported here only: it takes seconds to import and the sidecar never
needs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookout.shadow_eval.drift import MIN_BASELINE_VALUES, DriftConfigError, FeatureProfile
from lookout.shadow_eval.features import is_missing
from lookout.shadow_eval.limits import CATEGORICAL, FEATURES

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html: Path
    json: Path
    drifted: list[str]  # features lookout's own tests call drifted at p < 0.05


def _present(rows: Sequence[Row], name: str) -> list:
    return [row.get(name) for row in rows if not is_missing(row.get(name))]


def comparable_features(reference: Sequence[Row], current: Sequence[Row]) -> list[str]:
    """Features with enough values on both sides to compare."""
    return [name for name in FEATURES
            if len(_present(reference, name)) >= MIN_BASELINE_VALUES
            and len(_present(current, name)) >= 2]


def feature_tests(reference: Sequence[Row], current: Sequence[Row],
                  features: Sequence[str]) -> dict[str, dict[str, Any]]:
    """scipy's exact test (KS or chi-square) and PSI per feature, on the whole window."""
    results = {}
    for name in features:
        try:
            profile = FeatureProfile(name, _present(reference, name), name in CATEGORICAL)
        except DriftConfigError:
            continue
        values = _present(current, name)
        counts = np.bincount([profile.bin(v) for v in values], minlength=profile.bins)
        results[name] = {
            "test": "chi-square" if profile.categorical else "kolmogorov-smirnov",
            "p_value": profile.exact_test(values, counts),
            "psi": profile.psi(counts.astype(np.float64)),
            "reference_values": len(profile.values) if not profile.categorical
            else int(profile.counts.sum()),
            "current_values": len(values),
        }
    return results


def _frame(rows: Sequence[Row], features: Sequence[str]):
    import pandas as pd

    columns = {}
    for name in features:
        values = [row.get(name) for row in rows]
        if name in CATEGORICAL:
            columns[name] = pd.Series([None if is_missing(v) else str(v) for v in values],
                                      dtype="object")
        else:
            columns[name] = pd.Series([np.nan if is_missing(v) else float(v) for v in values],
                                      dtype="float64")
    return pd.DataFrame(columns)


def write_drift_report(reference: Sequence[Row], current: Sequence[Row],
                       out_prefix: str | os.PathLike[str], title: str = "") -> ReportFiles:
    """Write `<prefix>.html` (Evidently) and `<prefix>.json` (Evidently's metrics and
    lookout's tests)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    features = comparable_features(reference, current)
    if not features:
        raise DriftConfigError(
            f"nothing to compare: the baseline needs {MIN_BASELINE_VALUES}+ values and the "
            f"window 2+ values of a feature ({len(reference)} baseline rows, "
            f"{len(current)} window rows)")
    definition = DataDefinition(
        numerical_columns=[f for f in features if f not in CATEGORICAL],
        categorical_columns=[f for f in features if f in CATEGORICAL])
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(_frame(current, features), data_definition=definition),
        reference_data=Dataset.from_pandas(_frame(reference, features),
                                           data_definition=definition))
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    html, json_path = prefix.with_suffix(".html"), prefix.with_suffix(".json")
    snapshot.save_html(str(html))
    tests = feature_tests(reference, current, features)
    json_path.write_text(json.dumps({
        "title": title, "reference_rows": len(reference), "current_rows": len(current),
        "feature_tests": tests, "evidently": snapshot.dict(),
    }, indent=2, default=str))
    drifted = [name for name, result in tests.items() if result["p_value"] < 0.05]
    return ReportFiles(html, json_path, drifted)
