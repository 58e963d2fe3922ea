"""The canary gate end to end: a real Prometheus scraping three sidecars under load —
v1 and v1b in front of the demo server with the shipped primary model, v2 in front of a
deliberately worse model (the primary with its input darkened inside the graph), each
shadow-running the reference model — judged by `lookout canary judge`, by the queries
of the generated Argo AnalysisTemplate and Flagger MetricTemplates, and by `lookout
canary watch`, whose rollback goes to the Kubernetes API stand-in."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

from lookout.canary import templates
from lookout.lookout_demo.baseline import DRIFT_BASELINE
from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.slo import catalog
from lookout.slo.spec import parse_spec
from tests.support.kube_api import KubeApiStandIn
from tests.support.processes import (
    ManagedProcess,
    SidecarProcess,
    request,
    require_tool,
    start_sidecar,
    wait_until,
)
from tests.support.prometheus import PrometheusServer
from tests.support.shadow_stack import (
    shadow_options,
    start_demo_upstream,
    wait_for_reference_model,
)

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("canary")

MODEL = "yolo-test"
LOAD_SECONDS = 60
EXTRA_LOAD_SECONDS, EXTRA_LOAD_STEPS = 15, 6
INTERVAL = 5
SPEC = {
    "service": "shelf", "model": MODEL, "low_traffic_min_events": 100,
    "slos": [{"name": "availability", "kind": "availability", "objective": 0.999},
             {"name": "precision", "kind": "quality", "proxy": "precision", "objective": 0.8},
             {"name": "recall", "kind": "quality", "proxy": "recall", "objective": 0.75},
             {"name": "no-drift", "kind": "drift", "objective": 0.95}],
}


def darkened_model(path: Path, factor: float = 0.4) -> Path:
    """The primary model with a Mul in front of its input: it sees every image 60%
    darker, so it misses and confuses objects the reference still finds."""
    model = onnx.load(model_path("primary"))
    graph = model.graph
    original = graph.input[0]
    raw = onnx.ValueInfoProto()
    raw.CopyFrom(original)
    raw.name = "raw_images"
    graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "darken"))
    graph.node.insert(0, helper.make_node("Mul", [raw.name, "darken"], [original.name]))
    graph.input.remove(original)
    graph.input.insert(0, raw)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@dataclass
class CanaryLab:
    prometheus: PrometheusServer
    sidecars: dict[str, SidecarProcess]
    spec_path: Path
    sparse_end: float  # after a handful of frames: too little to judge
    load_start: float
    load_end: float
    directory: Path

    def judge(self, baseline: str, canary: str, *extra: str, end: float | None = None,
              window: int | None = None, interval: int = INTERVAL) -> tuple[int, dict]:
        end = self.load_end if end is None else end
        window = window or INTERVAL * math.ceil((end - self.load_start) / INTERVAL)
        result = subprocess.run(
            [sys.executable, "-m", "lookout", "canary", "judge",
             "--prometheus", f"http://127.0.0.1:{self.prometheus.port}",
             "--baseline-version", baseline, "--canary-version", canary,
             "--slo", str(self.spec_path), "--window", f"{window}s",
             "--interval", f"{interval}s", "--at", f"{end:.3f}", "--json", *extra],
            capture_output=True, text=True, timeout=120)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def watch(self, canary: str, kubeconfig: Path, *extra: str) -> subprocess.CompletedProcess:
        window = INTERVAL * math.ceil((time.time() - self.load_start) / INTERVAL + 1)
        return subprocess.run(
            [sys.executable, "-m", "lookout", "canary", "watch",
             "--prometheus", f"http://127.0.0.1:{self.prometheus.port}",
             "--baseline-version", "v1", "--canary-version", canary,
             "--slo", str(self.spec_path), "--window", f"{window}s",
             "--interval", f"{INTERVAL}s", "--kubeconfig", str(kubeconfig),
             "--namespace", "shop", "--iterations", "1", *extra],
            capture_output=True, text=True, timeout=120)


def _drive(sidecars: dict[str, SidecarProcess], seconds: float, first_seed: int) -> int:
    """Every sidecar gets the same frames in the same order (paired traffic, as a
    mirrored canary sees: a difference is the model's, never the sample's), one request
    at a time per sidecar, for `seconds`."""
    stop = time.monotonic() + seconds
    sent = [0]

    def client(sidecar: SidecarProcess) -> None:
        seed = first_seed
        while time.monotonic() < stop:
            response = request(sidecar.port, "POST", "/predict", body=generate_scene(seed).jpeg(),
                               headers={"Content-Type": "image/jpeg"})
            assert response.status == 200, response.body[:200]
            seed += 1
            sent[0] += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in sidecars.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent[0]


def _wait_scraped(prometheus: PrometheusServer, sidecars: dict[str, SidecarProcess]) -> None:
    """Until Prometheus holds each sidecar's final shadow and request counters."""
    ok = catalog.SHADOW_EVALUATIONS.sample_name
    for version, sidecar in sidecars.items():
        def settled(version: str = version, sidecar: SidecarProcess = sidecar) -> bool:
            queued = sidecar.metric(ok, outcome="ok")
            done = prometheus.query(f'sum({ok}{{version="{version}",outcome="ok"}}) '
                                    f'== {queued:g}')
            return bool(done) and queued == sidecar.metric(ok, outcome="ok")
        wait_until(settled, 120, f"Prometheus to scrape {version}'s final counters",
                   interval=0.5)


