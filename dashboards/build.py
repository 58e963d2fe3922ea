"""The executive, on-call and debug dashboards for a service, from its SLO spec.

Every metric name comes from the catalog or from the SLO rule names, so a panel cannot
show a metric that does not exist; tests/dashboards runs every query against a real
Prometheus that scraped a loaded sidecar.
"""

from __future__ import annotations

import json
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    AlertList,
    Annotations,
    Dashboard,
    DashboardLink,
    Table,
    Text,
    Time,
)

from lookout.dashboards.panels import (
    DATASOURCE,
    RATE,
    SELECTOR,
    Grid,
    heatmap,
    stat,
    table,
    templating,
    timeseries,
)
from lookout.slo import catalog, links, names
from lookout.slo.burn import TIERS
from lookout.slo.spec import ServiceSpec, format_duration

SLO_SELECTOR = 'model=~"$model"'
# recorded per model version (alerts/audit_rules.py): no namespace left to filter on
AUDITED_SELECTOR = 'model=~"$model",version=~"$version"'
# kube-state-metrics' restarts counter: not lookout's, so not in its catalog
KUBE_RESTARTS = "kube_pod_container_status_restarts_total"
TRACES = "${traces}"


def _rate(spec: catalog.MetricSpec, extra: str = "") -> str:
    selector = SELECTOR + ("," + extra if extra else "")
    return f"rate({spec.sample_name}{{{selector}}}[{RATE}])"


def _quantile(q: float, spec: catalog.MetricSpec) -> str:
    return (f"histogram_quantile({q}, sum by (le) (rate({spec.bucket_name}{{{SELECTOR}}}"
            f"[{RATE}])))")


def _proxy(denominator: catalog.MetricSpec, by: str = "",
           numerator: catalog.MetricSpec = catalog.SHADOW_MATCHED_BOXES) -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} ({_rate(numerator)}) / sum{group} ({_rate(denominator)})"


def _robust_recall(by: str = "") -> str:
    return _proxy(catalog.SHADOW_CONFIRMED_REFERENCE_BOXES, by,
                  catalog.SHADOW_CONFIRMED_MATCHED_BOXES)


def _unknown_share() -> str:
    """Share of evaluated images in windows whose proxies were not to be believed."""
    untrusted = _rate(catalog.SHADOW_UNTRUSTED, 'count="images"')
    evaluated = _rate(catalog.SHADOW_EVALUATIONS, 'outcome="ok"')
    return f"(sum ({untrusted}) or vector(0)) / sum ({evaluated})"


def _version_annotation() -> dict[str, Any]:
    info = f'{catalog.MODEL_INFO.name}{{{SELECTOR},role="primary"}}'
    return {
        "name": "model version changes", "enable": True, "iconColor": "orange",
        "datasource": DATASOURCE,
        "expr": f"count by (model, version) ({info}) unless "
                f"count by (model, version) ({info} offset 5m)",
        "titleFormat": "{{model}} version {{version}} in service",
        "step": "1m",
    }


def _dashboard(spec: ServiceSpec, title: str, uid: str, grid: Grid,
               links: list[DashboardLink], traces: bool = False) -> Dashboard:
    return Dashboard(
        title=f"{spec.service} · {title}", uid=uid, tags=["lookout", spec.service],
        panels=grid.panels, templating=templating(spec.traces if traces else None),
        annotations=Annotations([_version_annotation()]), links=links,
        time=Time("now-24h", "now"), refresh="1m", timezone="utc",
    ).auto_panel_ids()


def _links(spec: ServiceSpec) -> list[DashboardLink]:
    return [DashboardLink(title="lookout", type="dashboards", tags=["lookout"],
                          asDropdown=True, keepTime=True, includeVars=True),
            # the link carries its own time range: Grafana's from/to would be refused
            DashboardLink(title="sample gallery", type="link", icon="external link",
                          uri=links.for_dashboard(spec), targetBlank=True, keepTime=False,
                          tooltip="the frames sampled in this time range, for this "
                                  "model and version")]


