"""Envoy as lookout's data plane, as an operator meets it: a tap built for another ABI is
refused before Envoy loads it, a killed Envoy comes back and is counted, a full ring
drops analysis but never a count, and an upstream that is killed and restarted leaves a
long-lived gRPC client working again within a few calls."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from lookout.slo import catalog
from tests.support.otlp import SERVER, HttpOtlpReceiver
from tests.support.processes import (
    REPO,
    ManagedProcess,
    SidecarProcess,
    children,
    free_port,
    port_accepts,
    request,
    start_sidecar,
    start_upstream,
    wait_until,
)

REQUESTS = catalog.REQUESTS.sample_name


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    process, port = start_upstream()
    yield port
    process.terminate()


def test_a_tap_built_for_another_abi_is_refused_before_envoy_loads_it(
        tmp_path: Path, upstream_port: int) -> None:
    build = tmp_path / "build"
    subprocess.run(["make", "-s", "-C", str(REPO / "tap"), f"BUILD={build}", "wrongabi"],
                   check=True, capture_output=True)
    module = tmp_path / "liblookout_tap.so"  # the name Envoy would load it by
    shutil.copy(build / "liblookout_tap_wrongabi.so", module)
    started = subprocess.run(
        [sys.executable, "-m", "lookout", "serve", "--upstream",
         f"http://127.0.0.1:{upstream_port}", "--listen", f"127.0.0.1:{free_port()}",
         "--admin", f"127.0.0.1:{free_port()}", "--tap-module", str(module)],
        capture_output=True, text=True, timeout=60, env={**os.environ,
                                                        "OTEL_TRACES_EXPORTER": "none"})
    assert started.returncode == 1, started.stderr  # a start-up refusal, as a bind failure
    assert "reports ABI v0.9.9" in started.stderr and "expects v0.2.0" in started.stderr


@pytest.mark.parametrize("where", ["environment", "config file"])
def test_options_of_the_former_request_path_are_refused_naming_their_replacement(
        where: str, tmp_path) -> None:
    config = tmp_path / "lookout.yaml"
    config.write_text("request_processes: 2\n")
    env = {"LOOKOUT_REQUEST_PROCESSES": "2"} if where == "environment" else \
        {"LOOKOUT_CONFIG": str(config)}
    started = subprocess.run([sys.executable, "-m", "lookout", "serve"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, **env})
    assert started.returncode == 2, started.stderr
    assert "request_processes" in started.stderr and "envoy_concurrency" in started.stderr


def test_a_killed_envoy_is_started_again_counted_and_its_counts_kept(
        upstream_port: int) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--analysis-workers", "1")
    try:
        for _ in range(3):
            assert request(sidecar.port, "GET", "/status/200").status == 200
        [envoy] = children(sidecar.process.popen.pid, b"envoy")
        os.kill(envoy, signal.SIGKILL)
        wait_until(lambda: children(sidecar.process.popen.pid, b"envoy") not in ([], [envoy])
                   and port_accepts(sidecar.port), 30, "another Envoy")
        wait_until(lambda: request(sidecar.port, "GET", "/status/200").status == 200, 30,
                   "requests served again")
        assert sidecar.metric("lookout_component_errors_total", component="envoy") == 1
        assert sidecar.metric(REQUESTS, code="200") >= 4  # the dead Envoy's counts kept
        assert request(sidecar.admin_port, "GET", "/readyz").status == 200
    finally:
        assert sidecar.stop() == 0


def _segments(pid: int) -> list[str]:
    """The shared-memory entries of the lookout whose process is `pid`."""
    return sorted(entry for entry in os.listdir("/dev/shm")
                  if entry.startswith(f"lookout-{pid}-"))


def test_a_killed_sidecars_shared_memory_is_removed_by_the_next_one(
        upstream_port: int) -> None:
    """SIGKILL (the OOM killer, a liveness probe) leaves lookout no chance to clean up,
    and in a pod /dev/shm is an emptyDir that outlives the container: the next lookout
    removes what the dead one left (its rings would fill the volume), and nothing of a
    living one."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    living = start_sidecar(upstream, "--analysis-workers", "1")
    successor = None
    try:
        killed = start_sidecar(upstream, "--analysis-workers", "1")
        pid = killed.process.popen.pid
        left = _segments(pid)
        assert any(entry.endswith("-counters") for entry in left), left
        assert any("-ring-" in entry for entry in left), left
        assert any(entry.endswith(".lock") for entry in left), left
        killed.process.popen.send_signal(signal.SIGKILL)
        killed.process.terminate()
        assert _segments(pid) == left  # a dead process cleans nothing up
        kept = _segments(living.process.popen.pid)
        successor = start_sidecar(upstream, "--analysis-workers", "1")
        assert _segments(pid) == []
        assert _segments(living.process.popen.pid) == kept
        for sidecar in (living, successor):
            assert request(sidecar.port, "GET", "/status/200").status == 200
        wait_until(lambda: living.metric(REQUESTS, code="200") == 1, 10,
                   "the living sidecar's counters still read")
    finally:
        for sidecar in (living, successor):
            if sidecar is not None:
                assert sidecar.stop() == 0
    assert _segments(living.process.popen.pid) == []  # a clean stop leaves nothing


