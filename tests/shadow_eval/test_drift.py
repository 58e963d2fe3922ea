"""The drift detector: calibration on stationary streams, power, hysteresis, baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lookout.shadow_eval.baseline import Baseline, BaselineError
from lookout.shadow_eval.drift import DriftConfigError, DriftDetector, DriftModel, FeatureProfile


def _detector(window: int, false_alarm_every: int, seed: int = 0,
              clear_windows: int = 1) -> DriftDetector:
    baseline = np.random.default_rng(seed).normal(size=2000)
    profile = FeatureProfile("brightness", baseline, categorical=False)
    return DriftDetector(profile, window, window / false_alarm_every, clear_windows,
                         rng=np.random.default_rng(seed))


def _false_alarms(detector: DriftDetector, values: np.ndarray) -> int:
    raised = 0
    for value in values:
        result = detector.update(float(value))
        raised += bool(result and result.raised)
    return raised


def test_false_alarm_rate_matches_the_calibration_target() -> None:
    # one false alarm per 2,000 values expected: 100 expected in 200,000 values; a
    # Poisson count of mean 100 lies in [65, 140] with probability > 0.999
    detector = _detector(window=50, false_alarm_every=2000)
    stream = np.random.default_rng(1).normal(size=200_000)
    assert 65 <= _false_alarms(detector, stream) <= 140


def test_a_small_baseline_widens_the_threshold_instead_of_alarming() -> None:
    small = FeatureProfile("x", np.random.default_rng(2).normal(size=60), False)
    large = FeatureProfile("x", np.random.default_rng(2).normal(size=5000), False)
    rng = np.random.default_rng(0)
    assert DriftDetector(small, 50, 0.01, rng=rng).threshold > \
        DriftDetector(large, 50, 0.01, rng=rng).threshold


def test_a_shift_is_caught_within_two_windows_and_clears_with_hysteresis() -> None:
    detector = _detector(window=50, false_alarm_every=100_000, clear_windows=2)
    rng = np.random.default_rng(3)
    results = [detector.update(float(v)) for v in rng.normal(1.0, 1.0, size=100)]
    assert any(r and r.raised for r in results) and detector.alarm
    stationary = [detector.update(float(v)) for v in rng.normal(size=500)]
    assert not detector.alarm
    closed = [r for r in stationary if r]
    assert closed[0].alarm and not closed[1].alarm, "two quiet windows clear the alarm"


def test_categorical_features_use_chi_square_and_flag_new_categories() -> None:
    values = ["1920x1080"] * 900 + ["1280x720"] * 100
    profile = FeatureProfile("resolution", values, categorical=True)
    assert profile.bin("640x480") == profile.bins - 1  # "other"
    detector = DriftDetector(profile, 50, 0.001, rng=np.random.default_rng(0))
    results = [detector.update("640x480") for _ in range(50)]
    assert results[-1].raised and results[-1].p_value < 1e-6 and results[-1].psi > 1


def test_psi_and_exact_test_are_quiet_on_the_baseline_itself() -> None:
    values = np.random.default_rng(4).normal(size=3000)
    profile = FeatureProfile("x", values, False)
    counts = np.bincount([profile.bin(v) for v in values[:500]], minlength=profile.bins)
    assert profile.psi(counts) < 0.05
    assert profile.exact_test(values[:500].tolist(), counts) > 0.01


def test_model_skips_features_it_cannot_test_and_says_why() -> None:
    rows = [{"brightness": float(v), "confidence": None, "sharpness": 3.0}
            for v in np.random.default_rng(5).normal(size=200)]
    model = DriftModel.from_rows(rows, ("brightness", "confidence", "sharpness"), window=20,
                                 false_alarm_images=10_000, seed=0)
    assert list(model.detectors) == ["brightness"]
    # one feature, windows of 20, one false alarm per 10,000 images: alpha = 20 / 10,000
    assert model.detectors["brightness"].alpha == pytest.approx(0.002)
    assert "at least 50" in model.skipped["confidence"]
    assert "constant" in model.skipped["sharpness"]
    with pytest.raises(DriftConfigError, match="no feature"):
        DriftModel.from_rows(rows[:10], ("brightness",), window=20, false_alarm_images=10_000)


def test_baseline_round_trip_and_clear_errors(tmp_path) -> None:
    rows = ({"brightness": 100.0, "class": "star", "confidence": None},)
    path = tmp_path / "baseline.json"
    Baseline.from_rows(rows, "test").save(path)
    loaded = Baseline.load(path)
    assert loaded.rows[0]["brightness"] == 100.0 and loaded.rows[0]["class"] == "star"
    assert loaded.source == "test" and not list(tmp_path.glob("*.tmp"))
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(BaselineError, match="not a lookout drift baseline"):
        Baseline.load(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{\"format\": ")
    with pytest.raises(BaselineError, match="not JSON"):
        Baseline.load(tmp_path / "broken.json")
    with pytest.raises(BaselineError, match="No such file"):
        Baseline.load(tmp_path / "missing.json")

