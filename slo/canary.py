"""What a canary is compared on: each metric's PromQL for one version over one window,
the direction in which it gets worse, the band of change that is harmless, and whether
a worse result alone fails the canary.

Every query is scoped by the `model` and `version` labels, never by service or pod, so
the same queries work for a Deployment pair, one Deployment mid-rollout, an Argo Rollout
or Flagger's primary/canary: what tells the versions apart is the version lookout labels
its metrics with. The judge (slo.judge) runs the queries per interval; the Argo and
Flagger templates (canary.templates) run them over their own interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from prometheus_client.utils import floatToGoString

from lookout.slo import catalog
from lookout.slo.burn import TIERS
from lookout.slo.sli import sli, summed, zero_if_absent
from lookout.slo.spec import SLO, Kind, ServiceSpec


class Worse(StrEnum):
    """The direction in which a metric gets worse."""

    UP = "up"  # error rate, latency, drift alarms
    DOWN = "down"  # precision and recall proxies


Query = Callable[[str, str], str]  # (label selector, window) -> PromQL


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    """How sure the judge (slo.judge) must be; here, apart from the statistics, so the
    command line reads the defaults without importing scipy."""

    confidence: float = 0.95
    effect_size_floor: float = 0.3  # |Cliff's delta|: 0.15 small, 0.33 medium, 0.47 large
    min_events: float = 200  # per version and metric, summed over the window
    min_intervals: int = 10  # per version and metric
    pass_score: float = 0.75  # share of judged metrics not worse, when none critical is


@dataclass(frozen=True, slots=True)
class CanaryMetric:
    name: str
    description: str
    worse: Worse
    critical: bool
    value: Query  # the metric over a window: one number per version
    events: Query  # how many events that number rests on
    absolute_tolerance: float = 0.0  # change within max(absolute, relative x baseline)
    relative_tolerance: float = 0.0  # is harmless, whatever the statistics say
    unit: str = ""

    def tolerance(self, baseline: float) -> float:
        return max(self.absolute_tolerance, self.relative_tolerance * abs(baseline))


def _increase(metric: str, selector: str, window: str) -> str:
    return summed("increase", metric, selector, window)


def _error_rate(selector: str, window: str) -> str:
    requests = catalog.REQUESTS.sample_name
    errors = _increase(requests, f'{selector},code=~"{catalog.SERVER_ERROR_CODE_REGEX}"',
                       window)
    return f"{zero_if_absent(errors)} / {_increase(requests, selector, window)}"


def _requests(selector: str, window: str) -> str:
    return _increase(catalog.REQUESTS.sample_name, selector, window)


def _latency_p95(selector: str, window: str) -> str:
    buckets = f"increase({catalog.REQUEST_DURATION.bucket_name}{{{selector}}}[{window}])"
    return f"histogram_quantile(0.95, sum by (le) ({buckets}))"


def _timed_requests(selector: str, window: str) -> str:
    return _increase(catalog.REQUEST_DURATION.count_name, selector, window)


def untrusted_interval(selector: str, window: str) -> str:
    """Any moment of the interval with the proxies distrusted (the reference model out of
    its distribution): such an interval has no proxy value, so it is no data to the
    judge, never evidence either way."""
    return f"min(min_over_time({catalog.PROXY_TRUST.name}{{{selector}}}[{window}])) == 0"


def _proxy(denominator: catalog.MetricSpec,
           numerator: catalog.MetricSpec = catalog.SHADOW_MATCHED_BOXES) -> Query:
    def query(selector: str, window: str) -> str:
        matched = _increase(numerator.sample_name, selector, window)
        boxes = _increase(denominator.sample_name, selector, window)
        return (f"({zero_if_absent(matched)} / {boxes})\n"
                f"unless on () ({untrusted_interval(selector, window)})")
    return query


def _boxes(spec: catalog.MetricSpec) -> Query:
    return lambda selector, window: _increase(spec.sample_name, selector, window)


def _drift_alarms(selector: str, window: str) -> str:
    return f"max(max_over_time({catalog.DRIFT_ALARM.name}{{{selector}}}[{window}]))"


def _slow_share(threshold: float) -> Query:
    le = floatToGoString(threshold)

    def query(selector: str, window: str) -> str:
        fast = _increase(catalog.REQUEST_DURATION.bucket_name, f'{selector},le="{le}"', window)
        return f"1 - {zero_if_absent(fast)} / {_timed_requests(selector, window)}"
    return query


ERROR_RATE = CanaryMetric(
    "error-rate", "share of requests answered 5xx (the sidecar's own included)", Worse.UP,
    critical=True, value=_error_rate, events=_requests, absolute_tolerance=0.002)
LATENCY_P95 = CanaryMetric(
    "latency-p95", "95th percentile of request latency as clients see it", Worse.UP,
    critical=False, value=_latency_p95, events=_timed_requests, absolute_tolerance=0.005,
    relative_tolerance=0.1, unit="s")
PRECISION = CanaryMetric(
    "precision", "precision proxy: matched / primary boxes against the reference model",
    Worse.DOWN, critical=True, value=_proxy(catalog.SHADOW_PRIMARY_BOXES),
    events=_boxes(catalog.SHADOW_PRIMARY_BOXES), absolute_tolerance=0.02)
RECALL = CanaryMetric(
    "recall", "robust recall proxy: matched / flip-confirmed reference boxes", Worse.DOWN,
    critical=True,
    value=_proxy(catalog.SHADOW_CONFIRMED_REFERENCE_BOXES,
                 catalog.SHADOW_CONFIRMED_MATCHED_BOXES),
    events=_boxes(catalog.SHADOW_CONFIRMED_REFERENCE_BOXES), absolute_tolerance=0.02)
DRIFT_ALARMS = CanaryMetric(
    "drift-alarms", "share of intervals with a drift alarm on any feature", Worse.UP,
    # the events are the requests: an interval without an alarm series (drift off, or
    # still collecting its baseline) has no value and so counts as no data
    critical=False, value=_drift_alarms, events=_requests, absolute_tolerance=0.1)

DEFAULT_METRICS: tuple[CanaryMetric, ...] = (ERROR_RATE, LATENCY_P95, PRECISION, RECALL,
                                            DRIFT_ALARMS)


def slow_share(slo: SLO) -> CanaryMetric:
    """A latency SLO's own measure: the share of requests slower than its threshold."""
    assert slo.threshold is not None
    return CanaryMetric(
        f"slow-share-{slo.name}", f"share of requests slower than {slo.threshold:g}s "
        f"(SLO {slo.name})", Worse.UP, critical=True, value=_slow_share(slo.threshold),
        events=_timed_requests, absolute_tolerance=slo.budget)


