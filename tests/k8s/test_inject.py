"""`lookout inject`: golden outputs for the example manifests, schema validation against
every Kubernetes minor version kubernetes-validate ships from 1.29, idempotency,
opt-out, Services, and the sidecar started from an injected spec's own env and args."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lookout.cli.kubernetes import manifests_yaml
from lookout.k8s import annotations
from lookout.k8s.inject import (
    CONTAINER,
    InjectError,
    InjectOptions,
    inject_documents,
    pod_monitors,
)
from tests.support.processes import (
    REPO,
    ManagedProcess,
    free_port,
    port_accepts,
    request,
    start_upstream,
    wait_until,
)
from tests.support.schemas import KUBERNETES_VERSIONS, validate_kubernetes

EXAMPLES = Path(__file__).parent / "examples"
GOLDEN = REPO / "tests" / "golden" / "k8s"
UPDATE = os.environ.get("LOOKOUT_UPDATE_GOLDEN") == "1"
VERSIONS = KUBERNETES_VERSIONS


def _inject(text: str, **options) -> tuple[list[dict], list[str]]:
    documents, outcome = inject_documents(list(yaml.safe_load_all(text)),
                                          InjectOptions(**options))
    return documents, outcome.warnings


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=60)


_validate = validate_kubernetes


def test_the_schemas_cover_1_29_to_the_newest() -> None:
    assert VERSIONS[0].startswith("1.29") and len(VERSIONS) >= 2


@pytest.mark.parametrize("example", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
def test_examples_match_their_golden_files_and_validate(example: str) -> None:
    result = _cli("inject", "-f", str(EXAMPLES / f"{example}.yaml"), "--pod-monitor")
    assert result.returncode == 0, result.stderr
    golden = GOLDEN / f"{example}.yaml"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text(), "regenerate with LOOKOUT_UPDATE_GOLDEN=1"
    for document in yaml.safe_load_all(result.stdout):
        if document["kind"] != "PodMonitor":
            _validate(document)


def test_shipped_webhook_manifests_are_generated_and_validate() -> None:
    shipped = (REPO / "k8s" / "manifests" / "webhook.yaml").read_text()
    assert shipped == manifests_yaml("lookout-system", InjectOptions().image), \
        "regenerate with: lookout webhook manifests > k8s/manifests/webhook.yaml"
    for document in yaml.safe_load_all(shipped):
        _validate(document)
    configuration = next(d for d in yaml.safe_load_all(shipped)
                         if d["kind"] == "MutatingWebhookConfiguration")
    for hook in configuration["webhooks"]:
        assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"]) == (
            "Ignore", "None", 5)


def _pod_spec(documents: list[dict], kind: str) -> dict:
    document = next(d for d in documents if d["kind"] == kind)
    return document["spec"]["template"]["spec"]


def test_the_port_is_taken_over_by_name_and_numbered_services_are_rewritten() -> None:
    documents, warnings = _inject((EXAMPLES / "fastapi.yaml").read_text())
    spec = _pod_spec(documents, "Deployment")
    app, sidecar = spec["containers"][0], spec["initContainers"][0]
    assert app["ports"] == [{"name": "web-app", "containerPort": 8000}]
    assert sidecar["ports"][0] == {"name": "web", "containerPort": 8080, "protocol": "TCP"}
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LOOKOUT_UPSTREAM"] == "http://127.0.0.1:8000"
    assert env["LOOKOUT_MODEL_NAME"] == "shelf-yolo11n"
    assert env["LOOKOUT_MODEL_VERSION"] == "2026.11.3"  # the app image's tag
    assert "random share=0.05" in env["LOOKOUT_SAMPLE_STRATEGIES"]
    assert env["LOOKOUT_SHUTDOWN_GRACE"] == "40"  # inside terminationGracePeriodSeconds
    assert env["LOOKOUT_ADMIN_TOKEN_FILE"].startswith("/var/run/secrets/lookout/")
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    assert services["yolo-api"]["spec"]["ports"][0]["targetPort"] == "web"  # by name: as is
    assert services["yolo-api-internal"]["spec"]["ports"][0]["targetPort"] == "web"
    assert warnings == []
    # a probe finds a named port among its own container's ports: the app's probe
    # follows its port's new name, or it would find none
    assert app["readinessProbe"]["httpGet"]["port"] == "web-app"


def test_a_grpc_port_is_taken_over_beside_the_http_one() -> None:
    documents, warnings = _inject((EXAMPLES / "triton-grpc.yaml").read_text())
    spec = _pod_spec(documents, "Deployment")
    app, sidecar = spec["containers"][0], spec["initContainers"][0]
    assert [p["name"] for p in app["ports"]] == ["http-app", "grpc-app", "metrics"]
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"http": 8080, "grpc": 8081, "lookout-admin": 9090}
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LOOKOUT_GRPC_LISTEN"] == "0.0.0.0:8081"
    assert env["LOOKOUT_GRPC_UPSTREAM"] == "127.0.0.1:8001"
    # a gRPC probe takes a number, which the app keeps; a named one follows the rename
    assert app["readinessProbe"]["grpc"] == {"port": 8001}
    assert app["livenessProbe"]["httpGet"]["port"] == "http-app"
    (service,) = [d for d in documents if d["kind"] == "Service"]
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == \
        {"http": "http", "grpc": "grpc"}  # by number rewritten to the name
    assert warnings == []


def test_a_grpc_port_that_is_not_there_or_is_the_http_port_is_refused() -> None:
    manifest = (EXAMPLES / "triton-grpc.yaml").read_text()
    for value, message in (("grpc-nope", "no port named 'grpc-nope' (lookout.io/grpc-port)"),
                           ("http", "names the HTTP port")):
        with pytest.raises(InjectError, match=re.escape(message)):
            _inject(manifest.replace("lookout.io/grpc-port: grpc",
                                     f"lookout.io/grpc-port: {value}"))


def test_the_sidecar_is_hardened_and_keeps_a_guaranteed_pod_guaranteed() -> None:
    documents, _ = _inject((EXAMPLES / "fastapi.yaml").read_text())
    sidecar = _pod_spec(documents, "Deployment")["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["resources"]["requests"] == sidecar["resources"]["limits"]
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    probes = {k: sidecar[k]["httpGet"] for k in ("startupProbe", "readinessProbe",
                                                 "livenessProbe")}
    assert {p["port"] for p in probes.values()} == {"lookout-admin"}
    assert probes["readinessProbe"]["path"] == "/readyz"
    volumes = {v["name"]: v for v in _pod_spec(documents, "Deployment")["volumes"]}
    assert volumes["lookout-samples"]["emptyDir"] == {"sizeLimit": "2Gi"}
    assert volumes["lookout-token"]["secret"]["secretName"] == "lookout-admin-token"


def test_injecting_twice_changes_nothing() -> None:
    for example in EXAMPLES.glob("*.yaml"):
        once = _cli("inject", "-f", str(example)).stdout
        twice = _cli("inject", "-f", "-", stdin=once)
        assert twice.returncode == 0 and twice.stdout == once, example.name


def test_opt_out_and_host_network_pods_are_left_alone() -> None:
    text = (EXAMPLES / "rollout.yaml").read_text()
    opted_out = yaml.safe_load(text)
    opted_out["spec"]["template"]["metadata"]["annotations"] = {"lookout.io/inject": "false"}
    host = copy.deepcopy(yaml.safe_load(text))
    host["spec"]["template"]["spec"]["hostNetwork"] = True
    documents, outcome = inject_documents([opted_out, host], InjectOptions())
    assert documents == [opted_out, host]
    assert any("hostNetwork" in w for w in outcome.warnings)


def test_older_clusters_get_a_regular_container() -> None:
    documents, warnings = _inject((EXAMPLES / "job.yaml").read_text(), native_sidecar=False)
    spec = _pod_spec(documents, "Job")
    assert spec["containers"][-1]["name"] == CONTAINER and "initContainers" not in spec
    assert any("never completes" in w for w in warnings)


def test_ports_in_use_move_the_sidecar_and_services_not_in_the_input_are_warned_about() -> None:
    text = (EXAMPLES / "rollout.yaml").read_text().replace("9000", "8080")
    documents, warnings = _inject(text)
    sidecar = _pod_spec(documents, "Rollout")["initContainers"][0]
    assert sidecar["ports"][0]["containerPort"] == 8081  # 8080 is the app's
    assert any("no Service in the input" in w for w in warnings)


@pytest.mark.parametrize(("change", "message"), [
    ({"lookout.io/upstream-port": "grpc"}, "no port named 'grpc'"),
    ({"lookout.io/container": "sidecar"}, "no container named 'sidecar'"),
    ({"lookout.io/sample-rate": "2"}, "sample-rate"),
    ({"lookout.io/analysis-workers": "0"}, "analysis-workers"),
    ({"lookout.io/envoy-concurrency": "17"}, "envoy-concurrency"),
    ({"lookout.io/reference-url": "ftp://pool:21", "lookout.io/reference-name": "x"},
     "reference-url"),
    ({"lookout.io/reference-url": "grpc://pool:8001"}, "reference-name"),
    ({"lookout.io/sample-url": "s3:/bucket"}, "sample-url"),
    ({"lookout.io/sample-url": "s3://b/p", "lookout.io/sample-store-endpoint": "minio:9000"},
     "sample-store-endpoint"),
    ({"lookout.io/sample-store-secret": "creds"}, "need lookout.io/sample-url"),
    ({"lookout.io/reference-url": "grpc://pool:8001", "lookout.io/reference-name": "x",
      "lookout.io/reference-model": "/models/r.onnx"}, "choose one"),
])
def test_bad_annotations_are_refused_naming_them(change: dict, message: str) -> None:
    document = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    document["spec"]["template"]["metadata"]["annotations"] = change
    with pytest.raises(InjectError, match=message):
        inject_documents([document], InjectOptions())
    result = _cli("inject", "-f", "-", stdin=yaml.safe_dump(document))
    assert result.returncode == 1 and message.split("'")[0] in result.stderr


@pytest.mark.parametrize(("workers", "processes", "cpu", "memory", "shm"), [
    ("1", "1", "1", "512Mi", "80Mi"), ("3", "1", "3", "1024Mi", "200Mi"),
    ("2", "2", "3", "896Mi", "208Mi")])
def test_resources_and_shared_memory_follow_the_workers_and_processes(
        workers, processes, cpu, memory, shm) -> None:
    document = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    document["spec"]["template"]["metadata"]["annotations"] = {
        "lookout.io/analysis-workers": workers, "lookout.io/envoy-concurrency": processes}
    (injected,), _ = inject_documents([document], InjectOptions())
    spec = injected["spec"]["template"]["spec"]
    sidecar = spec["initContainers"][0]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LOOKOUT_ANALYSIS_WORKERS"] == workers
    assert env.get("LOOKOUT_ENVOY_CONCURRENCY", "1") == processes
    # what the sidecar itself will accept at start-up for that many workers and processes
    from lookout.sidecar.config import load_config
    from lookout.sidecar.processes.analysis_pool import ChannelSettings, check_channel
    from lookout.sidecar.settings import of

    check_channel(of(ChannelSettings, load_config(
        {"upstream": "http://127.0.0.1:9", "analysis_workers": workers,
         "envoy_concurrency": processes,
         "observation_queue_bytes": env["LOOKOUT_OBSERVATION_QUEUE_BYTES"]}, env={})),
        int(workers))
    assert sidecar["resources"]["limits"] == {"cpu": cpu, "memory": memory}
    assert {"name": "lookout-shm", "mountPath": "/dev/shm"} in sidecar["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == "lookout-shm")
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}


def test_the_former_request_processes_annotation_still_sets_envoys_threads_with_a_warning(
        ) -> None:
    """`lookout.io/request-processes` named the retired Python request path's processes;
    it is `lookout.io/envoy-concurrency` now. The old name is read (the new one wins when
    both are there), and the outcome warns, naming the new one."""
    document = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    document["spec"]["template"]["metadata"]["annotations"] = {
        "lookout.io/request-processes": "2"}
    (injected,), outcome = inject_documents([document], InjectOptions())
    env = {e["name"]: e.get("value")
           for e in injected["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env["LOOKOUT_ENVOY_CONCURRENCY"] == "2"
    assert any("lookout.io/request-processes is deprecated" in warning
               and "lookout.io/envoy-concurrency" in warning for warning in outcome.warnings)
    document = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    document["spec"]["template"]["metadata"]["annotations"] = {
        "lookout.io/request-processes": "2", "lookout.io/envoy-concurrency": "3"}
    (injected,), _ = inject_documents([document], InjectOptions())
    env = {e["name"]: e.get("value")
           for e in injected["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env["LOOKOUT_ENVOY_CONCURRENCY"] == "3"


def test_the_fleet_store_annotations_make_the_emptydir_its_spool() -> None:
    document = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    document["spec"]["template"]["metadata"]["annotations"] = {
        "lookout.io/sample-url": "s3://team-samples/detector",
        "lookout.io/sample-store-secret": "samples-writer"}
    (injected,), _ = inject_documents([document], InjectOptions())
    spec = injected["spec"]["template"]["spec"]
    sidecar = spec["initContainers"][0]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LOOKOUT_SAMPLE_URL"] == "s3://team-samples/detector"
    assert env["LOOKOUT_SAMPLE_DIR"] == "/var/lib/lookout/samples"  # the spool
    assert sidecar["envFrom"] == [{"secretRef": {"name": "samples-writer"}}]
    assert not any("AWS" in e["name"] for e in sidecar["env"])  # credentials stay in it
    validate_kubernetes(injected)
    from lookout.sidecar.config import load_config

    assert load_config(env={k: v for k, v in env.items() if k.startswith("LOOKOUT_")
                            and v is not None}).sample_url == env["LOOKOUT_SAMPLE_URL"]


def test_the_cli_reads_stdin_and_refuses_broken_yaml() -> None:
    assert _cli("inject", "-f", "-", stdin="kind: [unclosed").returncode == 1
    missing = _cli("inject", "-f", "/nonexistent.yaml")
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_pod_monitors_select_the_injected_pods() -> None:
    _documents, outcome = inject_documents(
        list(yaml.safe_load_all((EXAMPLES / "triton.yaml").read_text())), InjectOptions())
    [monitor] = pod_monitors(outcome)
    assert monitor["spec"]["selector"]["matchLabels"] == {"app": "triton-yolo"}
    assert monitor["metadata"]["namespace"] == "vision"


def test_every_annotation_is_documented() -> None:
    text = (REPO / "docs" / "KUBERNETES.md").read_text()
    for annotation in annotations.ANNOTATIONS:
        assert f"`{annotations.PREFIX}{annotation.key}`" in text, annotation.key


def _resolve(env: list[dict], pod: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would give it: downward API values
    and $(VAR) references resolved."""
    values: dict[str, str] = {}
    for item in env:
        if "valueFrom" in item:
            values[item["name"]] = pod[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            values[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)],
                                          item["value"])
    return values