def test_a_full_ring_drops_analysis_and_counts_every_request(upstream_port: int) -> None:
    """The one worker stopped (SIGSTOP): its ring of 4 records fills, the rest are
    dropped and counted, and lookout_requests_total still counts every request, and
    the bytes of every body (the tap copies nothing of an exchange that begins with the
    ring full, and reads its bodies' lengths from Envoy alone)."""
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--analysis-workers", "1",
                            "--observe-max-bytes", "64KiB",
                            "--observation-queue-bytes", "256KiB",
                            "--observation-queue-size", "4")
    [worker] = children(sidecar.process.popen.pid, b"spawn_main")
    os.kill(worker, signal.SIGSTOP)
    try:
        sent = received = 0
        for index in range(40):
            response = request(sidecar.port, "POST", "/echo", body=b"x" * 1000 * index)
            assert response.status == 200
            sent, received = sent + 1000 * index, received + len(response.body)
        assert sidecar.metric(REQUESTS, code="200") == 40
        assert sidecar.metric("lookout_request_bytes_sum") == sent
        assert sidecar.metric("lookout_response_bytes_sum") == received
        assert sidecar.metric("lookout_queue_dropped_total", queue="observations") >= 36
    finally:
        os.kill(worker, signal.SIGCONT)
        assert sidecar.stop() == 0


def _kserve(http_port: int, grpc_port: int) -> ManagedProcess:
    process = ManagedProcess([sys.executable, "-m", "tests.support.kserve_models",
                              str(http_port), "--grpc-port", str(grpc_port)])
    wait_until(lambda: port_accepts(grpc_port) or not process.alive(), 60, "KServe")
    assert process.alive(), process.output
    return process


def _infer(client: triton.InferenceServerClient) -> bool:
    images = triton.InferInput("images", [1, 3, 256, 256], "FP32")
    images.set_data_from_numpy(np.zeros((1, 3, 256, 256), np.float32))
    try:
        return client.infer("primary", [images]).as_numpy("output0").size > 0
    except InferenceServerException:
        return False


def test_the_upstream_killed_and_restarted_leaves_the_same_grpc_client_working() -> None:
    http_port, grpc_port, lookout_grpc = free_port(), free_port(), free_port()
    upstream = _kserve(http_port, grpc_port)
    sidecar: SidecarProcess | None = None
    try:
        sidecar = start_sidecar(f"http://127.0.0.1:{http_port}", "--grpc-listen",
                                f"127.0.0.1:{lookout_grpc}", "--grpc-upstream",
                                f"127.0.0.1:{grpc_port}", "--model-name", "primary")
        client = triton.InferenceServerClient(f"127.0.0.1:{lookout_grpc}")
        assert _infer(client)
        upstream.popen.send_signal(signal.SIGKILL)
        upstream.terminate()
        assert not _infer(client)  # the upstream is gone: an error, not a hang
        upstream = _kserve(http_port, grpc_port)
        attempts = 0
        while attempts < 5 and not _infer(client):
            attempts += 1
        assert attempts < 5, "the same client object never recovered"
        assert sidecar.metric(REQUESTS, code="sidecar_UNAVAILABLE") >= 1
        client.close()
    finally:
        if sidecar is not None:
            sidecar.stop()
        upstream.terminate()


def test_http_is_traced_with_the_callers_decision_and_lookouts_attributes(
        upstream_port: int) -> None:
    """OTLP/HTTP to a receiver: a sampled caller's request gives a SERVER span named by
    its route template in the caller's trace (the upstream's parent: no CLIENT span); an
    unsampled caller's gives none (parent-based, decided by the tap in Envoy)."""
    receiver = HttpOtlpReceiver()
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", env=receiver.env)
    try:
        trace_id, parent = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
        unsampled = "6bf92f3577b34da6a3ce929d0e0e4736"
        for trace, flags in ((unsampled, "00"), (trace_id, "01")):
            assert request(sidecar.port, "POST", "/v2/models/yolo-test/infer", body=b"{}",
                           headers={"traceparent": f"00-{trace}-{parent}-{flags}"}
                           ).status in (200, 404)
        spans = [s for s in receiver.wait_for_trace(trace_id) if s.trace_id == trace_id]
        [server] = spans
        assert server.kind == SERVER
        assert server.name == "POST /v2/models/{model}/infer"
        assert server.parent_span_id == parent
        assert server.attributes["http.route"] == "/v2/models/{model}/infer"
        assert server.attributes["lookout.model.name"] == "yolo-test"
        assert server.service_name == "lookout"
        assert all(s.trace_id != unsampled for s in receiver.spans)
    finally:
        sidecar.stop()
        receiver.close()
