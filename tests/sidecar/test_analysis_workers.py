"""Analysis in worker processes, end to end: a real upstream answering YOLO11n-shaped
raw heads as V2 JSON (14 MB each), the sidecar in front with shadow, drift and sampling
on, and a client at a steady rate. What the workers do must never reach the client, and
every request must be accounted for by the analysis counters."""

from __future__ import annotations

import base64
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.pipeline.analysis import Outcome
from lookout.sidecar.samples.store import SampleStore
from lookout.slo import catalog
from tests.support import raw_head_upstream
from tests.support.processes import (
    SidecarProcess,
    free_port,
    request,
    served_module,
    start_sidecar,
    wait_until,
)

INFER = f"/v2/models/{raw_head_upstream.MODEL}/infer"
EVERY_REQUEST = "random share=1 per_minute=100000 per_hour=1000000"


def infer_body(seed: int) -> bytes:
    """A V2 JSON request carrying a 640x480 JPEG as a BYTES input (base64)."""
    buffer = io.BytesIO()
    Image.fromarray(generate_scene(seed).image).resize((640, 480)).save(buffer, "JPEG")
    image = base64.b64encode(buffer.getvalue()).decode()
    return (b'{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], '
            b'"data": ["' + image.encode() + b'"]}]}')


@pytest.fixture(scope="module")
def raw_heads():
    with served_module("tests.support.raw_head_upstream") as port:
        yield port


def start(upstream_port: int, tmp_path: Path, *extra: str) -> SidecarProcess:
    return start_sidecar(
        f"http://127.0.0.1:{upstream_port}",
        "--shadow-model-path", str(model_path("reference")), "--shadow-sample-share", "1",
        "--drift", "true", "--drift-baseline-size", "50", "--drift-window", "10",
        "--sample-dir", str(tmp_path / "samples"), "--sample-strategies", EVERY_REQUEST,
        *extra)


