"""PromQL for each SLO kind: the error ratio over a window, and how many events it
rests on (for the low-traffic guard). Metric names come from the catalog only."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from lookout.slo import catalog
from lookout.slo.promql import rate_over
from lookout.slo.spec import SLO, Kind, RatioQueries, ServiceSpec, parse_duration

DRIFT_SLICE = "1m"  # drift SLO: time slices with / without an alarm


@dataclass(frozen=True, slots=True)
class SLIQueries:
    error_ratio: str
    events: str


def summed(function: str, metric: str, selector: str, window: str) -> str:
    """`sum(rate(...))` or `sum(increase(...))` of one metric over a window."""
    return f"sum({function}({metric}{{{selector}}}[{window}]))"


def zero_if_absent(query: str) -> str:
    """A numerator: a series that never appeared (no 5xx yet) counts as zero events, or
    the ratio would be empty instead of 0."""
    return f"({query} or vector(0))"


def _rate(metric: str, selector: str, window: str) -> str:
    return summed("rate", metric, selector, window)


def _rate_or_zero(metric: str, selector: str, window: str) -> str:
    return zero_if_absent(_rate(metric, selector, window))


def _ratio(queries: RatioQueries, window: str) -> SLIQueries:
    total = rate_over(queries.total, window)
    if queries.bad:
        error = f"({rate_over(queries.bad, window)}) / ({total})"
    else:
        error = f"1 - ({rate_over(queries.good, window)}) / ({total})"
    # a per-second rate times the window's seconds is the event count (what increase()
    # computes), whether the user wrote the query or lookout wrapped it
    events = f"({total}) * {parse_duration(window, 'window')}"
    return SLIQueries(error, events)


def trusted(function: str, metric: catalog.MetricSpec, count: str, selector: str,
            window: str, numerator: bool = False) -> str:
    """A proxy counter less what windows of low trust counted of it: time the reference
    model was out of its distribution burns no budget (it is unknown, not bad). A
    numerator never seen is 0; a denominator never seen leaves no ratio at all."""
    untrusted = zero_if_absent(summed(function, catalog.SHADOW_UNTRUSTED.sample_name,
                                      f'{selector},count="{count}"', window))
    counted = summed(function, metric.sample_name, selector, window)
    return f"({zero_if_absent(counted) if numerator else counted} - {untrusted})"


@dataclass(frozen=True, slots=True)
class QualityCounters:
    """A quality proxy's numerator and denominator, and their `count` label in
    `lookout_shadow_untrusted_total`."""

    numerator: catalog.MetricSpec
    numerator_count: str
    denominator: catalog.MetricSpec
    denominator_count: str


# precision: matched / primary boxes. recall: the robust proxy, matched / the reference
# boxes it is sure of and that survive its own flip (docs/QUALITY.md: the plain one,
# matched / every reference box, falls with the reference's false boxes)
QUALITY_PROXIES = {
    "precision": QualityCounters(catalog.SHADOW_MATCHED_BOXES, "matched",
                                 catalog.SHADOW_PRIMARY_BOXES, "primary"),
    "recall": QualityCounters(catalog.SHADOW_CONFIRMED_MATCHED_BOXES, "confirmed_matched",
                              catalog.SHADOW_CONFIRMED_REFERENCE_BOXES, "confirmed_reference"),
}


def _quality(slo: SLO, selector: str, window: str) -> SLIQueries:
    proxy = QUALITY_PROXIES[slo.proxy or "precision"]
    metric, count = proxy.denominator, proxy.denominator_count
    matched = trusted("rate", proxy.numerator, proxy.numerator_count, selector, window,
                      numerator=True)
    total = trusted("rate", metric, count, selector, window)
    # all of the window untrusted: 0 / 0, no ratio, no burn
    return SLIQueries(f"1 - {matched} / {total}",
                      trusted("increase", metric, count, selector, window))


def drift_slices(spec: ServiceSpec, slo: SLO) -> str:
    """A drift SLO's time slice: whether any of its series alarms now."""
    return f"max({catalog.DRIFT_ALARM.name}{{{spec.selector(slo.route)}}})"


def sli(spec: ServiceSpec, slo: SLO, window: str, slices: str | None = None) -> SLIQueries:
    """The error ratio of `slo` over `window` (a Prometheus duration). `slices`: a drift
    SLO's slices as a recorded series (a selector of `drift_slices` recorded every
    DRIFT_SLICE), read over the window as a plain range; without it, a subquery
    evaluates the slices anew over the whole window (ad-hoc queries: the canary's)."""
    selector = spec.selector(slo.route)
    if slo.kind is Kind.AVAILABILITY:
        requests = catalog.REQUESTS.sample_name
        bad = _rate_or_zero(requests, f'{selector},code=~"{catalog.SERVER_ERROR_CODE_REGEX}"',
                            window)
        total = _rate(requests, selector, window)
        return SLIQueries(f"{bad} / {total}", f"sum(increase({requests}{{{selector}}}"
                                              f"[{window}]))")
    if slo.kind is Kind.LATENCY:
        assert slo.threshold is not None
        le = floatToGoString(slo.threshold)
        fast = _rate_or_zero(catalog.REQUEST_DURATION.bucket_name, f'{selector},le="{le}"',
                             window)
        total = _rate(catalog.REQUEST_DURATION.count_name, selector, window)
        return SLIQueries(f"1 - {fast} / {total}",
                          f"sum(increase({catalog.REQUEST_DURATION.count_name}{{{selector}}}"
                          f"[{window}]))")
    if slo.kind is Kind.QUALITY:
        return _quality(slo, selector, window)
    if slo.kind is Kind.DRIFT:
        over = f"{slices}[{window}]" if slices else \
            f"{drift_slices(spec, slo)}[{window}:{DRIFT_SLICE}]"
        return SLIQueries(f"avg_over_time({over})", f"count_over_time({over})")
    assert slo.ratio is not None
    return _ratio(slo.ratio, window)
