"""The generated dashboards: structure, catalog-only metric names, and every panel's
every query run against a real Prometheus that scraped a loaded sidecar (shadow
evaluation and drift on) and evaluates the generated recording rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from lookout.cli.generate import OPERATIONAL, RULES, artefacts
from lookout.dashboards.build import KUBE_RESTARTS
from lookout.lookout_demo.baseline import DRIFT_BASELINE
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.store import SampleStore
from lookout.slo import catalog
from lookout.slo.spec import load_spec
from tests.support.audit_records import audit
from tests.support.processes import (
    request,
    require_tool,
    wait_until,
)
from tests.support.prometheus import PrometheusServer
from tests.support.shadow_stack import start_shadow_stack

REPO = Path(__file__).resolve().parents[2]
# families whose producer needs what this machine lacks: NVML (a GPU). A panel that
# reads any of these is excused.
NOT_PRODUCED_HERE = {catalog.GPU_UTILIZATION.name, catalog.GPU_MEMORY_USED.name,
                     catalog.GPU_MEMORY_TOTAL.name, catalog.GPU_PROCESS_MEMORY.name,
                     *(spec.sample_name for spec in (catalog.GPU_THROTTLE_SECONDS,
                                                     catalog.GPU_XID_ERRORS,
                                                     catalog.GPU_ECC_ERRORS))}
# and kube-state-metrics, which no test here runs
NOT_SCRAPED_HERE = (KUBE_RESTARTS,)
VARIABLES = {"$namespace": ".*", "$model": ".*", "$version": ".*", "$__rate_interval": "1m"}


def _boards() -> dict[str, dict]:
    files = artefacts(load_spec(REPO / "slo.yaml"))
    return {name: json.loads(text) for name, text in files.items()
            if name.startswith("grafana/dashboards/")}


def _queries(board: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", []) if target.get("expr")]


def oncall_panels() -> list[dict]:
    return _boards()["grafana/dashboards/oncall.json"]["panels"]


def test_three_dashboards_with_variables_links_and_version_annotations() -> None:
    boards = _boards()
    assert sorted(Path(n).stem for n in boards) == ["debug", "executive", "oncall"]
    for name, board in boards.items():
        variables = [v["name"] for v in board["templating"]["list"]]
        tracing = ["traces", "service_name"] if name.endswith("debug.json") else []
        assert variables == ["datasource", "namespace", "model", "version", *tracing]
        gallery = next(link for link in board["links"] if link["title"] == "sample gallery")
        assert not gallery["keepTime"] and not gallery["includeVars"]
        assert gallery["url"].endswith("/ui/samples?model=${model:csv}&version=${version:csv}"
                                       "&since=${__from:date:seconds}&until=${__to:date:seconds}")
        assert "version" in board["annotations"]["list"][0]["titleFormat"]
        assert all(p["gridPos"]["w"] <= 24 for p in board["panels"])
    executive = boards["grafana/dashboards/executive.json"]
    titles = [p["title"] for p in executive["panels"]]
    for slo in load_spec(REPO / "slo.yaml").slos:
        assert any(t.startswith(f"{slo.name}: error budget left") for t in titles)
    debug = boards["grafana/dashboards/debug.json"]
    text = next(p for p in debug["panels"] if p["type"] == "text")["options"]["content"]
    assert "/samples?since=" in text and "LookoutQualityBudgetBurn.md" in text
    assert "/ui/samples?model=${model:csv}" in text
    traces = next(p for p in debug["panels"] if p["title"] == "Recent traces")
    assert traces["datasource"] == "${traces}"
    assert 'span."lookout.model.name" =~ "${model:regex}"' in traces["targets"][0]["query"]
    restarts = next(p for p in oncall_panels() if p["title"].startswith("Pod restarts"))
    assert KUBE_RESTARTS in restarts["targets"][0]["expr"]
    oncall = boards["grafana/dashboards/oncall.json"]
    latency = next(p for p in oncall["panels"] if p["title"].startswith("Latency as"))
    assert all(t["exemplar"] for t in latency["targets"])


def test_dashboard_code_names_metrics_only_through_the_catalog() -> None:
    for source in (REPO / "dashboards").glob("*.py"):
        assert not re.search(r"lookout_[a-z]", source.read_text()), source.name
    known = {name for spec in catalog.ALL for name in (
        spec.name, spec.sample_name, spec.bucket_name, spec.count_name, spec.sum_name)}
    for board in _boards().values():
        used = set(re.findall(r"\blookout_[a-z_]+", json.dumps(board)))
        assert used <= known, used - known


def test_every_query_returns_series_from_a_live_sidecar(tmp_path) -> None:
    binary = require_tool("prometheus")
    files = artefacts(load_spec(REPO / "slo.yaml"))
    rule_files = []
    for name in (RULES, OPERATIONAL):
        # every group at the global 1 s: the drift slices' own 1m group would first run
        # anywhere in its first minute
        document = yaml.safe_load(files[name])
        for group in document["groups"]:
            group.pop("interval", None)
        path = tmp_path / Path(name).name
        path.write_text(yaml.safe_dump(document))
        rule_files.append(path)
    samples = tmp_path / "samples"
    store = SampleStore(samples)  # with an audit of the model, for the audit panels
    AuditRecords(store).write(audit("b1", model="yolo11n"))
    store.close()
    stack = start_shadow_stack("yolo11n", "--sample-dir", str(samples),
                               # the trust band learnt from 20 images: judged in this run
                               "--proxy-trust-window", "5",
                               "--proxy-trust-baseline-windows", "4",
                               # calibrated at start from the demo's clean scenes
                               "--drift-baseline-path", str(DRIFT_BASELINE))
    sidecar = stack.sidecar
    prometheus = PrometheusServer(binary, [f"127.0.0.1:{sidecar.admin_port}"], rule_files)
    try:
        send = stack.send_frames
        wait_until(lambda: f"{catalog.DRIFT_THRESHOLD.name}{{" in sidecar.metrics_text(), 120,
                   "the drift detector to be calibrated")
        send(range(30))  # more than one drift window, and the trust band's 20 images
        assert request(sidecar.port, "POST", "/predict", body=b"not an image",
                       headers={"Content-Type": "image/jpeg"}).status == 400
        wait_until(lambda: f"{catalog.DRIFT_STATISTIC.name}{{" in sidecar.metrics_text(), 60,
                   "a closed drift window")
        queries = [(board, title, expr) for board, content in _boards().items()
                   for title, expr in _queries(content)]

        def resolved(expr: str) -> str:
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            return expr

        def failing() -> list[str]:
            missing = []
            for board, title, expr in queries:
                used = set(re.findall(r"\blookout_[a-z_]+", expr))
                series = prometheus.query(resolved(expr))  # fails the test if it does not parse
                if not series and not used & NOT_PRODUCED_HERE \
                        and not any(name in expr for name in NOT_SCRAPED_HERE):
                    missing.append(f"{Path(board).stem} / {title}: {expr}")
            return missing

        for board in _boards().values():  # annotations fire only on a version change:
            for annotation in board["annotations"]["list"]:  # they must parse
                prometheus.query(resolved(annotation["expr"]))
        # rules evaluate every second; give them a few rounds to see the traffic
        try:
            wait_until(lambda: not failing(), 90, "every dashboard query to return series")
        except AssertionError:
            raise AssertionError("queries without series:\n" + "\n".join(failing())) from None
        assert len(queries) >= 30
    finally:
        prometheus.stop()
        stack.stop()