def _traces_panel(spec: ServiceSpec) -> Table:
    """Recent traces of the selected models and versions, from Tempo (TraceQL) or Jaeger
    (search by service and tags), as the spec's `traces` says."""
    model, version = "${model:regex}", "${version:regex}"
    if spec.traces == "jaeger":
        target = {"refId": "A", "datasource": TRACES, "queryType": "search",
                  "service": "${service_name}", "limit": 20,
                  "tags": "lookout.model.name=${model} lookout.model.version=${version}"}
    else:
        target = {"refId": "A", "datasource": TRACES, "queryType": "traceql",
                  "tableType": "traces", "limit": 20,
                  "query": f'{{ resource.service.name =~ "${{service_name}}" && '
                           f'span."lookout.model.name" =~ "{model}" && '
                           f'span."lookout.model.version" =~ "{version}" }}'}
    return Table(title="Recent traces", dataSource=TRACES, targets=[target],
                 description="Spans the sidecars exported (sampled, and every server "
                             "error), found by service.name and the lookout.model.* "
                             "attributes.")


def executive(spec: ServiceSpec) -> Dashboard:
    grid = Grid()
    period = format_duration(spec.period_seconds)
    for slo in spec.slos:
        selector = f'slo="{slo.name}",{SLO_SELECTOR}'
        grid.add(stat(f"{slo.name}: error budget left ({period})",
                      [(f"{names.BUDGET_REMAINING}{{{selector}}}", slo.name)],
                      unit="percentunit",
                      description=f"Objective {slo.objective:.6g}; 100% untouched, below 0% "
                                  f"spent."), width=6, height=5)
        grid.add(stat(f"{slo.name}: burn rate (1h)",
                      [(f'{names.BURN_RATE.format(window="1h")}{{{selector}}}', slo.name)],
                      description="1 spends the budget exactly over the period."),
                 width=6, height=5)
    requests = catalog.REQUESTS.sample_name
    grid.add(timeseries("Requests per day", [(
        f"sum(increase({requests}{{{SELECTOR}}}[1d]))", "requests")]))
    grid.add(timeseries("Alerts fired per day", [(
        'sum by (severity) (count_over_time(ALERTS{alertstate="firing",'
        f'{SLO_SELECTOR}}}[1d])) or vector(0)', "{{severity}}")]))
    grid.add(timeseries("Precision and recall proxies", [
        (_proxy(catalog.SHADOW_PRIMARY_BOXES), "precision proxy"),
        (_proxy(catalog.SHADOW_REFERENCE_BOXES), "recall proxy"),
        (_robust_recall(), "robust recall proxy"),
        (_unknown_share(), "quality unknown (reference out of distribution)")],
        unit="percentunit",
        description="Quality unknown: the share of shadow-evaluated images in windows where "
                    "the reference model left its normal behaviour; the quality SLOs do not "
                    "count them."))
    _audit_panels(grid)
    grid.add(timeseries("Drift alarms by feature", [(
        f"max by (feature) ({catalog.DRIFT_ALARM.name}{{{SELECTOR}}})", "{{feature}}")]))
    grid.add(timeseries("Cost proxy: GPU-seconds per 1k inferences", [(
        f"sum({_of_pods(catalog.GPU_UTILIZATION.name)}) * 1000 / "
        f"sum({_rate(catalog.REQUESTS)})", "GPU-s / 1k")],
        description="NVML utilisation of the GPUs of the pods serving these models over "
                    "their request rate (a MIG instance reports no utilisation)."))
    return _dashboard(spec, "executive", f"lookout-{spec.service}-executive", grid,
                      _links(spec))


def _audited(quantity: str, by: str = "version, rate") -> str:
    return (f"max by ({by}) ({catalog.AUDIT_ESTIMATE.name}{{{SELECTOR},"
            f'class="all",quantity="{quantity}"}})')


