"""The demo inference server with the shipped primary model, and a sidecar in front of
it shadow-running the shipped reference model with drift on: the stack the end-to-end
tests of shadow metrics, rules and dashboards scrape. And the shipped reference model
served by KServe, as a shared reference pool serves it (tests and bench/shadow.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from tests.support.kserve_catalog import REFERENCE_MODEL
from tests.support.processes import (
    ManagedProcess,
    SidecarProcess,
    free_port,
    port_accepts,
    request,
    start_sidecar,
    wait_until,
)


@dataclass
class ShadowStack:
    upstream: ManagedProcess
    sidecar: SidecarProcess

    def send_frames(self, seeds: range, headers: dict[str, str] | None = None) -> None:
        for seed in seeds:
            response = request(self.sidecar.port, "POST", "/predict",
                               body=generate_scene(seed).jpeg(),
                               headers={"Content-Type": "image/jpeg", **(headers or {})})
            assert response.status == 200

    def stop(self) -> None:
        self.sidecar.stop()
        self.upstream.terminate()


def shadow_options(model_name: str = "yolo-test", primary: str | None = None) -> list[str]:
    """Sidecar options: every image shadow-evaluated by the shipped reference model, with
    drift on, for a primary served by the demo upstream."""
    return ["--model-name", model_name, "--model-path", primary or str(model_path("primary")),
            "--shadow-model-path", str(model_path("reference")), "--shadow-sample-share", "1",
            "--shadow-rate", "1000", "--shadow-burst", "1000", "--shadow-max-busy-share", "1",
            "--drift-baseline-size", "50", "--drift-window", "20",
            # calibrated for a false alarm per 20,000 images (a test sends hundreds), not
            # the default 100,000: 5x fewer simulated windows at start-up
            "--drift-false-alarm-images", "20000"]


def start_demo_upstream(model: str | None = None) -> tuple[ManagedProcess, int]:
    port = free_port()
    upstream = ManagedProcess([sys.executable, "-m", "lookout", "demo-upstream",
                               "--port", str(port), *(["--model", model] if model else [])])
    wait_until(lambda: port_accepts(port) or not upstream.alive(), 60, "the demo upstream")
    assert upstream.alive(), upstream.output
    return upstream, port


def wait_for_reference_model(sidecar: SidecarProcess) -> None:
    wait_until(lambda: 'role="reference"' in sidecar.metrics_text(), 60,
               "the reference model to load")


def start_shadow_stack(model_name: str = "yolo-test", *extra: str,
                       env: dict[str, str] | None = None) -> ShadowStack:
    """Returns once the reference model is loaded: images offered earlier are skipped."""
    upstream, port = start_demo_upstream()
    try:
        sidecar = start_sidecar(f"http://127.0.0.1:{port}", *shadow_options(model_name),
                                "--flip-share", "1", *extra, env=env)
    except BaseException:  # a sidecar that cannot start leaves no upstream running
        upstream.terminate()
        raise
    try:
        wait_for_reference_model(sidecar)
    except BaseException:
        sidecar.stop()
        upstream.terminate()
        raise
    return ShadowStack(upstream, sidecar)


class ReferenceServer:
    """The shipped reference model on KServe's own ModelServer, REST and gRPC on fixed
    ports, so that it can be killed and come back where the sidecars expect it."""

    name, version = REFERENCE_MODEL

    def __init__(self, threads: int = 0) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.threads = threads  # onnxruntime intra-op threads; 0: its default
        self.process: ManagedProcess | None = None

    @property
    def urls(self) -> dict[str, str]:
        return {"REST": f"http://127.0.0.1:{self.http_port}",
                "gRPC": f"grpc://127.0.0.1:{self.grpc_port}"}

    def start(self) -> None:
        self.process = ManagedProcess([
            sys.executable, "-m", "tests.support.kserve_models", str(self.http_port),
            "--grpc-port", str(self.grpc_port), "--reference", "--threads", str(self.threads)])
        process = self.process
        wait_until(lambda: (port_accepts(self.http_port) and port_accepts(self.grpc_port))
                   or not process.alive(), 120, "the KServe reference server")
        assert process.alive(), process.output

    def kill(self) -> None:
        assert self.process is not None
        self.process.popen.kill()
        self.process.terminate()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