def test_the_sidecar_starts_from_an_injected_pod_specs_own_env_and_args(tmp_path) -> None:
    upstream, upstream_port = start_upstream()
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "yolo-0", "namespace": "vision",
                        "annotations": {"lookout.io/model-name": "from-annotation"}},
           "spec": {"containers": [{"name": "app", "image": "example/yolo:v3", "ports": [
               {"name": "http", "containerPort": upstream_port}]}]}}
    listen, admin = free_port(), free_port()
    [injected], _ = inject_documents([pod], InjectOptions(listen_port=listen,
                                                         admin_port=admin))
    container = injected["spec"]["initContainers"][0]
    env = _resolve(container["env"], {"metadata.name": "yolo-0",
                                      "metadata.namespace": "vision"})
    for mount in container["volumeMounts"]:  # the pod's volumes, here directories
        local = tmp_path / mount["name"]
        local.mkdir()
        env = {k: v.replace(mount["mountPath"], str(local)) if k.startswith("LOOKOUT_SAMPLE")
               else v for k, v in env.items()}
    assert container["command"] == ["lookout"]
    process = ManagedProcess([sys.executable, "-m", "lookout", *container["args"]],
                             env={**env, "OTEL_TRACES_EXPORTER": "none"})
    try:
        wait_until(lambda: port_accepts(admin) or not process.alive(), 30, "lookout to start")
        assert process.alive(), process.output
        wait_until(lambda: request(admin, "GET", "/readyz").status == 200, 30, "readiness")
        response = request(listen, "POST", "/predict", body=b"{}",
                           headers={"Content-Type": "application/json"})
        assert response.status == 200
        metrics = request(admin, "GET", "/metrics").body.decode()
        assert 'model="from-annotation"' in metrics and 'version="v3"' in metrics
    finally:
        assert process.terminate() == 0
        upstream.terminate()


def test_a_shared_reference_and_the_pods_gpus_reach_the_sidecars_environment() -> None:
    document = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    document["spec"]["template"]["metadata"]["annotations"] = {
        "lookout.io/reference-url": "grpc://reference-pool.vision:8001",
        "lookout.io/reference-name": "yolo11x:3",
        "lookout.io/gpu-devices": "GPU-8f6e0c1a"}
    [injected], _ = inject_documents([document], InjectOptions())
    pod = injected["spec"]["template"]["spec"]
    sidecar = next(c for c in [*pod.get("initContainers", []), *pod["containers"]]
                   if c["name"] == CONTAINER)
    env = {item["name"]: item.get("value") for item in sidecar["env"]}
    assert env["LOOKOUT_SHADOW_REFERENCE_URL"] == "grpc://reference-pool.vision:8001"
    assert env["LOOKOUT_SHADOW_REFERENCE_MODEL"] == "yolo11x"
    assert env["LOOKOUT_SHADOW_REFERENCE_VERSION"] == "3"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-8f6e0c1a"
    assert "LOOKOUT_SHADOW_MODEL_PATH" not in env
