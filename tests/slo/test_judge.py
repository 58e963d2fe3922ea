"""The canary judge's statistics: outcomes per metric, the verdict, and its error rates
in seeded repeats on the real models' per-image outcomes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lookout.lookout_demo import outcomes
from lookout.slo import catalog
from lookout.slo.canary import ERROR_RATE, LATENCY_P95, PRECISION
from lookout.slo.judge import (
    BurnCheck,
    JudgeSettings,
    MetricJudgement,
    Series,
    Verdict,
    judge_metric,
    overall,
    shift_estimate,
)
from lookout.slo.judge import (
    MetricOutcome as Outcome,
)

SETTINGS = JudgeSettings(min_events=100, min_intervals=10)


def _series(values: np.ndarray, events: float = 50.0) -> Series:
    return Series(values.tolist(), [events] * len(values))


def test_a_clear_drop_in_precision_is_worse() -> None:
    rng = np.random.default_rng(1)
    baseline = _series(rng.normal(0.80, 0.03, 30))
    canary = _series(rng.normal(0.70, 0.03, 30))
    result = judge_metric(PRECISION, baseline, canary, SETTINGS)
    assert result.outcome is Outcome.WORSE and result.critical
    assert result.shift is not None and -0.12 < result.shift < -0.08
    assert result.shift_low < result.shift < result.shift_high
    assert result.effect_size is not None and result.effect_size > 0.9
    assert "lower" in result.reason


def test_a_drop_inside_the_tolerance_band_is_not_worse() -> None:
    rng = np.random.default_rng(2)
    baseline = _series(rng.normal(0.800, 0.002, 30))
    canary = _series(rng.normal(0.790, 0.002, 30))  # significant, but under 0.02
    assert judge_metric(PRECISION, baseline, canary, SETTINGS).outcome is Outcome.SAME
    strict = replace(PRECISION, absolute_tolerance=0.0)
    assert judge_metric(strict, baseline, canary, SETTINGS).outcome is Outcome.WORSE


def test_the_effect_size_floor_keeps_a_consistent_sliver_from_failing() -> None:
    rng = np.random.default_rng(3)
    baseline = _series(rng.normal(0.10, 0.02, 200))
    canary = _series(rng.normal(0.11, 0.02, 200))
    metric = replace(LATENCY_P95, absolute_tolerance=0.0, relative_tolerance=0.0)
    low_floor = replace(SETTINGS, effect_size_floor=0.0)
    assert judge_metric(metric, baseline, canary, low_floor).outcome is Outcome.WORSE
    result = judge_metric(metric, baseline, canary, replace(SETTINGS, effect_size_floor=0.6))
    assert result.outcome is Outcome.SAME and "under the floor" in result.reason


def test_higher_precision_and_lower_errors_are_better() -> None:
    rng = np.random.default_rng(4)
    assert judge_metric(PRECISION, _series(rng.normal(0.7, 0.02, 20)),
                        _series(rng.normal(0.8, 0.02, 20)), SETTINGS).outcome is Outcome.BETTER
    assert judge_metric(ERROR_RATE, _series(rng.normal(0.05, 0.005, 20)),
                        _series(rng.normal(0.01, 0.005, 20)), SETTINGS).outcome is Outcome.BETTER


def test_too_few_events_or_intervals_is_nodata_never_a_judgement() -> None:
    rng = np.random.default_rng(5)
    good = _series(rng.normal(0.8, 0.02, 20))
    sparse = _series(rng.normal(0.5, 0.02, 20), events=2)  # 40 events < 100
    result = judge_metric(PRECISION, good, sparse, SETTINGS)
    assert result.outcome is Outcome.NODATA and "canary has 40 events" in result.reason
    few = _series(rng.normal(0.5, 0.02, 5), events=100)
    assert "5 intervals" in judge_metric(PRECISION, good, few, SETTINGS).reason
    # intervals without events, or NaN (0/0 in PromQL), are not data
    empty = Series([float("nan")] * 20, [0.0] * 20)
    assert judge_metric(PRECISION, good, empty, SETTINGS).outcome is Outcome.NODATA


def test_identical_constant_series_are_the_same() -> None:
    flat = _series(np.zeros(20))
    assert judge_metric(ERROR_RATE, flat, flat, SETTINGS).outcome is Outcome.SAME


def _judgement(name: str, outcome: Outcome, critical: bool) -> MetricJudgement:
    return MetricJudgement(name, outcome, critical, reason="")


@pytest.mark.parametrize(("outcomes_", "burn", "expected"), [
    ([("a", Outcome.SAME, True), ("b", Outcome.SAME, False)], [], Verdict.PASS),
    ([("a", Outcome.WORSE, True), ("b", Outcome.NODATA, True)], [], Verdict.FAIL),
    ([("a", Outcome.SAME, True), ("b", Outcome.NODATA, False)], [], Verdict.INCONCLUSIVE),
    ([("a", Outcome.SAME, True), ("b", Outcome.WORSE, False), ("c", Outcome.SAME, False),
      ("d", Outcome.BETTER, False)], [], Verdict.PASS),  # score 75%
    ([("a", Outcome.SAME, True), ("b", Outcome.WORSE, False), ("c", Outcome.WORSE, False)],
     [], Verdict.FAIL),  # score 33%
    ([("a", Outcome.SAME, True)], [BurnCheck("availability", 9.0, 5.6, 500, 100)],
     Verdict.FAIL),
    ([("a", Outcome.SAME, True)], [BurnCheck("availability", 1.0, 5.6, 50, 100)],
     Verdict.INCONCLUSIVE),
    ([("a", Outcome.SAME, True)], [BurnCheck("availability", 1.0, 5.6, 500, 100)],
     Verdict.PASS),
])
def test_the_verdict(outcomes_, burn, expected) -> None:
    judgement = overall([_judgement(*o) for o in outcomes_], burn, SETTINGS)
    assert judgement.verdict is expected, judgement.reason
    assert judgement.verdict.exit_code == {"pass": 0, "fail": 1, "inconclusive": 2}[expected]


def test_the_shift_interval_covers_the_true_shift_about_as_often_as_it_claims() -> None:
    rng = np.random.default_rng(6)
    covered = 0
    for _ in range(400):
        canary, baseline = rng.exponential(1.0, 25) + 0.3, rng.exponential(1.0, 25)
        _, low, high = shift_estimate(canary, baseline, 0.9)
        covered += low <= 0.3 <= high
    assert 0.85 <= covered / 400 <= 0.95


# -- seeded repeats on the real models' outcomes -------------------------------------

@pytest.fixture(scope="module")
def pools() -> dict[str, np.ndarray]:
    """Per-image outcomes of the shipped models: clean scenes, and scenes darkened so
    that the primary's true precision is far lower (about 0.37 against 0.78)."""
    primary, reference = outcomes.detectors()
    return {
        "clean": outcomes.image_outcomes(outcomes.scenes(3_000_000, 160), primary, reference),
        "dark": outcomes.image_outcomes(outcomes.scenes(3_100_000, 80, "dark", 0.4),
                                        primary, reference),
    }