def metrics_for(spec: ServiceSpec | None) -> tuple[CanaryMetric, ...]:
    """The metrics a canary of this service is judged on: errors and latency always; the
    quality proxies and drift when the spec has SLOs on them (all of them without a
    spec); the slow share of each latency SLO."""
    if spec is None:
        return DEFAULT_METRICS
    kinds = {slo.kind for slo in spec.slos}
    proxies = {slo.proxy for slo in spec.slos if slo.kind is Kind.QUALITY}
    chosen = [ERROR_RATE, LATENCY_P95]
    chosen += [slow_share(slo) for slo in spec.slos if slo.kind is Kind.LATENCY]
    chosen += [metric for metric, proxy in ((PRECISION, "precision"), (RECALL, "recall"))
               if proxy in proxies]
    if Kind.DRIFT in kinds:
        chosen.append(DRIFT_ALARMS)
    return tuple(chosen)


def version_selector(model: str, version: str) -> str:
    return f'model="{model}",version="{version}"'


def page_burn_factor(spec: ServiceSpec) -> float:
    """The lowest burn rate that pages: a canary burning faster than this would page
    if it were all of the traffic."""
    return min(tier.factor(spec.period_seconds) for tier in TIERS if tier.severity == "page")


@dataclass(frozen=True, slots=True)
class BurnQuery:
    slo: SLO
    error_ratio: str
    events: str
    page_factor: float


def canary_burn_queries(spec: ServiceSpec, version: str, window: str) -> list[BurnQuery]:
    """Each SLO's error ratio for the canary's version alone over `window`. OpenSLO
    ratio SLOs are the user's own PromQL, which lookout cannot scope to one version, so
    they have no canary-alone check."""
    scoped = replace(spec, version=version)
    factor = page_burn_factor(spec)
    queries = [(slo, sli(scoped, slo, window)) for slo in spec.slos if slo.kind is not Kind.RATIO]
    return [BurnQuery(slo, query.error_ratio, query.events, factor) for slo, query in queries]