def _audit_panels(grid: Grid) -> None:
    """What the newest labelled audit found, beside the live proxies: the proxies are
    only as good as their measured bias, and an old audit says little of today."""
    grid.add(timeseries("Audited precision and recall (labelled) beside the proxies", [
        (_audited("audited"), "{{version}} audited {{rate}}"),
        (_audited("lower"), "{{version}} {{rate}} 95% lower"),
        (_audited("upper"), "{{version}} {{rate}} 95% upper"),
        (_audited("proxy"), "{{version}} {{rate}} proxy on the audited images"),
        (_proxy(catalog.SHADOW_PRIMARY_BOXES), "precision proxy (live)"),
        (_proxy(catalog.SHADOW_REFERENCE_BOXES), "recall proxy (live)"),
        (f"max by (version, rate) ({names.PROXY_CORRECTED}{{{AUDITED_SELECTOR}}})",
         "{{version}} {{rate}} proxy corrected by its audit (1h)")],
        unit="percentunit",
        description="From `lookout audit import`: every class, with its 95% interval. A "
                    "proxy on the audited images outside the interval is biased by the "
                    "difference (alert LookoutProxyBiasHigh); the corrected proxy is the "
                    "live one plus that bias, as good as the audit is recent (its age "
                    "beside). Empty until a version of the selected models is audited."),
        width=18)
    grid.add(stat("Age of the newest audit", [(
        f"max by (version) ({names.AUDIT_AGE}{{{AUDITED_SELECTOR}}})", "{{version}}")],
        unit="s",
        description="Since the end of the traffic window its images were drawn from."),
        width=6)


def _of_pods(expr: str) -> str:
    """A pod-level GPU series, kept for the pods that serve the selected models."""
    return (f"({expr}) * on (instance) group_left () "
            f'max by (instance) ({catalog.MODEL_INFO.name}{{{SELECTOR},role="primary"}})')


