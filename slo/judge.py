"""The canary judge: is the canary worse than the baseline, metric by metric, and what
does that make of the canary as a whole?

In the spirit of Kayenta's judge: each metric is a series of per-interval values for
either version over the same window. A metric is *worse* only when three things hold:
a one-sided Mann-Whitney U test says the canary is worse than the baseline by more than
the metric's tolerance band, at the chosen confidence; the effect is not trivial (Cliff's
delta, the rank-based effect size, at least `effect_size_floor`); and both versions
have enough events and intervals behind them — without which the metric is *nodata*,
which can make the verdict inconclusive but never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy import stats

from lookout.slo.canary import CanaryMetric, JudgeSettings, Worse


class MetricOutcome(StrEnum):
    SAME = "same"  # within tolerance, or not shown to differ
    WORSE = "worse"
    BETTER = "better"
    NODATA = "nodata"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> int:
        return {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCONCLUSIVE: 2}[self]


@dataclass(frozen=True, slots=True)
class Series:
    """One version's per-interval values of a metric, and the events behind each."""

    values: Sequence[float]
    events: Sequence[float]

    def usable(self) -> tuple[np.ndarray, float]:
        """The finite values of intervals that had events, and the events in all."""
        values = np.asarray(self.values, dtype=float)
        events = np.asarray(self.events, dtype=float)
        keep = np.isfinite(values) & (events > 0)
        return values[keep], float(events[np.isfinite(events)].sum())


@dataclass(frozen=True, slots=True)
class MetricJudgement:
    metric: str
    outcome: MetricOutcome
    critical: bool
    reason: str
    baseline: float | None = None  # median per-interval value
    canary: float | None = None
    shift: float | None = None  # Hodges-Lehmann estimate of canary - baseline
    shift_low: float | None = None  # its confidence interval
    shift_high: float | None = None
    tolerance: float | None = None
    p_value: float | None = None  # one-sided: canary worse beyond the tolerance
    effect_size: float | None = None  # Cliff's delta, positive when the canary is worse
    baseline_events: float = 0.0
    canary_events: float = 0.0
    intervals: tuple[int, int] = (0, 0)


def shift_estimate(canary: np.ndarray, baseline: np.ndarray,
                   confidence: float) -> tuple[float, float, float]:
    """Hodges-Lehmann shift (median of all pairwise differences) and its distribution-
    free confidence interval from the order statistics of those differences."""
    differences = np.sort(np.subtract.outer(canary, baseline).ravel())
    n, m = len(canary), len(baseline)
    z = stats.norm.ppf(0.5 + confidence / 2)
    k = max(math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12)), 0)
    return float(np.median(differences)), float(differences[k]), float(differences[-1 - k])


def judge_metric(metric: CanaryMetric, baseline: Series, canary: Series,
                 settings: JudgeSettings) -> MetricJudgement:
    b, b_events = baseline.usable()
    c, c_events = canary.usable()
    counts = dict(critical=metric.critical, baseline_events=b_events, canary_events=c_events,
                  intervals=(len(b), len(c)))
    short = [f"{side} has {events:.0f} events (needs {settings.min_events:.0f})"
             for side, events in (("baseline", b_events), ("canary", c_events))
             if events < settings.min_events]
    short += [f"{side} has {len(values)} intervals with data (needs "
              f"{settings.min_intervals})"
              for side, values in (("baseline", b), ("canary", c))
              if len(values) < settings.min_intervals]
    if short:
        return MetricJudgement(metric.name, MetricOutcome.NODATA, reason="; ".join(short), **counts)

    sign = 1.0 if metric.worse is Worse.UP else -1.0  # so that larger is worse
    baseline_median = float(np.median(b))
    tolerance = metric.tolerance(baseline_median)
    alpha = 1 - settings.confidence
    worse_p = _one_sided_p(sign * c - tolerance, sign * b)
    better_p = _one_sided_p(sign * b - tolerance, sign * c)
    # Cliff's delta: P(a canary interval is worse than a baseline one) - P(better)
    delta = float(np.mean(np.sign(sign * np.subtract.outer(c, b))))
    shift, low, high = shift_estimate(c, b, settings.confidence)
    direction = "higher" if metric.worse is Worse.UP else "lower"
    if worse_p < alpha and delta >= settings.effect_size_floor:
        outcome = MetricOutcome.WORSE
        reason = (f"canary {direction} by {abs(shift):.4g} (beyond the ±{tolerance:.4g} band, "
                  f"p={worse_p:.2g}, effect {delta:.2f})")
    elif better_p < alpha and -delta >= settings.effect_size_floor:
        outcome, reason = MetricOutcome.BETTER, f"canary better by {abs(shift):.4g}"
    elif worse_p < alpha:
        outcome = MetricOutcome.SAME
        reason = f"a consistent but small difference (effect {delta:.2f} under the floor)"
    else:
        outcome, reason = MetricOutcome.SAME, f"no difference beyond ±{tolerance:.4g}"
    return MetricJudgement(metric.name, outcome, reason=reason, baseline=baseline_median,
                           canary=float(np.median(c)), shift=shift, shift_low=low,
                           shift_high=high, tolerance=tolerance, p_value=worse_p,
                           effect_size=delta, **counts)


