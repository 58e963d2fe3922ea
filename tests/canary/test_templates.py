"""The generated Argo Rollouts and Flagger templates against their CRD schemas, the
shipped `canary watch` manifests against Kubernetes', and the template queries' shape.
(That the queries run and tell a worse canary from an equal one is shown on a real
Prometheus in tests/e2e/test_canary.py.)"""

from __future__ import annotations

import copy
import subprocess
import sys

import jsonschema
import pytest
import yaml

from lookout.canary import templates
from lookout.canary.manifests import RULES
from lookout.slo.canary import metrics_for
from lookout.slo.spec import load_spec, parse_spec
from tests.support.processes import REPO
from tests.support.schemas import crd_validator, validate_kubernetes

SPEC = load_spec(REPO / "slo.yaml")
ANALYSIS = crd_validator("argo-rollouts-analysistemplate.yaml", "AnalysisTemplate")
METRIC_TEMPLATE = crd_validator("flagger.yaml", "MetricTemplate")
CANARY = crd_validator("flagger.yaml", "Canary")


def _flagger_canary(analysis: dict) -> dict:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "shelf-detector"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "shelf-detector"},
                     "service": {"port": 8080}, **analysis}}


def test_the_analysis_template_validates_and_gates_every_metric() -> None:
    document = templates.analysis_template(SPEC)
    ANALYSIS.validate(document)
    names = [m["name"] for m in document["spec"]["metrics"]]
    judged = [m.name for m in metrics_for(SPEC)]
    assert names == judged + [f"burn-{slo.name}" for slo in SPEC.slos]
    assert {d["metricName"] for d in document["spec"]["dryRun"]} == {
        m.name for m in metrics_for(SPEC) if not m.critical}
    for metric in document["spec"]["metrics"]:
        # nothing (too few events) is neither success nor failure: inconclusive
        for condition in ("successCondition", "failureCondition"):
            assert metric[condition].startswith("len(result) > 0 && ")
        query = metric["provider"]["prometheus"]["query"]
        assert templates.ARGO_CANARY in query
        assert "service" not in query  # scoped by model and version only


def test_the_flagger_templates_and_analysis_validate() -> None:
    documents = templates.metric_templates(SPEC)
    for document in documents:
        METRIC_TEMPLATE.validate(document)
        query = document["spec"]["query"]
        assert templates.FLAGGER_CANARY in query
        # the comparisons follow the Canary's interval; burn rates use a fixed window
        burn = document["metadata"]["name"].startswith("lookout-shelf-detector-burn-")
        assert (templates.FLAGGER_WINDOW in query) is not burn
    analysis = templates.flagger_analysis(SPEC)
    CANARY.validate(_flagger_canary(analysis))
    referenced = {m["templateRef"]["name"] for m in analysis["analysis"]["metrics"]}
    assert referenced == {d["metadata"]["name"] for d in documents}
    critical = {m.name for m in metrics_for(SPEC) if m.critical}
    assert {m["name"] for m in analysis["analysis"]["metrics"]} == critical | {
        f"burn-{slo.name}" for slo in SPEC.slos}


@pytest.mark.parametrize(("validator", "document", "break_it"), [
    (ANALYSIS, "argo", lambda d: d["spec"]["metrics"][0].update(successCondtion="x")),
    (ANALYSIS, "argo", lambda d: d["spec"]["metrics"][0].pop("provider")),
    (ANALYSIS, "argo", lambda d: d["spec"]["metrics"][0].update(count=[6])),
    (METRIC_TEMPLATE, "flagger", lambda d: d["spec"]["provider"].update(type="prom")),
    (METRIC_TEMPLATE, "flagger", lambda d: d["spec"].pop("query")),
    (CANARY, "canary", lambda d: d["spec"]["analysis"].update(interval="1 minute")),
    (CANARY, "canary", lambda d: d["spec"]["analysis"]["metrics"][0].update(
        thresholdRange={"max": "0"})),
])
def test_the_schemas_catch_broken_documents(validator, document, break_it) -> None:
    """The schemas are strict enough to fail a document with a wrong field."""
    good = {"argo": lambda: templates.analysis_template(SPEC),
            "flagger": lambda: templates.metric_templates(SPEC)[0],
            "canary": lambda: _flagger_canary(templates.flagger_analysis(SPEC))}[document]()
    broken = copy.deepcopy(good)
    break_it(broken)
    validator.validate(good)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_without_quality_slos_no_proxy_gates_are_generated() -> None:
    spec = parse_spec({"service": "edge", "model": "m", "slos": [
        {"name": "availability", "kind": "availability", "objective": 0.99}]})
    names = [m["name"] for m in templates.analysis_template(spec)["spec"]["metrics"]]
    assert names == ["error-rate", "latency-p95", "burn-availability"]
    ANALYSIS.validate(templates.analysis_template(spec))


def test_the_shipped_watch_manifests_are_generated_and_validate() -> None:
    shipped = (REPO / "k8s" / "manifests" / "canary-watch.yaml").read_text()
    generated = subprocess.run([sys.executable, "-m", "lookout", "canary", "manifests"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert shipped == generated, \
        "regenerate with: lookout canary manifests > k8s/manifests/canary-watch.yaml"
    documents = list(yaml.safe_load_all(shipped))
    for document in documents:
        validate_kubernetes(document)
    [role] = [d for d in documents if d["kind"] == "Role"]
    assert role["rules"] == RULES
    granted = {verb for rule in RULES for verb in rule["verbs"]}
    assert granted <= {"get", "list", "patch", "create"}  # no delete, update, watch or *
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["args"][:2] == ["canary", "watch"]


def test_openslo_ratio_slos_get_no_canary_alone_burn_gate() -> None:
    """The user's own PromQL cannot be scoped to one version, so lookout does not claim
    a canary-alone burn rate for it; the judged metrics still gate the canary."""
    from tests.slo.test_spec import OPENSLO

    spec = parse_spec(yaml.safe_load(OPENSLO))
    argo = templates.analysis_template(spec)
    ANALYSIS.validate(argo)
    assert not [m for m in argo["spec"]["metrics"] if m["name"].startswith("burn-")]
    for document in templates.metric_templates(spec):
        METRIC_TEMPLATE.validate(document)
        assert "{{" not in document["spec"]["query"].replace(templates.FLAGGER_WINDOW, "") \
            .replace(templates.FLAGGER_BASELINE, "").replace(templates.FLAGGER_CANARY, "")
