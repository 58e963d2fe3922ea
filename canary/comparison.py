"""One judgement of a canary: query both versions' per-interval series and the canary's
own burn rates from Prometheus, then let slo.judge decide."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from lookout.canary.prometheus import Prometheus
from lookout.slo.canary import CanaryMetric, canary_burn_queries, version_selector
from lookout.slo.judge import BurnCheck, Judgement, JudgeSettings, Series, judge_metric, overall
from lookout.slo.spec import ServiceSpec, format_duration


@dataclass(frozen=True, slots=True)
class CanaryComparison:
    """What is compared, and over which window."""

    model: str
    baseline_version: str
    canary_version: str
    metrics: tuple[CanaryMetric, ...]
    window_seconds: int = 30 * 60
    interval_seconds: int = 60
    spec: ServiceSpec | None = None  # for the canary-alone burn-rate checks

    def __post_init__(self) -> None:
        if self.baseline_version == self.canary_version:
            raise ValueError("the baseline and canary versions are the same "
                             f"({self.canary_version!r}); nothing would be compared")
        if self.interval_seconds <= 0 or self.window_seconds < 2 * self.interval_seconds:
            raise ValueError("the window must hold at least two intervals")


def _series(prometheus: Prometheus, metric: CanaryMetric, selector: str, interval: str,
            start: float, end: float, step: float) -> Series:
    values = prometheus.series(metric.value(selector, interval), start, end, step)
    events = prometheus.series(metric.events(selector, interval), start, end, step)
    stamps = sorted(set(values) | set(events))
    return Series([values.get(t, math.nan) for t in stamps],
                  [events.get(t, 0.0) for t in stamps])


def judge_canary(prometheus: Prometheus, comparison: CanaryComparison,
                 settings: JudgeSettings, end: float | None = None) -> Judgement:
    """Judge the window ending at `end` (now by default). The intervals tile the window:
    the value at each step is the metric over the interval that ends there."""
    end = time.time() if end is None else end
    step = comparison.interval_seconds
    start = end - comparison.window_seconds + step
    interval = format_duration(step)
    judgements = []
    for metric in comparison.metrics:
        baseline, canary = (
            _series(prometheus, metric, version_selector(comparison.model, version),
                    interval, start, end, step)
            for version in (comparison.baseline_version, comparison.canary_version))
        judgements.append(judge_metric(metric, baseline, canary, settings))
    burn = []
    if comparison.spec is not None:
        window = format_duration(comparison.window_seconds)
        for query in canary_burn_queries(comparison.spec, comparison.canary_version, window):
            ratio = prometheus.scalar(query.error_ratio, end)
            events = prometheus.scalar(query.events, end) or 0.0
            rate = None if ratio is None or math.isnan(ratio) else ratio / query.slo.budget
            burn.append(BurnCheck(query.slo.name, rate, query.page_factor, events,
                                  comparison.spec.min_events(query.slo)))
    return overall(judgements, burn, settings)