def paced(rate: float, seconds: float, send: Callable[[int], None]) -> int:
    """Call `send(i)` at `rate` per second for `seconds`, each on its own thread, so a
    slow answer never holds back the next request (an open-loop client)."""
    threads, start = [], time.monotonic()
    count = int(rate * seconds)
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the client's schedule, not a wait for the sidecar
        thread = threading.Thread(target=send, args=(i,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(120)
    return count


def accounted(sidecar: SidecarProcess) -> tuple[float, float]:
    """(requests seen, requests the analysis counters account for)."""
    requests = sidecar.metric(catalog.REQUESTS.sample_name)
    outcomes = sidecar.metric(catalog.OBSERVATIONS.sample_name)
    dropped = sidecar.metric(catalog.QUEUE_DROPPED.sample_name, queue="observations")
    return requests, outcomes + dropped


def test_raw_heads_at_5_per_second_reach_clients_unchanged_and_are_all_accounted_for(
        raw_heads: int, tmp_path: Path) -> None:
    bodies = [infer_body(seed) for seed in range(8)]
    sidecar = start(raw_heads, tmp_path)
    failures: list[str] = []

    def send(i: int) -> None:
        body = bodies[i % len(bodies)]
        response = request(sidecar.port, "POST", INFER, body,
                           {"Content-Type": "application/json"}, timeout=60)
        expected = raw_head_upstream.response_body(raw_head_upstream.variant_of(body))
        if response.status != 200 or response.body != expected:
            failures.append(f"request {i}: {response.status}, {len(response.body)} bytes")

    try:
        sent = paced(5, 12, send)
        assert failures == []
        wait_until(
            lambda: (lambda r: r if r[0] == r[1] == sent else None)(accounted(sidecar)),
            120, "the analysis counters to account for every request")
        codes = {sample_code for sample_code in _codes(sidecar)}
        assert not any(code.startswith(catalog.SIDECAR_CODE_PREFIX) for code in codes), codes
        analysed = sidecar.metric(catalog.OBSERVATIONS.sample_name, outcome=Outcome.ANALYSED)
        lost = sidecar.metric(catalog.OBSERVATIONS.sample_name, outcome=Outcome.LOST)
        assert analysed > 0 and lost == 0
        assert sidecar.metric(catalog.DETECTIONS_PER_REQUEST.count_name) == analysed
        assert sidecar.metric(catalog.SHADOW_EVALUATIONS.sample_name) > 0
        print(f"sent {sent}: analysed {analysed}, dropped "
              f"{sidecar.metric(catalog.QUEUE_DROPPED.sample_name, queue='observations')}")
    finally:
        assert sidecar.stop() == 0, sidecar.process.output


def test_sigterm_lets_the_workers_finish_what_they_hold(raw_heads: int,
                                                        tmp_path: Path) -> None:
    """Three heads (the channel holds four) and SIGTERM at once: each is analysed and
    its sample committed before the sidecar exits 0."""
    sidecar = start(raw_heads, tmp_path)
    bodies = [infer_body(seed) for seed in range(3)]
    for body in bodies:
        assert request(sidecar.port, "POST", INFER, body,
                       {"Content-Type": "application/json"}).status == 200
    assert sidecar.stop() == 0, sidecar.process.output
    assert SampleStore(tmp_path / "samples", repair=False).count() == len(bodies)


def _codes(sidecar: SidecarProcess) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.labels["code"] for family in text_string_to_metric_families(
        sidecar.metrics_text()) for sample in family.samples
        if sample.name == catalog.REQUESTS.sample_name}


def worker_pids(sidecar: SidecarProcess) -> list[int]:
    """The sidecar's analysis worker processes (multiprocessing's spawned children,
    not its resource tracker)."""
    pid = sidecar.process.popen.pid
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    workers = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            workers.append(child)
    return workers


def test_a_killed_worker_is_counted_and_replaced_and_clients_never_notice(
        raw_heads: int, tmp_path: Path) -> None:
    bodies = [infer_body(seed) for seed in range(4)]
    sidecar = start(raw_heads, tmp_path)
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        i = 0
        while not stop.is_set():
            body = bodies[i % len(bodies)]
            response = request(sidecar.port, "POST", INFER, body,
                               {"Content-Type": "application/json"}, timeout=60)
            expected = raw_head_upstream.response_body(raw_head_upstream.variant_of(body))
            statuses.append(response.status if response.body == expected else -1)
            i += 1

    client = threading.Thread(target=load)
    try:
        (first,) = wait_until(lambda: worker_pids(sidecar), 30, "the analysis worker")
        client.start()
        wait_until(lambda: sidecar.metric(catalog.OBSERVATIONS.sample_name,
                                          outcome=Outcome.ANALYSED) >= 3, 60,
                   "analysis under load")
        before_kill = sidecar.metric(catalog.OBSERVATIONS.sample_name,
                                     outcome=Outcome.ANALYSED)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: sidecar.metric(catalog.COMPONENT_ERRORS.sample_name,
                                          component="analysis_worker") == 1, 30,
                   "the kill to be counted")
        # the dead worker's counts stay in the sum: no counter goes backwards
        assert sidecar.metric(catalog.OBSERVATIONS.sample_name,
                              outcome=Outcome.ANALYSED) >= before_kill
        (second,) = wait_until(lambda: [p for p in worker_pids(sidecar) if p != first], 30,
                               "a new worker")
        after_restart = sidecar.metric(catalog.OBSERVATIONS.sample_name,
                                       outcome=Outcome.ANALYSED)
        wait_until(lambda: sidecar.metric(catalog.OBSERVATIONS.sample_name,
                                          outcome=Outcome.ANALYSED) > after_restart + 3, 90,
                   "observations analysed again after the restart")
    finally:
        stop.set()
        client.join(60)
        code = sidecar.stop()
    assert second != first
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert code == 0, sidecar.process.output
    assert "analysis worker 0" in sidecar.process.output and "signal SIGKILL" in \
        sidecar.process.output


def test_a_channel_that_cannot_hold_one_observation_per_worker_stops_start_up() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "lookout", "serve", "--upstream", "http://127.0.0.1:9",
         "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
         "--analysis-workers", "4", "--observation-queue-bytes", "64MiB"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "observation_queue_bytes" in result.stderr and "analysis_workers" in result.stderr


def test_with_two_workers_the_one_drift_detector_gets_every_analysed_image(
        raw_heads: int, tmp_path: Path) -> None:
    """Round robin spreads the exchanges over both workers; each computes its images'
    drift features and the lead's one detector (and its feature store) gets them all."""
    from lookout.sidecar.quality.feature_store import read_rows

    sidecar = start(raw_heads, tmp_path, "--analysis-workers", "2",
                    "--observation-queue-bytes", "96MiB",
                    "--feature-store-dir", str(tmp_path / "features"))
    try:
        wait_until(lambda: len(worker_pids(sidecar)) == 2, 30, "two analysis workers")
        bodies = [infer_body(seed) for seed in range(12)]
        for sent, body in enumerate(bodies, 1):  # one at a time: nothing is dropped
            assert request(sidecar.port, "POST", INFER, body,
                           {"Content-Type": "application/json"}).status == 200
            wait_until(lambda sent=sent: accounted(sidecar) == (sent, sent), 60,
                       "the exchange to be analysed")
        analysed = sidecar.metric(catalog.OBSERVATIONS.sample_name, outcome=Outcome.ANALYSED)
    finally:
        assert sidecar.stop() == 0, sidecar.process.output
    assert analysed == len(bodies)  # half of them by the worker that is not the lead
    assert len(list(read_rows(tmp_path / "features"))) == len(bodies)
