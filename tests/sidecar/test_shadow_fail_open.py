"""Through the real data plane (Envoy, the tap, the analysis workers): shadow evaluation
working, or its reference unusable, leaves what clients receive unchanged. (The stage's
own failures, each in isolation, are tests/sidecar/test_shadow.py's; a remote reference
that fails, tests/sidecar/test_remote_reference.py's.)"""

from __future__ import annotations

import sys

from lookout.lookout_demo.scenes import generate_scene
from lookout.slo import catalog
from tests.support.processes import (
    ManagedProcess,
    free_port,
    request,
    start_sidecar,
    wait_until,
)
from tests.support.shadow_stack import shadow_options, start_demo_upstream

FRAMES = 16


def _post_all(port: int) -> list[tuple[int, bytes]]:
    answers = []
    for seed in range(FRAMES):
        response = request(port, "POST", "/predict", body=generate_scene(seed).jpeg(),
                           headers={"Content-Type": "image/jpeg"})
        answers.append((response.status, response.body))
    return answers


def _evaluations(sidecar, outcome: str) -> float:
    return sidecar.metric(catalog.SHADOW_EVALUATIONS.sample_name, model="m", outcome=outcome)


def test_shadow_evaluation_on_live_traffic_changes_no_response() -> None:
    upstream, port = start_demo_upstream()
    sidecar = start_sidecar(f"http://127.0.0.1:{port}", *shadow_options("m"))
    try:
        wait_until(lambda: 'role="reference"' in sidecar.metrics_text(), 60,
                   "the reference model to load")
        direct = _post_all(port)
        proxied = _post_all(sidecar.port)
        wait_until(lambda: _evaluations(sidecar, "ok") + _evaluations(sidecar, "dropped")
                   >= FRAMES, 60, "every frame evaluated or dropped")
        evaluated = _evaluations(sidecar, "ok")
    finally:
        sidecar.stop()
        upstream.terminate()
    assert proxied == direct and all(status == 200 for status, _ in direct)
    assert evaluated > 0


def test_a_corrupt_reference_is_refused_at_start_up(tmp_path) -> None:
    """A reference that cannot load never gets as far as traffic: start-up says so."""
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 64)
    upstream, port = start_demo_upstream()
    try:
        options = shadow_options("m")
        options[options.index("--shadow-model-path") + 1] = str(corrupt)
        process = ManagedProcess([sys.executable, "-m", "lookout", "serve", "--listen",
                                  f"127.0.0.1:{free_port()}", "--admin",
                                  f"127.0.0.1:{free_port()}", "--upstream",
                                  f"http://127.0.0.1:{port}", *options])
        code = process.popen.wait(60)
        assert code != 0 and "corrupt.onnx" in process.output, process.output
    finally:
        upstream.terminate()