def _short_of_data(judgement: dict) -> bool:
    """Any metric or burn check without enough data: a verdict of fail on one metric (a
    worse precision) is given before the judge asks whether others lack data."""
    return any(metric["outcome"] == "nodata" for metric in judgement["metrics"]) or \
        any(check["ok"] is None for check in judgement["burn"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryLab]:
    binary = require_tool("prometheus")
    directory = tmp_path_factory.mktemp("canary")
    spec_path = directory / "slo.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    worse = darkened_model(directory / "darkened.onnx")
    processes: list[ManagedProcess] = []
    sidecars: dict[str, SidecarProcess] = {}
    prometheus = None
    try:
        good, good_port = start_demo_upstream()
        bad, bad_port = start_demo_upstream(str(worse))
        processes += [good, bad]
        # the demo's shipped drift baseline (clean scenes, as this traffic): calibrated
        # while the reference loads, where learning one from traffic took two minutes
        for version, port, primary in (("v1", good_port, None), ("v1b", good_port, None),
                                       ("v2", bad_port, str(worse))):
            sidecars[version] = start_sidecar(
                f"http://127.0.0.1:{port}", *shadow_options(MODEL, primary),
                "--model-version", version, "--drift-baseline-path", str(DRIFT_BASELINE),
                # paired traffic compares models only if every version evaluates every
                # frame: a reference that falls behind queues, never drops. With the
                # default 64, a busy machine can drop different frames on each sidecar,
                # the one way two builds of one model differ here (a full-suite run read
                # v1b's precision 0.0215 under v1's, past the Argo gate's 0.02 margin)
                "--shadow-queue-size", "1024", wait_ready=False)
        for sidecar in sidecars.values():
            wait_for_reference_model(sidecar)
        prometheus = PrometheusServer(binary, [f"127.0.0.1:{s.admin_port}"
                                               for s in sidecars.values()])
        prometheus.wait_for_series(f'{catalog.MODEL_INFO.name}{{role="reference"}}')
        _drive(sidecars, 3, first_seed=5_000_000)
        _wait_scraped(prometheus, sidecars)
        sparse_end = time.time()
        seed = 5_500_000
        while not all(s.metric(catalog.DRIFT_THRESHOLD.name) > 0
                      for s in sidecars.values()):  # drift calibrates first
            _drive(sidecars, 2, first_seed=seed)
            seed += 1000
        load_start = time.time()
        _drive(sidecars, LOAD_SECONDS, first_seed=6_000_000)
        _wait_scraped(prometheus, sidecars)
        lab = CanaryLab(prometheus, sidecars, spec_path, sparse_end, load_start, time.time(),
                        directory)
        # on a busy machine a minute may hold too few shadow-evaluated frames for the
        # judge: more load, in steps, until every version has enough (the judge says)
        for step in range(EXTRA_LOAD_STEPS):
            if not any(_short_of_data(lab.judge("v1", canary)[1])
                       for canary in ("v1b", "v2")):
                break
            _drive(sidecars, EXTRA_LOAD_SECONDS, first_seed=7_000_000 + step * 100_000)
            _wait_scraped(prometheus, sidecars)
            lab.load_end = time.time()
        yield lab
    finally:
        if prometheus:
            prometheus.stop()
        for sidecar in sidecars.values():
            sidecar.stop()
        for process in processes:
            process.terminate()


def _metric(document: dict, name: str) -> dict:
    return next(m for m in document["metrics"] if m["metric"] == name)


def test_a_worse_model_fails_on_the_quality_proxies(lab: CanaryLab) -> None:
    code, judgement = lab.judge("v1", "v2")
    assert (code, judgement["verdict"]) == (1, "fail"), judgement
    for proxy in ("precision", "recall"):
        metric = _metric(judgement, proxy)
        assert metric["outcome"] == "worse" and metric["critical"]
        assert metric["canary"] < metric["baseline"] - 0.1
    assert "precision" in judgement["reason"]
    assert _metric(judgement, "error-rate")["outcome"] == "same"


def test_two_builds_of_the_same_model_pass(lab: CanaryLab) -> None:
    code, judgement = lab.judge("v1", "v1b")
    assert (code, judgement["verdict"]) == (0, "pass"), (judgement["reason"],
                                                          judgement["metrics"])
    assert all(m["outcome"] != "nodata" for m in judgement["metrics"])
    assert all(check["ok"] for check in judgement["burn"])
    assert {check["slo"] for check in judgement["burn"]} == {s["name"] for s in SPEC["slos"]}


def test_too_little_traffic_is_inconclusive(lab: CanaryLab) -> None:
    code, judgement = lab.judge("v1", "v2", end=lab.sparse_end, window=20, interval=2)
    assert (code, judgement["verdict"]) == (2, "inconclusive"), judgement
    assert "too little data" in judgement["reason"]


def test_the_terminal_table_names_the_verdict(lab: CanaryLab) -> None:
    window = INTERVAL * math.ceil((lab.load_end - lab.load_start) / INTERVAL)
    result = subprocess.run(
        [sys.executable, "-m", "lookout", "canary", "judge",
         "--prometheus", f"http://127.0.0.1:{lab.prometheus.port}", "--model", MODEL,
         "--baseline-version", "v1", "--canary-version", "v2", "--window", f"{window}s",
         "--interval", f"{INTERVAL}s", "--at", f"{lab.load_end:.3f}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "precision *" in result.stdout


def _run_gate(lab: CanaryLab, query: str) -> float | None:
    [*result] = lab.prometheus.api("query", query=query, time=f"{lab.load_end:.3f}")["result"]
    assert len(result) <= 1
    return float(result[0]["value"][1]) if result else None


def _argo(query: str, baseline: str, canary: str) -> str:
    return (query.replace(templates.ARGO_BASELINE, baseline)
            .replace(templates.ARGO_CANARY, canary))


def _flagger(query: str, baseline: str, canary: str) -> str:
    return (query.replace(templates.FLAGGER_BASELINE, baseline)
            .replace(templates.FLAGGER_CANARY, canary)
            .replace(templates.FLAGGER_WINDOW, templates.QUERY_WINDOW))


def test_the_argo_and_flagger_gates_run_on_the_same_prometheus(lab: CanaryLab) -> None:
    spec = parse_spec(SPEC)
    argo = {m["name"]: m["provider"]["prometheus"]["query"]
            for m in templates.analysis_template(spec)["spec"]["metrics"]}
    flagger = {t["metadata"]["name"].removeprefix("lookout-shelf-"): t["spec"]["query"]
               for t in templates.metric_templates(spec)}
    for gates, substitute in ((argo, _argo), (flagger, _flagger)):
        for proxy in ("precision", "recall"):
            worse = _run_gate(lab, substitute(gates[proxy], "v1", "v2"))
            same = _run_gate(lab, substitute(gates[proxy], "v1", "v1b"))
            assert worse is not None and worse > 0.05, (proxy, worse)  # fails the gate
            assert same is not None and same <= 0, (proxy, same)  # passes it
        assert _run_gate(lab, substitute(gates["error-rate"], "v1", "v1b")) <= 0
        # a version with no traffic yields nothing: Argo's inconclusive, Flagger's halt
        assert _run_gate(lab, substitute(gates["precision"], "v1", "v9")) is None
        burn = _run_gate(lab, substitute(gates["burn-precision"], "v1", "v1b"))
        assert burn is not None and 0 < burn < 5.6


def test_watch_rolls_the_failed_canary_back_through_the_api(lab: CanaryLab) -> None:
    api = KubeApiStandIn()
    try:
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "shelf-canary", "namespace": "shop"},
                      "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "shelf"}},
                               "template": {"metadata": {"labels": {"app": "shelf"}},
                                            "spec": {"containers": [{"name": "yolo",
                                                                     "image": "yolo:v2"}]}}}}
        api.add("/apis/apps/v1/namespaces/shop/deployments", deployment)
        kubeconfig = api.kubeconfig(lab.directory)

        dry = lab.watch("v2", kubeconfig, "--canary-deployment", "shelf-canary", "--dry-run")
        assert dry.returncode == 1, dry.stderr
        assert "(dry run) would scale" in dry.stdout
        assert api.writes() == []

        healthy = lab.watch("v1b", kubeconfig, "--canary-deployment", "shelf-canary")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert api.writes() == []

        failed = lab.watch("v2", kubeconfig, "--canary-deployment", "shelf-canary")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        events = [json.loads(line) for line in failed.stdout.splitlines()]
        assert events[0]["verdict"] == "fail"
        assert [e["event"] for e in events[1:]] == ["rollback"] * 3
        canary = api.get("/apis/apps/v1/namespaces/shop/deployments/shelf-canary")
        assert canary["spec"]["replicas"] == 0
        assert canary["metadata"]["annotations"]["lookout.io/canary-verdict"] == "fail"
        assert "precision" in canary["metadata"]["annotations"]["lookout.io/canary-reason"]
        assert [r.path for r in api.requests if r.method == "POST"] == [
            "/apis/events.k8s.io/v1/namespaces/shop/events"]
    finally:
        api.close()