def _verdicts(pool_b: np.ndarray, pool_c: np.ndarray, requests: int, repeats: int,
              seed: int) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    settings = JudgeSettings()
    return [judge_metric(PRECISION, outcomes.interval_series(pool_b, requests, 30, rng),
                         outcomes.interval_series(pool_c, requests, 30, rng),
                         settings).outcome for _ in range(repeats)]


def test_identical_versions_pass_in_at_least_95_percent_of_seeded_repeats(pools) -> None:
    verdicts = _verdicts(pools["clean"], pools["clean"], 600, 300, seed=7)
    assert verdicts.count(Outcome.WORSE) / len(verdicts) <= 0.05
    assert Outcome.NODATA not in verdicts


def test_a_far_worse_version_is_rejected_in_nearly_every_seeded_repeat(pools) -> None:
    assert outcomes.true_precision(pools["dark"]) < outcomes.true_precision(pools["clean"]) - 0.2
    verdicts = _verdicts(pools["clean"], pools["dark"], 300, 100, seed=8)
    assert verdicts.count(Outcome.WORSE) / len(verdicts) >= 0.95


def test_intervals_of_low_trust_are_no_data_and_never_a_pass(tmp_path) -> None:
    """The proxy query itself, in Prometheus' engine (promtool): it has a value where
    trust is high and none where the interval saw trust 0; and a canary whose intervals
    are all untrusted is judged nodata, which makes the verdict inconclusive."""
    import subprocess

    import yaml

    from lookout.slo.canary import RECALL, version_selector
    from tests.support.processes import require_tool

    promtool = require_tool("promtool")
    labels = 'model="m",version="2"'
    query = PRECISION.value(version_selector("m", "2"), "1m")
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    test = {"rule_files": ["empty.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'{catalog.SHADOW_MATCHED_BOXES.sample_name}{{{labels},class="a"}}',
             "values": "0+8x20"},
            {"series": f'{catalog.SHADOW_PRIMARY_BOXES.sample_name}{{{labels},class="a"}}',
             "values": "0+10x20"},
            {"series": f"{catalog.PROXY_TRUST.name}{{{labels}}}",
             "values": "1+0x9 0+0x2 1+0x8"}],
        "promql_expr_test": [
            {"expr": query, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 0.8}]},
            {"expr": query, "eval_time": "11m", "exp_samples": []},
            {"expr": query, "eval_time": "18m", "exp_samples": [{"labels": "{}", "value": 0.8}]},
        ]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "test.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    trusted = _series(np.full(30, 0.85))
    untrusted = Series([float("nan")] * 30, [50.0] * 30)  # every interval without a value
    judged = [judge_metric(metric, trusted, untrusted, SETTINGS) for metric in (PRECISION,
                                                                                 RECALL)]
    assert all(j.outcome is Outcome.NODATA for j in judged)
    assert overall(judged, [], SETTINGS).verdict is Verdict.INCONCLUSIVE
