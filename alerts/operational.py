"""Alerts on lookout and the pod themselves, beside the SLO burn alerts: the things that
make the SLO signals wrong or missing before they make them red."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookout.alerts.rules import runbook_url
from lookout.slo import catalog, links, names
from lookout.slo.spec import Kind, ServiceSpec


@dataclass(frozen=True, slots=True)
class OperationalAlert:
    name: str
    expr: str
    duration: str  # `for`
    severity: str
    summary: str
    description: str


def served_version_mismatch(selector: str, window: str = "10m") -> str:
    """Per pod, served versions the pod is not deployed with. The right-hand side copies
    each pod's deployed `version` into `served_version`, so `unless` keeps exactly the
    pairs where what answered is not what was deployed there (another pod legitimately
    on the old version during a roll-out does not hide a stale one). Pods with no deployed version
    configured (`unknown`) and the bounded `other` bucket are left out."""
    served = catalog.SERVED_RESPONSES.sample_name
    chosen = f'{selector},version!="unknown",served_version!="other"'
    return (f"sum by (instance, model, version, served_version) "
            f"(rate({served}{{{chosen}}}[{window}])) > 0\n"
            f"unless on (instance, model, served_version)\n"
            f"label_replace(sum by (instance, model, version) "
            f"(rate({served}{{{chosen}}}[{window}])), "
            f'"served_version", "$1", "version", "(.*)")')


def gpu_process_memory_rising(window: str = "30m", horizon_seconds: int = 3600) -> str:
    """Over 85% of the GPU held by the pod's processes, and the linear trend of the last
    `window` reaching the whole GPU within `horizon_seconds`: a leak or a growing batch,
    caught before CUDA out-of-memory, not after."""
    used, total = catalog.GPU_PROCESS_MEMORY.name, catalog.GPU_MEMORY_TOTAL.name
    by = "max by (instance, gpu)"
    return (f"{by} ({used}) / {by} ({total}) > 0.85\n"
            f"and on (instance, gpu)\n"
            f"{by} (predict_linear({used}[{window}], {horizon_seconds}))\n"
            f"> on (instance, gpu) {by} ({total})")


def proxy_bias_high(selector: str, margin: float) -> str:
    """Per model version in service, class and rate: how far the proxy measured on the
    newest audit's images lies outside the audit's 95% interval, where that is more than
    `margin`. Versions no longer in service are left out: their audits describe old
    weights."""
    estimate = catalog.AUDIT_ESTIMATE.name

    def quantity(name: str) -> str:
        return f'max by (model, version, class, rate) ({estimate}{{{selector},quantity="{name}"}})'

    primary = f'{catalog.MODEL_INFO.name}{{{selector},role="primary"}}'
    return (f"(\n  {quantity('lower')}\n  - {quantity('proxy')} > {margin:.6g}\n"
            f"or\n  {quantity('proxy')}\n  - {quantity('upper')} > {margin:.6g}\n)\n"
            f"and on (model, version) {primary}")


def operational_alerts(spec: ServiceSpec) -> list[OperationalAlert]:
    model = spec.selector()
    primary = f'{catalog.MODEL_INFO.name}{{{model},role="primary"}}'
    alerts = [
        OperationalAlert(
            names.UPSTREAM_DOWN,
            f"({catalog.UPSTREAM_UP.name} == 0)\n"
            f"* on (instance, job) group_left (model, version) {primary}",
            "1m", "page",
            "{{ $labels.model }}: the inference server behind {{ $labels.instance }} is down",
            "lookout's probe of the inference container in pod {{ $labels.instance }} has "
            "failed for over a minute: requests through it get 502/504."),
        OperationalAlert(
            names.OBSERVATIONS_DROPPED,
            f'sum by (instance) (rate({catalog.QUEUE_DROPPED.sample_name}{{queue!="shadow"}}'
            f"[5m])) > 0",
            "10m", "ticket",
            "lookout on {{ $labels.instance }} drops observations",
            "lookout drops {{ $value | printf \"%.2f\" }} observations/s for want of analysis "
            "capacity: detection, shadow and drift signals undercount traffic (requests are "
            "unaffected)."),
        OperationalAlert(
            names.SAMPLES_DROPPED,
            # quota drops are the policy working as configured, not a fault
            f"sum by (instance, reason) "
            f"(rate({catalog.SAMPLES_DROPPED.sample_name}{{reason!=\"quota\"}}[15m])) > 0",
            "15m", "ticket",
            "lookout on {{ $labels.instance }} drops input samples ({{ $labels.reason }})",
            "{{ $value | printf \"%.2f\" }} samples/s are not stored: postmortem thumbnails "
            "will be missing for this period."),
        OperationalAlert(
            names.METRICS_ABSENT,
            f"absent({catalog.UPSTREAM_UP.name}) or absent({primary})",
            "10m", "page",
            f"No lookout metrics for {spec.service}",
            "Prometheus has scraped no lookout series for 10 minutes: every SLO of this "
            "service is blind. The sidecar, its scrape config or the pod is gone."),
        OperationalAlert(
            names.MODEL_VERSION_CHANGED,
            f"count by (model) (count by (model, version) (max_over_time({primary}[1h]))) > 1",
            "0m", "ticket",
            "{{ $labels.model }}: {{ $value }} model versions served in the last hour",
            "More than one primary model version reported within an hour: a rollout, a "
            "rollback, or pods flapping between weights. Expected during a deploy; "
            "otherwise a stale or mixed deployment."),
        OperationalAlert(
            names.SERVED_VERSION_MISMATCH, served_version_mismatch(model),
            "10m", "page",
            "{{ $labels.model }} on {{ $labels.instance }} serves version "
            "{{ $labels.served_version }}, deployed as {{ $labels.version }}",
            "For 10 minutes the inference server in this pod has answered with a model "
            "version (V2 model_version) other than the one it is deployed with: stale "
            "weights after "
            "a roll-out, a model repository that was not updated, or a partial roll-out. "
            "Its metrics look healthy because they are labelled with the deployed version."),
        OperationalAlert(
            names.GPU_MEMORY_NEAR_FULL,
            f"max by (instance, gpu) ({catalog.GPU_MEMORY_USED.name} / "
            f"{catalog.GPU_MEMORY_TOTAL.name}) > 0.95",
            "5m", "ticket",
            "GPU {{ $labels.gpu }} on {{ $labels.instance }} is {{ $value | humanizePercentage }}"
            " full",
            "GPU memory has been over 95% for 5 minutes: the next larger batch or a second "
            "model (the shadow reference) may hit CUDA out-of-memory."),
        OperationalAlert(
            names.GPU_PROCESS_MEMORY_RISING, gpu_process_memory_rising(),
            "10m", "page",
            "GPU {{ $labels.gpu }} on {{ $labels.instance }}: the pod's processes hold "
            "{{ $value | humanizePercentage }} of its memory and rising",
            "The memory this pod's processes (the inference server, a local reference) hold "
            "on the GPU is over 85% of it and, at the rate of the last 30 minutes, reaches "
            "all of it within the hour: the next allocation fails with CUDA out-of-memory, "
            "the server restarts or answers 503."),
        OperationalAlert(
            names.GPU_XID_ERRORS,
            f"sum by (instance, gpu, xid) "
            f"(increase({catalog.GPU_XID_ERRORS.sample_name}[10m])) > 0",
            "0m", "ticket",
            "GPU {{ $labels.gpu }} on {{ $labels.instance }} reported XID {{ $labels.xid }}",
            "The NVIDIA driver reported a critical XID event: a GPU memory error, a "
            "hung or lost GPU, or an application fault; the node may need draining."),
    ]
    if any(slo.kind is Kind.QUALITY for slo in spec.slos):
        shadow_ok = (f'{catalog.SHADOW_EVALUATIONS.sample_name}{{{model},outcome="ok"}}')
        alerts += [
            OperationalAlert(
                names.REFERENCE_MODEL_MISSING,
                f'absent({catalog.MODEL_INFO.name}{{{model},role="reference"}})',
                "15m", "ticket",
                f"{spec.service}: no reference model, the quality SLOs are blind",
                "No sidecar reports a loaded reference model: shadow evaluation is off, not "
                "configured, or the model failed to load (wrong sha256, corrupt file)."),
            OperationalAlert(
                names.REFERENCE_OUT_OF_DISTRIBUTION,
                f"min by (model) ({catalog.PROXY_TRUST.name}{{{model}}}) == 0",
                "15m", "ticket",
                "{{ $labels.model }}: reference model out of distribution, quality unknown",
                "For 15 minutes the reference model has not behaved as on normal traffic "
                "(boxes per image or flip consistency out of their band): the "
                "precision and recall proxies cannot be believed, so the quality SLOs count "
                "this time as unknown and burn no budget. The input itself has probably "
                "changed (weather, a camera or pipeline fault); look at the frames."),
            OperationalAlert(
                names.SHADOW_STALLED,
                f"sum by (model) (rate({shadow_ok}[15m])) == 0\n"
                f"and on (model) sum by (model) "
                f"(rate({catalog.REQUESTS.sample_name}{{{model}}}[15m])) > 0",
                "15m", "ticket",
                "{{ $labels.model }}: shadow evaluation has stalled",
                "Traffic flows but no image was shadow-evaluated for 15 minutes: the budget "
                "is exhausted, the reference model is failing, a remote reference cannot be "
                "reached (outcome reference_error), or nothing parses."),
            OperationalAlert(
                names.SHADOW_DISABLED,
                f'sum by (instance) (increase({catalog.COMPONENT_ERRORS.sample_name}'
                f'{{component="shadow"}}[15m])) > 0',
                "0m", "ticket",
                "Shadow evaluation fails on {{ $labels.instance }}",
                "{{ $value | printf \"%.0f\" }} shadow evaluation failures in 15 minutes: "
                "the reference model did not load, or it throws at inference."),
            OperationalAlert(
                names.PROXY_BIAS_HIGH, proxy_bias_high(model, spec.proxy_bias_margin),
                "5m", "ticket",
                "{{ $labels.model }} {{ $labels.version }}: the {{ $labels.rate }} proxy "
                "({{ $labels.class }}) lies {{ $value | printf \"%.2f\" }} outside its "
                "audited interval",
                f"The newest labelled audit of this version (lookout audit import) puts its "
                f"{{{{ $labels.rate }}}} for class {{{{ $labels.class }}}} in a 95% interval "
                f"that the shadow proxy, measured on the same images, misses by more than "
                f"{spec.proxy_bias_margin:.2g}: the reference model agrees with the primary "
                f"where the labels do not (or the other way round), so the proxy and the "
                f"quality SLO built on it are biased on this traffic."),
        ]
    return alerts


def operational_rule_group(spec: ServiceSpec) -> dict[str, Any]:
    rules = []
    for alert in operational_alerts(spec):
        rule: dict[str, Any] = {
            "alert": alert.name,
            "expr": alert.expr,
            "labels": {"severity": alert.severity, "service": spec.service, **spec.labels},
            "annotations": {"summary": alert.summary, "description": alert.description,
                            "runbook_url": runbook_url(spec, alert.name),
                            # the model the alert is about, when it names one
                            "gallery_url": links.gallery(spec, model="{{ $labels.model }}",
                                                         since=links.at(3600),
                                                         until=links.at(0))},
        }
        if alert.duration != "0m":
            rule["for"] = alert.duration
        rules.append(rule)
    return {"name": f"lookout-operational-{spec.service}", "rules": rules}