def oncall(spec: ServiceSpec) -> Dashboard:
    grid = Grid()
    grid.add(timeseries("Latency as the client sees it (sidecar)", [
        (_quantile(q, catalog.REQUEST_DURATION), f"p{round(q * 100)}")
        for q in (0.5, 0.95, 0.99)], unit="s", exemplar=True,
        description="Exemplars link to the request's trace."))
    grid.add(timeseries("Latency of the inference server (upstream)", [
        (_quantile(q, catalog.UPSTREAM_DURATION), f"p{round(q * 100)}")
        for q in (0.5, 0.95, 0.99)], unit="s", exemplar=True,
        description="Sidecar minus upstream is network and proxy time."))
    failed = _rate(catalog.REQUESTS, f'code=~"{catalog.FAILED_CODE_REGEX}"')
    grid.add(timeseries("Error rate by code", [(
        f"sum by (code) ({failed}) / scalar(sum({_rate(catalog.REQUESTS)}))", "{{code}}")],
        unit="percentunit"))
    burn_queries = []
    for tier in TIERS:
        for window in (tier.long_seconds, tier.short_seconds):
            name = format_duration(window)
            query = f'{names.BURN_RATE.format(window=name)}{{{SLO_SELECTOR}}}'
            if (query, f"{{{{slo}}}} {name}") not in burn_queries:
                burn_queries.append((query, f"{{{{slo}}}} {name}"))
    factors = ", ".join(f"{t.tier}: {t.factor(spec.period_seconds):.3g}x" for t in TIERS)
    grid.add(timeseries("Burn rates per window", burn_queries,
                        description=f"Alert thresholds ({format_duration(spec.period_seconds)} "
                                    f"period): {factors}."))
    grid.add(table("Models in service", [(
        f"count by (model, version, role, sha256, served_name, served_version) "
        f"({catalog.MODEL_INFO.name}{{{SELECTOR}}})",
        "")]), width=12)
    grid.add(table("Pod restarts (1h) and the version each pod serves", [(
        f'sum by (pod) (increase({KUBE_RESTARTS}{{namespace=~"$namespace"}}[1h])) '
        f"* on (pod) group_left (model, version) max by (pod, model, version) "
        f"({catalog.MODEL_INFO.name}{{{SELECTOR}}})", "")],
        description="Restarts from kube-state-metrics, for the pods that serve the "
                    "selected models."), width=12)
    total = catalog.GPU_MEMORY_TOTAL.name
    grid.add(timeseries("GPU utilisation and memory", [
        (_of_pods(catalog.GPU_UTILIZATION.name), "util {{instance}} {{gpu}}"),
        (_of_pods(f"{catalog.GPU_MEMORY_USED.name} / {total}"), "memory {{instance}} {{gpu}}"),
        (_of_pods(f"{catalog.GPU_PROCESS_MEMORY.name} / {total}"),
         "the pod's processes {{instance}} {{gpu}}")], unit="percentunit",
        description=f"From NVML in each sidecar; {catalog.GPU_UP.name} 0 (no driver or "
                    f"GPU visible to lookout) leaves it empty."))
    grid.add(timeseries("GPU throttling and errors", [
        (f"sum by (instance, gpu, reason) "
         f"({_of_pods(f'rate({catalog.GPU_THROTTLE_SECONDS.sample_name}[{RATE}])')})",
         "throttled {{reason}} {{instance}} {{gpu}}"),
        (f"sum by (instance, gpu, xid) "
         f"({_of_pods(f'increase({catalog.GPU_XID_ERRORS.sample_name}[{RATE}])')})",
         "XID {{xid}} {{instance}} {{gpu}}"),
        (f"sum by (instance, gpu, type) "
         f"({_of_pods(f'increase({catalog.GPU_ECC_ERRORS.sample_name}[{RATE}])')})",
         "ECC {{type}} {{instance}} {{gpu}}")],
        description="Throttling as the share of time clocks were held down; XID and ECC "
                    "errors as counts per window."))
    grid.add(timeseries("Queue drops and component errors", [
        (f"sum by (queue) (rate({catalog.QUEUE_DROPPED.sample_name}[{RATE}]))",
         "dropped {{queue}}"),
        (f"sum by (component) (rate({catalog.COMPONENT_ERRORS.sample_name}[{RATE}]))",
         "errors {{component}}")]))
    grid.add(AlertList(title="Firing alerts", stateFilter=["alerting"], limit=20))
    return _dashboard(spec, "on-call", f"lookout-{spec.service}-oncall", grid, _links(spec))


