"""The in-process burn-rate model the canary gate and the rule tests rely on."""

from __future__ import annotations

import pytest

from lookout.slo.burn import CounterSample, error_ratio, evaluate_tiers, increase


def _counter(per_minute: float, minutes: int, start: float = 0.0) -> list[CounterSample]:
    return [CounterSample(60.0 * i, start + per_minute * i) for i in range(minutes + 1)]


def test_increase_handles_counter_resets() -> None:
    samples = [CounterSample(0, 5), CounterSample(60, 10), CounterSample(120, 2),
               CounterSample(180, 6)]
    assert increase(samples, -1, 180) == 5 + 2 + 4


def test_error_ratio_over_a_window() -> None:
    total, bad = _counter(100, 120), _counter(2, 120)
    assert error_ratio(bad, total, 3600, 7200) == pytest.approx(0.02)
    assert error_ratio(bad, [CounterSample(0, 0)], 3600, 7200) is None


def test_tiers_follow_the_workbook() -> None:
    day = 86400 * 28
    total, bad = _counter(100, 180), _counter(100 * 0.001 * 15, 180)  # 15x, 3 hours
    firing = {d.tier.tier for d in evaluate_tiers(bad, total, 0.001, day, 180 * 60, 100)
              if d.firing}
    assert firing == {"1h", "6h", "1d", "3d"}
    slow = _counter(100 * 0.001 * 5, 180)
    firing = {d.tier.tier for d in evaluate_tiers(slow, total, 0.001, day, 180 * 60, 100)
              if d.firing}
    assert firing == {"1d", "3d"}
    few, few_bad = _counter(1, 90), _counter(0.015, 90)  # 15x on 90 events: guarded
    assert not any(d.firing for d in evaluate_tiers(few_bad, few, 0.001, day, 90 * 60, 100))
