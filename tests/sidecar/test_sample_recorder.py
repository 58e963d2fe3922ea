"""The sample recorder: decisions, drops and their reasons, what a stored sample holds,
and a full or read-only volume under a running sidecar that keeps serving."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import pytest

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.chain import AnalysisChain
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import TrafficAnalyzer
from lookout.sidecar.quality.reference import NoReference
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.recorder import SAMPLE_QUEUE, SampleRecorder
from lookout.sidecar.settings import AnalysisSettings, SampleSettings, of
from lookout.slo import catalog
from tests.sidecar.test_analysis import _observation
from tests.support.processes import (
    ManagedProcess,
    free_port,
    port_accepts,
    read_only,
    request,
    small_filesystem,
    start_sidecar,
    wait_until,
)

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")


def _detections_body() -> bytes:
    return (b'[{"box": [10, 10, 60, 60], "score": 0.9, "class": "circle"},'
            b' {"box": [100, 50, 150, 120], "score": 0.27, "class": "star"}]')


def _setup(tmp_path, strategies: str, **values: str):
    config = load_config({"model_name": "m", "model_version": "v",
                          "sample_dir": str(tmp_path / "store"),
                          "sample_strategies": strategies, "detections_path": "",
                          "class_names": ",".join(CLASSES), **values}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    recorder = SampleRecorder(of(SampleSettings, config), metrics, CLASSES, seed=1)
    analyzer = TrafficAnalyzer(of(AnalysisSettings, config), metrics,
                               decode_size=recorder.decode_size)
    # the chain's shape without a reference model or drift
    chain = AnalysisChain(analyzer, NoReference(), None, recorder)
    return config, metrics, recorder, chain


def _dropped(metrics: SidecarMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value(catalog.SAMPLES_DROPPED.sample_name,
                                             {"reason": reason}) or 0.0


def _stored(metrics: SidecarMetrics, strategy: str) -> float:
    return metrics.registry.get_sample_value(catalog.SAMPLES_STORED.sample_name,
                                             {"strategy": strategy}) or 0.0


def _exchange(seed: int, status: int = 200, duration: float = 0.01,
              at: float | None = None):
    observation = _observation(_detections_body(), request=generate_scene(seed).jpeg(),
                               status=status)
    return dataclasses.replace(observation, duration=duration, trace_id=f"{seed:032x}",
                               started_at=time.time() if at is None else at)


def test_chosen_samples_are_stored_with_detections_trace_and_features(tmp_path) -> None:
    _, metrics, recorder, chain = _setup(
        tmp_path, "close_to_threshold threshold=0.25 eps=0.05 per_minute=100")
    recorder.start()
    chain.analyse_batch([_exchange(seed) for seed in range(3)])
    assert recorder.drain(30)
    assert _stored(metrics, "close_to_threshold") == 3
    page = recorder.store.query(SampleQuery(limit=10))
    sample = page.samples[0]
    assert sample.trace_id in {f"{seed:032x}" for seed in range(3)}
    assert [d["class"] for d in sample.primary_detections] == ["circle", "star"]
    assert sample.reference_detections is None and sample.agreement is None
    assert sample.features["brightness"] > 0 and sample.features["detections"] == 2
    assert (sample.width, sample.height) == (384, 288) and sample.thumbnail_width == 320
    assert metrics.registry.get_sample_value(catalog.SAMPLE_STORE_BYTES.name) > 0
    recorder.close()


def test_server_errors_are_offered_with_their_image(tmp_path) -> None:
    _, metrics, recorder, chain = _setup(tmp_path, "error per_minute=10")
    recorder.start()
    chain.analyse_batch([_exchange(1, status=503), _exchange(2)])
    assert recorder.drain(30)
    [sample] = recorder.store.query(SampleQuery(limit=10)).samples
    assert (sample.status, sample.strategy, sample.primary_detections) == (503, "error", None)
    assert _stored(metrics, "error") == 1
    recorder.close()


def test_quota_and_queue_drops_are_counted_by_reason(tmp_path) -> None:
    _, metrics, _recorder, chain = _setup(
        tmp_path, "slow seconds=0.5 per_minute=4", sample_queue_size="2")
    # the writer is not started: the queue holds 2, then drops. One moment for all, in
    # the middle of a minute: quotas are calendar minutes, and a boundary between the
    # exchanges would give the rule a fresh quota
    now = (time.time() // 60) * 60 + 30
    chain.analyse_batch([_exchange(seed, duration=1.0, at=now) for seed in range(6)]
                           + [_exchange(9, duration=0.1, at=now)])
    assert _dropped(metrics, "queue_full") == 2  # quota 4: 2 queued, 2 dropped
    assert _dropped(metrics, "quota") == 2  # the 5th and 6th found no quota
    assert metrics.registry.get_sample_value(catalog.QUEUE_DROPPED.sample_name,
                                             {"queue": SAMPLE_QUEUE}) == 2


def test_the_byte_quota_stops_writing_for_the_day(tmp_path) -> None:
    _, metrics, recorder, chain = _setup(
        tmp_path, "random share=1 per_minute=100", sample_bytes_per_day="1")
    recorder.start()
    chain.analyse_batch([_exchange(1)])
    assert recorder.drain(30)
    chain.analyse_batch([_exchange(2), _exchange(3)])
    assert recorder.drain(30)
    assert _stored(metrics, "random") == 1 and _dropped(metrics, "byte_quota") == 2
    recorder.close()


def test_originals_are_kept_only_when_asked(tmp_path) -> None:
    _, _, recorder, chain = _setup(tmp_path, "random share=1 per_minute=100",
                                      sample_keep_original="true")
    recorder.start()
    body = generate_scene(4).jpeg()
    chain.analyse_batch([_exchange(4)])
    assert recorder.drain(30)
    [sample] = recorder.store.query(SampleQuery(limit=10)).samples
    assert recorder.store.read(sample, original=True) == body
    recorder.close()


@pytest.fixture
def demo_upstream():
    port = free_port()
    upstream = ManagedProcess([sys.executable, "-m", "lookout", "demo-upstream",
                               "--port", str(port)])
    wait_until(lambda: port_accepts(port) or not upstream.alive(), 60, "the demo upstream")
    yield port
    upstream.terminate()


def fill(path) -> None:
    """Write `path` until the volume has not one byte left (unbuffered: nothing is left
    to fail at close)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1):
            while True:
                try:
                    os.write(descriptor, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(descriptor)


def _metric(sidecar, spec: catalog.MetricSpec, **labels: str) -> float:
    return sidecar.metric(spec.sample_name, **labels)


def test_a_full_then_read_only_volume_pauses_sampling_and_never_touches_requests(
        tmp_path, demo_upstream) -> None:
    with small_filesystem(tmp_path / "volume", "2m") as volume:
        sidecar = start_sidecar(f"http://127.0.0.1:{demo_upstream}",
                                "--model-path", str(model_path("primary")),
                                "--sample-dir", str(volume / "store"),
                                "--sample-strategies", "random share=1 per_minute=10000")
        try:
            wait_until(lambda: _metric(sidecar, catalog.SAMPLE_STORE_BYTES) > 0, 30,
                       "the sample store to open")

            def send(seed: int) -> None:
                body = generate_scene(seed).jpeg()
                direct = request(demo_upstream, "POST", "/predict", body=body,
                                 headers={"Content-Type": "image/jpeg"})
                proxied = request(sidecar.port, "POST", "/predict", body=body,
                                  headers={"Content-Type": "image/jpeg"})
                assert (proxied.status, proxied.body) == (direct.status, direct.body) \
                    and proxied.status == 200

            send(0)
            wait_until(lambda: _metric(sidecar, catalog.SAMPLES_STORED, strategy="random"),
                       30, "a first stored sample")
            filler = volume / "filler"
            fill(filler)
            for seed in range(1, 15):
                send(seed)
            wait_until(lambda: _metric(sidecar, catalog.SAMPLES_DROPPED, reason="disk_full"),
                       30, "disk_full drops")
            assert request(sidecar.admin_port, "GET", "/readyz").status == 200

            filler.unlink()  # the fault clears: sampling resumes by itself
            stored = _metric(sidecar, catalog.SAMPLES_STORED, strategy="random")
            seeds = iter(range(100, 10_000))
            wait_until(lambda: send(next(seeds)) or _metric(
                sidecar, catalog.SAMPLES_STORED, strategy="random") > stored, 60,
                "sampling to resume after space was freed", interval=0.2)

            with read_only(volume / "store" / "images"):
                wait_until(lambda: send(next(seeds)) or _metric(
                    sidecar, catalog.SAMPLES_DROPPED, reason="write_error"), 60,
                    "write_error drops on a read-only volume", interval=0.2)
            assert "cannot write" in sidecar.process.output
        finally:
            assert sidecar.stop() == 0


def test_a_jump_in_detections_while_the_input_drifts_is_suspect(tmp_path) -> None:
    """Frames with twice the usual detections while a drift alarm is raised are the
    ones both models may be fooled by alike: counted and kept by `suspect`."""
    import numpy as np

    from lookout.shadow_eval.boxes import Detections
    from lookout.sidecar.pipeline.inputs import open_encoded
    from lookout.sidecar.samples.recorder import SampledExchange

    config = load_config({"model_name": "m", "model_version": "v",
                          "sample_dir": str(tmp_path / "store"),
                          "sample_strategies": "suspect per_minute=100"}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    recorder = SampleRecorder(of(SampleSettings, config), metrics, CLASSES, seed=1)
    recorder.start()
    image = open_encoded(generate_scene(1).jpeg(), "raw")

    def frame(boxes: int, drifting: bool = False) -> SampledExchange:
        found = Detections.from_arrays(np.tile([10, 10, 50, 50], (boxes, 1)), [0.9] * boxes,
                                       [0] * boxes)
        return SampledExchange(time.time(), None, "m", "v", "/predict", 200, 0.01, False,
                               image, found, drifting=drifting)  # the drift stage's state

    for _ in range(30):
        recorder.decide(frame(2), None)
    recorder.decide(frame(9), None)  # a jump, but no drift: the scene is just busier
    recorder.decide(frame(2, drifting=True), None)
    recorder.decide(frame(9, drifting=True), None)
    assert recorder.drain(30)
    recorder.close()
    assert _stored(metrics, "suspect") == 1
    assert metrics.registry.get_sample_value(catalog.SUSPECT_DETECTIONS.sample_name, {
        "model": "m", "version": "v", "reason": "drift_jump"}) == 9


def test_a_random_sample_carries_its_inclusion_probability(tmp_path) -> None:
    _, _, recorder, chain = _setup(
        tmp_path, "error per_minute=10; random share=0.5 per_day=10000000")  # never paced
    recorder.start()
    now = (time.time() // 60) * 60 + 30  # one calendar minute: the error quota's
    chain.analyse_batch([_exchange(seed, status=503, at=now) for seed in range(40)])
    assert recorder.drain(30)
    samples = recorder.store.query(SampleQuery(limit=100)).samples
    drawn = [s for s in samples if s.inclusion_probability is not None]
    assert 5 < len(drawn) < 35 and {s.inclusion_probability for s in drawn} == {0.5}
    # the first ten filed as errors whether drawn or not, the drawn rest as random
    assert {s.strategy for s in drawn} == {"error", "random"}
    assert sum(s.strategy == "error" for s in samples) == 10
    recorder.close()