def debug(spec: ServiceSpec) -> Dashboard:
    grid = Grid()
    grid.add(timeseries("Detections per second by class", [(
        f"sum by (class) ({_rate(catalog.DETECTIONS)})", "{{class}}")]))
    grid.add(heatmap("Detection confidence", (
        f"sum by (le) (rate({catalog.DETECTION_CONFIDENCE.bucket_name}{{{SELECTOR}}}"
        f"[{RATE}]))")))
    grid.add(timeseries("Precision proxy by class", [(
        _proxy(catalog.SHADOW_PRIMARY_BOXES, "class"), "{{class}}")], unit="percentunit"))
    grid.add(timeseries("Recall proxy by class", [(
        _proxy(catalog.SHADOW_REFERENCE_BOXES, "class"), "{{class}}")], unit="percentunit"))
    grid.add(timeseries("Robust recall proxy by class (flip-confirmed reference boxes)", [(
        _robust_recall("class"), "{{class}}")], unit="percentunit"))
    grid.add(table("Newest audit by class: audited, 95% interval, proxy", [(
        f"max by (version, class, rate, quantity) "
        f"({catalog.AUDIT_ESTIMATE.name}{{{SELECTOR}}})", "")],
        description="From `lookout audit import` (quantity: audited, lower, upper, proxy on "
                    "the same images)."), width=12)
    grid.add(timeseries("Proxy trust and why not", [
        (f"min by (instance) ({catalog.PROXY_TRUST.name}{{{SELECTOR}}})", "trust {{instance}}"),
        (f"max by (reason) ({catalog.PROXY_DISTRUST.name}{{{SELECTOR}}})", "{{reason}}")],
        description="1: the reference behaves as on the traffic its band was learnt from. "
                    "A reason at 1: that statistic of its last window left the band."))
    grid.add(heatmap("Box size (share of the frame)", (
        f"sum by (le) (rate({catalog.DETECTION_BOX_AREA.bucket_name}{{{SELECTOR}}}[{RATE}]))")))
    grid.add(timeseries("Drift statistic / threshold by feature", [(
        f"max by (feature) ({catalog.DRIFT_STATISTIC.name}{{{SELECTOR}}} / "
        f"{catalog.DRIFT_THRESHOLD.name}{{{SELECTOR}}})", "{{feature}}")],
        description="Above 1: the feature's last window crossed its alarm threshold."))
    grid.add(timeseries("Drift PSI by feature", [(
        f"max by (feature) ({catalog.DRIFT_PSI.name}{{{SELECTOR}}})", "{{feature}}")]))
    grid.add(timeseries("Shadow evaluations by outcome", [(
        f"sum by (outcome) ({_rate(catalog.SHADOW_EVALUATIONS)})", "{{outcome}}")]))
    grid.add(timeseries("Samples stored by strategy", [(
        f"sum by (strategy) (rate({catalog.SAMPLES_STORED.sample_name}[{RATE}]))",
        "{{strategy}}")],
        description="Empty unless the sidecar has a sample store (`sample_dir`)."))
    grid.add(timeseries("Parse failures by reason", [(
        f"sum by (reason) ({_rate(catalog.PARSE_FAILURES)})", "{{reason}}")]))
    grid.add(_traces_panel(spec), width=24, height=8)
    runbooks = "\n".join(f"- [{alert}]({spec.runbook_base_url}/{alert}.md)"
                         for alert in names.alert_names({s.kind for s in spec.slos}))
    grid.add(Text(title="Samples and runbooks", mode="markdown", content=(
        f"**[The frames of this time range in the sample gallery]({links.for_dashboard(spec)})** "
        "(the admin port of a pod: `kubectl port-forward pod/<pod> 9090`, then sign in with "
        "the admin token).\n\n"
        "As JSON: `GET http://<pod>:9090/samples?since=${__from:date:seconds}"
        "&until=${__to:date:seconds}&version=${version}`, or from a shell: "
        "`lookout samples list --url http://<pod>:9090 --since ${__from:date:seconds} "
        "--until ${__to:date:seconds}` (export: `lookout samples export ... -o out.zip`)\n\n"
        f"**Runbooks**\n\n{runbooks}\n")), width=24, height=10)
    return _dashboard(spec, "debug", f"lookout-{spec.service}-debug", grid, _links(spec),
                      traces=True)


def dashboards(spec: ServiceSpec) -> dict[str, str]:
    """File name -> dashboard JSON."""
    return {f"{name}.json": json.dumps(build(spec).to_json_data(), cls=DashboardEncoder,
                                       indent=2, sort_keys=True) + "\n"
            for name, build in (("executive", executive), ("oncall", oncall),
                                ("debug", debug))}


def provisioning() -> dict[str, Any]:
    """Grafana's file provider for the dashboards folder."""
    return {"apiVersion": 1, "providers": [{
        "name": "lookout", "folder": "lookout", "type": "file", "disableDeletion": False,
        "updateIntervalSeconds": 60, "allowUiUpdates": False,
        "options": {"path": "/var/lib/grafana/dashboards/lookout"},
    }]}


def configmap(spec: ServiceSpec, files: dict[str, str]) -> dict[str, Any]:
    """For the Grafana sidecar convention: it loads ConfigMaps labelled grafana_dashboard."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"lookout-{spec.service}-dashboards",
                         "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of":
                                    "lookout"}},
            "data": dict(sorted(files.items()))}



