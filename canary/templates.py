"""Canary gates for teams on Argo Rollouts or Flagger, from the same spec and the same
metric definitions as `lookout canary judge`.

Those controllers compare numbers against thresholds, not distributions, so each gate
is written as the canary's *excess over the tolerance band*: canary minus baseline (or
baseline minus canary, for metrics that get worse by falling) minus the band, over one
query window. At or under 0 passes; over 0 fails. Each query yields nothing while
either version has fewer events than the spec's low-traffic guard, and the conditions
treat nothing as its own case: in Argo the measurement is Inconclusive (the rollout
pauses for a person); Flagger has no such state and counts it as a failed check.
"""

from __future__ import annotations

from typing import Any

from lookout.slo.canary import (
    CanaryMetric,
    Worse,
    canary_burn_queries,
    metrics_for,
    version_selector,
)
from lookout.slo.spec import ServiceSpec

PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
QUERY_WINDOW = "5m"  # Argo: each measurement's window and interval
MEASUREMENTS = 6  # Argo: 30 minutes of analysis

ARGO_BASELINE = "{{args.baseline-version}}"
ARGO_CANARY = "{{args.canary-version}}"
FLAGGER_BASELINE = "{{ variables.baseline_version }}"
FLAGGER_CANARY = "{{ variables.canary_version }}"
FLAGGER_WINDOW = "{{ interval }}"


def _guarded(query: str, events: list[str], minimum: int) -> str:
    """`query`, or nothing while any of `events` is under `minimum`."""
    guards = "".join(f"\nand on() ({event} >= {minimum})" for event in events)
    return f"({query}){guards}"


def excess_query(metric: CanaryMetric, model: str, baseline: str, canary: str, window: str,
                 minimum: int) -> str:
    """PromQL: how far the canary is worse than the baseline beyond the tolerance band."""
    base = metric.value(version_selector(model, baseline), window)
    new = metric.value(version_selector(model, canary), window)
    band = (f"clamp_min(abs({base}) * {metric.relative_tolerance:g}, "
            f"{metric.absolute_tolerance:g})" if metric.relative_tolerance
            else f"{metric.absolute_tolerance:g}")
    worse_by = f"({new}) - ({base})" if metric.worse is Worse.UP else f"({base}) - ({new})"
    events = [metric.events(version_selector(model, version), window)
              for version in (baseline, canary)]
    return _guarded(f"{worse_by} - {band}", events, minimum)


def _burn_gates(spec: ServiceSpec, canary: str, window: str) -> list[tuple[str, str, float]]:
    """(name, PromQL of the canary's burn rate, page factor) per SLO."""
    gates = []
    for query in canary_burn_queries(spec, canary, window):
        minimum = spec.min_events(query.slo)
        burn = f"({query.error_ratio}) / {query.slo.budget:.10g}"
        gates.append((f"burn-{query.slo.name}",
                      _guarded(burn, [query.events], minimum) if minimum else burn,
                      round(query.page_factor, 4)))
    return gates


def _labels(spec: ServiceSpec) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "lookout", "lookout.io/service": spec.service,
            "lookout.io/model": spec.model}


def _base(spec: ServiceSpec, per_model: bool) -> str:
    """`lookout-<service>`, and `-<model>` after it where the pod serves several models
    (each model rolls out on its own, with its own templates)."""
    return f"lookout-{spec.service}" + (f"-{spec.model}" if per_model else "")


def analysis_template(spec: ServiceSpec, per_model: bool = False) -> dict[str, Any]:
    """An Argo Rollouts AnalysisTemplate. Non-critical metrics run in dry-run: they are
    measured and shown, but do not fail the analysis."""
    minimum = spec.low_traffic_min_events
    metrics: list[dict[str, Any]] = []
    prometheus = {"address": "{{args.prometheus-address}}"}

    def gate(name: str, query: str, limit: float, operator: str = "<=") -> dict[str, Any]:
        opposite = {"<=": ">", "<": ">="}[operator]
        return {
            "name": name, "interval": QUERY_WINDOW, "count": MEASUREMENTS,
            "successCondition": f"len(result) > 0 && result[0] {operator} {limit:g}",
            "failureCondition": f"len(result) > 0 && result[0] {opposite} {limit:g}",
            "failureLimit": 1, "inconclusiveLimit": 2,
            "provider": {"prometheus": {**prometheus, "query": query}},
        }

    chosen = metrics_for(spec)
    for metric in chosen:
        metrics.append(gate(metric.name, excess_query(
            metric, spec.model, ARGO_BASELINE, ARGO_CANARY, QUERY_WINDOW, minimum), 0))
    for name, query, factor in _burn_gates(spec, ARGO_CANARY, QUERY_WINDOW):
        metrics.append(gate(name, query, factor, "<"))
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": _base(spec, per_model), "labels": _labels(spec)},
        "spec": {
            "args": [{"name": "baseline-version"}, {"name": "canary-version"},
                     {"name": "prometheus-address", "value": PROMETHEUS_ADDRESS}],
            "metrics": metrics,
            "dryRun": [{"metricName": m.name} for m in chosen if not m.critical],
        },
    }


def _flagger_gates(spec: ServiceSpec) -> list[tuple[str, str, float | int]]:
    """(name, PromQL, highest passing value): the critical metrics' excess over their
    band, then each SLO's burn rate. The burn rates are over the fixed window: their
    event counts need its seconds."""
    minimum = spec.low_traffic_min_events
    gates = [(m.name, excess_query(m, spec.model, FLAGGER_BASELINE, FLAGGER_CANARY,
                                   FLAGGER_WINDOW, minimum), 0)
             for m in metrics_for(spec) if m.critical]
    return gates + _burn_gates(spec, FLAGGER_CANARY, QUERY_WINDOW)


def _template_name(spec: ServiceSpec, gate: str, per_model: bool) -> str:
    return f"{_base(spec, per_model)}-{gate}"


def metric_templates(spec: ServiceSpec, per_model: bool = False) -> list[dict[str, Any]]:
    """Flagger MetricTemplates, one per critical metric and per SLO burn rate."""
    return [{
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": _template_name(spec, name, per_model), "labels": _labels(spec)},
        "spec": {"provider": {"type": "prometheus", "address": PROMETHEUS_ADDRESS},
                 "query": query},
    } for name, query, _ in _flagger_gates(spec)]


def flagger_analysis(spec: ServiceSpec, baseline: str = "BASELINE_VERSION",
                     canary: str = "CANARY_VERSION", per_model: bool = False
                     ) -> dict[str, Any]:
    """The `analysis` block of a Flagger Canary using those templates; the two versions
    are placeholders to set per release."""
    variables = {"baseline_version": baseline, "canary_version": canary}
    metrics = [{
        "name": name,
        "templateRef": {"name": _template_name(spec, name, per_model)},
        "templateVariables": dict(variables),
        "thresholdRange": {"max": limit},
        "interval": QUERY_WINDOW,
    } for name, _, limit in _flagger_gates(spec)]
    return {"analysis": {"interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                         "metrics": metrics}}