def _one_sided_p(worse: np.ndarray, other: np.ndarray) -> float:
    """P-value of 'worse is stochastically greater than other'; 1 when every value on
    both sides is equal (nothing to rank)."""
    if np.ptp(np.concatenate([worse, other])) == 0:
        return 1.0
    return float(stats.mannwhitneyu(worse, other, alternative="greater").pvalue)


@dataclass(frozen=True, slots=True)
class BurnCheck:
    """The canary's own burn rate of one SLO over the window, against the page factor."""

    slo: str
    burn_rate: float | None  # None: too few events
    page_factor: float
    events: float
    min_events: float

    @property
    def ok(self) -> bool | None:
        if self.burn_rate is None or self.events < self.min_events:
            return None
        return self.burn_rate < self.page_factor


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str
    score: float | None  # share of judged metrics not worse
    metrics: tuple[MetricJudgement, ...]
    burn: tuple[BurnCheck, ...] = field(default_factory=tuple)


def overall(metrics: Sequence[MetricJudgement], burn: Sequence[BurnCheck],
            settings: JudgeSettings) -> Judgement:
    """Fail on any critical metric worse or SLO burning at a paging rate; otherwise
    inconclusive while anything lacks data; otherwise fail below the pass score."""
    judged = [m for m in metrics if m.outcome is not MetricOutcome.NODATA]
    score = (sum(m.outcome is not MetricOutcome.WORSE for m in judged) / len(judged)
             if judged else None)

    def verdict(kind: Verdict, reason: str) -> Judgement:
        return Judgement(kind, reason, score, tuple(metrics), tuple(burn))

    critical = [m.metric for m in judged if m.outcome is MetricOutcome.WORSE and m.critical]
    if critical:
        return verdict(Verdict.FAIL, f"critical metric(s) worse: {', '.join(critical)}")
    burning = [b.slo for b in burn if b.ok is False]
    if burning:
        return verdict(Verdict.FAIL, f"the canary alone burns the error budget of "
                                     f"{', '.join(burning)} at a paging rate")
    missing = [m.metric for m in metrics if m.outcome is MetricOutcome.NODATA]
    missing += [f"burn rate of {b.slo}" for b in burn if b.ok is None]
    if missing:
        return verdict(Verdict.INCONCLUSIVE, f"too little data: {', '.join(missing)}")
    assert score is not None
    if score < settings.pass_score:
        worse = [m.metric for m in judged if m.outcome is MetricOutcome.WORSE]
        return verdict(Verdict.FAIL, f"score {score:.0%} under {settings.pass_score:.0%}; "
                                     f"worse: {', '.join(worse)}")
    worse = [m.metric for m in judged if m.outcome is MetricOutcome.WORSE]
    note = f" (non-critical worse: {', '.join(worse)})" if worse else ""
    return verdict(Verdict.PASS, f"no critical metric worse, score {score:.0%}{note}")
