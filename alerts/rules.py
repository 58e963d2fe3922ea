"""Prometheus recording and alerting rules for a service's SLOs.

Recorded per SLO (label `slo`) and window: the error ratio, the burn rate (error ratio /
budget) and, for the long windows of the alerting tiers, the event count behind it;
over the SLO period, the error budget left. Alerts follow slo.burn: a tier fires when
its long and short windows both burn faster than its factor and the long window holds
at least `low_traffic_min_events` events.
"""

from __future__ import annotations

from typing import Any

from lookout.slo import links
from lookout.slo.burn import RECORDING_WINDOWS, TIERS
from lookout.slo.names import (
    BUDGET_REMAINING,
    BURN_ALERTS,
    BURN_RATE,
    DRIFT_SLICES,
    ERROR_RATIO,
    EVENTS,
    OBJECTIVE,
)
from lookout.slo.sli import DRIFT_SLICE, drift_slices, sli
from lookout.slo.spec import SLO, Kind, ServiceSpec, format_duration


def slo_labels(spec: ServiceSpec, slo: SLO) -> dict[str, str]:
    return {"slo": slo.name, "slo_kind": slo.kind.value, "service": spec.service,
            "model": spec.model}


def _selector(labels: dict[str, str]) -> str:
    """Recorded series of one SLO of one model: with several models, each records the
    same names under its own `model` label."""
    return "{" + f'slo="{labels["slo"]}",model="{labels["model"]}"' + "}"


def _windows(spec: ServiceSpec) -> list[tuple[str, str]]:
    """(name, range) pairs: names are the nominal windows, ranges are scaled by
    `window_scale` (1 outside tests)."""
    seconds = sorted({*RECORDING_WINDOWS, spec.period_seconds})
    return [(format_duration(s), format_duration(max(s * spec.window_scale, 1)))
            for s in seconds]


def recording_rules(spec: ServiceSpec, slo: SLO) -> list[dict[str, Any]]:
    labels = slo_labels(spec, slo)
    tier_windows = {format_duration(t.long_seconds) for t in TIERS}
    rules: list[dict[str, Any]] = []
    slices = f"{DRIFT_SLICES}{_selector(labels)}" if slo.kind is Kind.DRIFT else None
    for name, window in _windows(spec):
        queries = sli(spec, slo, window, slices)
        rules.append({"record": ERROR_RATIO.format(window=name), "expr": queries.error_ratio,
                      "labels": labels})
        rules.append({"record": BURN_RATE.format(window=name),
                      "expr": f"{ERROR_RATIO.format(window=name)}{_selector(labels)} / "
                              f"{slo.budget:.10g}",
                      "labels": labels})
        if name in tier_windows:
            rules.append({"record": EVENTS.format(window=name), "expr": queries.events,
                          "labels": labels})
    period = format_duration(spec.period_seconds)
    rules.append({"record": BUDGET_REMAINING,
                  "expr": f"1 - {ERROR_RATIO.format(window=period)}{_selector(labels)} / "
                          f"{slo.budget:.10g}",
                  "labels": labels})
    rules.append({"record": OBJECTIVE, "expr": f"vector({slo.objective:.10g})",
                  "labels": labels})
    return rules


def slice_rules(spec: ServiceSpec, slo: SLO) -> list[dict[str, Any]]:
    """A drift SLO's time slices, recorded once each (in a group evaluated every
    DRIFT_SLICE) and read by its windows as a plain range: a subquery per window would
    evaluate every slice of the window again at each evaluation, 40,320 of them for 4w
    every minute."""
    if slo.kind is not Kind.DRIFT:
        return []
    return [{"record": DRIFT_SLICES, "expr": drift_slices(spec, slo),
             "labels": slo_labels(spec, slo)}]


def min_events(spec: ServiceSpec, slo: SLO) -> int:
    """The low-traffic guard: events a burn alert's long window must hold."""
    return spec.min_events(slo)


def runbook_url(spec: ServiceSpec, alert: str) -> str:
    return f"{spec.runbook_base_url}/{alert}.md"


def burn_alerts(spec: ServiceSpec, slo: SLO) -> list[dict[str, Any]]:
    labels = slo_labels(spec, slo)
    selector = _selector(labels)
    alert = BURN_ALERTS[slo.kind]
    rules = []
    for tier in TIERS:
        factor = tier.factor(spec.period_seconds)
        long_name = format_duration(tier.long_seconds)
        short_name = format_duration(tier.short_seconds)
        expr = (f"{BURN_RATE.format(window=long_name)}{selector} > {factor:.4g}\n"
                f"and {BURN_RATE.format(window=short_name)}{selector} > {factor:.4g}")
        if min_events(spec, slo):
            expr += (f"\nand {EVENTS.format(window=long_name)}{selector} >= "
                     f"{min_events(spec, slo)}")
        rules.append({
            "alert": alert,
            "expr": expr,
            "labels": {**labels, **spec.labels, "severity": tier.severity,
                       "burn_tier": tier.tier},
            "annotations": {
                "summary": f"{spec.service}: SLO {slo.name} is burning its error budget "
                           f"{{{{ $value | printf \"%.1f\" }}}}x too fast ({tier.tier} window)",
                "description": (
                    f"Over the last {long_name} the error ratio of SLO {slo.name} "
                    f"(objective {slo.objective:.6g}) burns the budget at "
                    f"{{{{ $value | printf \"%.2f\" }}}}x, above the {factor:.4g}x that spends "
                    f"{tier.budget_share:.0%} of a {format_duration(spec.period_seconds)} "
                    f"budget in {long_name}; the {short_name} window confirms it is still "
                    f"happening."),
                "runbook_url": runbook_url(spec, alert),
                "gallery_url": links.for_alert(spec, slo.kind,
                                               tier.long_seconds * spec.window_scale),
            },
        })
    return rules


def slo_rule_groups(spec: ServiceSpec) -> list[dict[str, Any]]:
    """Two groups per model (one model: no suffix): every SLO holds for each model."""
    groups = []
    for model in spec.all_models:
        one = spec.for_model(model)
        suffix = f"-{model}" if spec.models else ""
        slices = [rule for slo in one.slos for rule in slice_rules(one, slo)]
        recording = [rule for slo in one.slos for rule in recording_rules(one, slo)]
        alerting = [rule for slo in one.slos for rule in burn_alerts(one, slo)]
        if slices:  # first: the recording group reads them at the same evaluation
            groups.append({"name": f"lookout-slo-{spec.service}{suffix}-slices",
                           "interval": DRIFT_SLICE, "rules": slices})
        groups += [
            {"name": f"lookout-slo-{spec.service}{suffix}-recording", "rules": recording},
            {"name": f"lookout-slo-{spec.service}{suffix}-alerts", "rules": alerting},
        ]
    return groups
