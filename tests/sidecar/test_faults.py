"""Faults while serving: the inference server killed mid-request and brought back,
SIGTERM with many requests in flight, the reference model's file deleted or replaced
under a running sidecar. User requests keep their upstream semantics, lookout's own
errors are explicit and counted, and lookout recovers when the fault clears."""

from __future__ import annotations

import shutil
import signal
import sys
import threading
from pathlib import Path

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.slo import catalog
from tests.support.processes import (
    ManagedProcess,
    free_port,
    port_accepts,
    request,
    start_sidecar,
    wait_until,
)
from tests.support.shadow_stack import (
    shadow_options,
    start_demo_upstream,
    wait_for_reference_model,
)


def _test_upstream(port: int) -> ManagedProcess:
    process = ManagedProcess([sys.executable, "-m", "tests.support.upstream_app", str(port)])
    wait_until(lambda: port_accepts(port) or not process.alive(), 20, "the test upstream")
    return process


def test_upstream_killed_mid_request_then_back() -> None:
    port = free_port()
    upstream = _test_upstream(port)
    sidecar = start_sidecar(f"http://127.0.0.1:{port}")
    try:
        result: list = []
        client = threading.Thread(target=lambda: result.append(
            request(sidecar.port, "POST", "/slow?delay=30", body=b"frame")))
        client.start()
        wait_until(lambda: request(port, "GET", "/in-flight").json()["slow"] >= 1, 20,
                   "the request to reach the upstream")
        upstream.popen.kill()  # SIGKILL: no goodbye on the connection
        client.join(30)
        [response] = result
        assert response.status == 502
        assert response.headers["X-Lookout-Error"] == "upstream-reset"
        assert sidecar.metric(catalog.REQUESTS.sample_name, code="sidecar_502") == 1
        wait_until(lambda: request(sidecar.admin_port, "GET", "/readyz").status == 503, 20,
                   "lookout to report the upstream down")
        assert request(sidecar.port, "GET", "/echo").status == 502  # explicit, not a hang

        upstream = _test_upstream(port)  # the fault clears
        wait_until(lambda: request(sidecar.admin_port, "GET", "/readyz").status == 200, 20,
                   "lookout to see the upstream again")
        assert request(sidecar.port, "GET", "/echo").status == 200
        assert sidecar.metric(catalog.UPSTREAM_UP.name) == 1
    finally:
        sidecar.stop()
        upstream.terminate()


def test_sigterm_with_thirty_requests_in_flight_loses_none(upstream_port: int) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{upstream_port}", "--shutdown-grace", "30")
    results: list = []
    clients = [threading.Thread(target=lambda i=i: results.append(request(
        sidecar.port, "POST", f"/slow?delay=2&client={i}", body=b"frame" * 1000)))
        for i in range(30)]
    for client in clients:
        client.start()
    wait_until(lambda: request(upstream_port, "GET", "/in-flight").json()["slow"] >= 30, 30,
               "thirty requests in flight at the upstream")
    sidecar.process.popen.send_signal(signal.SIGTERM)
    for client in clients:
        client.join(60)
    assert len(results) == 30
    assert {r.status for r in results} == {200}
    assert all(r.json() == {"slept": 2.0} for r in results)
    assert sidecar.process.popen.wait(30) == 0, sidecar.process.output


def test_the_reference_model_file_deleted_or_replaced_at_run_time(tmp_path: Path) -> None:
    """The reference model is read once, checked and loaded at start: what happens to
    the file afterwards changes nothing, and nothing breaks."""
    reference = tmp_path / "reference.onnx"
    shutil.copy(model_path("reference"), reference)
    upstream, port = start_demo_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", *shadow_options(),
                            "--shadow-model-path", str(reference))
    ok = catalog.SHADOW_EVALUATIONS.sample_name
    try:
        wait_for_reference_model(sidecar)
        loaded = sidecar.metrics_text()
        seed = 8_000_000

        def evaluate(frames: int) -> None:
            nonlocal seed
            before = sidecar.metric(ok, outcome="ok")
            for _ in range(frames):
                response = request(sidecar.port, "POST", "/predict",
                                   body=generate_scene(seed).jpeg(),
                                   headers={"Content-Type": "image/jpeg"})
                assert response.status == 200
                seed += 1
            wait_until(lambda: sidecar.metric(ok, outcome="ok") >= before + frames, 60,
                       "the frames to be shadow-evaluated")

        evaluate(3)
        reference.unlink()
        evaluate(3)
        reference.write_bytes(b"\x08not a model" * 100)
        evaluate(3)
        info = [line for line in sidecar.metrics_text().splitlines()
                if line.startswith(catalog.MODEL_INFO.name) and 'role="reference"' in line]
        assert info and all(line in loaded for line in info)  # same sha256 as loaded
        assert sidecar.metric(catalog.COMPONENT_ERRORS.sample_name) == 0
    finally:
        sidecar.stop()
        upstream.terminate()
