"""The remote reference's failure paths without a server: nothing listening, a server that
never answers, configuration that cannot work, and the retry schedule. The working
path, against KServe's real ModelServer, is tests/e2e/test_shared_reference.py."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.boxes import Detections
from lookout.sidecar.config import ConfigError, load_config
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.inputs import open_encoded
from lookout.sidecar.quality.remote_reference import _sha256_parameter
from lookout.sidecar.quality.shadow import ShadowEvaluator, State
from lookout.sidecar.runtime.backoff import RetryBackoff
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import ShadowSettings, of
from lookout.slo import catalog
from tests.sidecar.test_analysis import _observation
from tests.support.processes import free_port, wait_until


class Recorder:
    """The stage after the reference stage: what reaches it, and with which result."""

    def __init__(self) -> None:
        self.seen: list[tuple[Analysis, object]] = []

    def take(self, analysis: Analysis) -> None:
        self.seen.append((analysis, analysis.reference))

    def offer_through(self, evaluator: ShadowEvaluator, analysis: Analysis) -> bool:
        """As the chain offers: what the evaluator does not keep goes on at once."""
        held = evaluator.offer(analysis)
        if not held:
            self.take(analysis)
        return held


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _evaluator(url: str, **values: str) -> tuple[ShadowEvaluator, SidecarMetrics, Recorder]:
    config = load_config({"model_name": "m", "model_version": "v", "shadow_reference_url": url,
                          "shadow_reference_model": "reference", "shadow_sample_share": "1",
                          **values}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    evaluator = ShadowEvaluator(of(ShadowSettings, config), metrics, CLASSES)
    recorder = Recorder()
    evaluator.start(recorder.take)
    return evaluator, metrics, recorder


def _errors(metrics: SidecarMetrics) -> float:
    return metrics.registry.get_sample_value(catalog.SHADOW_EVALUATIONS.sample_name, {
        "model": "m", "version": "v", "outcome": "reference_error"})


@pytest.mark.parametrize("kind", ["nothing listening", "never answers"])
def test_an_unusable_reference_counts_reference_errors_and_passes_every_image_on(
        kind, silent_port, caplog) -> None:
    port = free_port() if kind == "nothing listening" else silent_port
    with caplog.at_level(logging.WARNING, "lookout.sidecar.quality.shadow"):
        evaluator, metrics, recorder = _evaluator(f"http://127.0.0.1:{port}",
                                                  shadow_reference_timeout="0.2")
        analyses = [Analysis(_observation(b"[]"), open_encoded(generate_scene(seed).jpeg(), "raw"),
                             Detections.empty(), None) for seed in range(4)]
        try:
            offered = iter(analyses * 100)
            wait_until(lambda: not recorder.offer_through(evaluator, next(offered))
                       and _errors(metrics) > 0,
                       10, "a reference_error")
            assert evaluator.state is State.LOADING
            assert all(result is None for _, result in recorder.seen)
            assert len(recorder.seen) >= _errors(metrics)  # nothing held back, nothing lost
            started = time.monotonic()
        finally:
            evaluator.close()
    assert time.monotonic() - started < 3  # a stop never waits out the backoff
    warnings = [r.getMessage() for r in caplog.records if "remote reference" in r.getMessage()]
    assert warnings and f"127.0.0.1:{port}" in warnings[0], warnings
    assert metrics.registry.get_sample_value(catalog.MODEL_INFO.name, {
        "model": "m", "version": "v", "role": "reference", "sha256": "", "served_name": "",
        "served_version": ""}) is None


@pytest.mark.parametrize(("values", "message"), [
    ({"shadow_reference_url": "ftp://ref:21"}, "http://HOST:PORT"),
    ({"shadow_reference_url": "grpc://ref:8001/models/x"}, "only a scheme"),
    ({"shadow_reference_url": "http://ref:99999"}, "port"),
    ({"shadow_reference_url": "http://ref:8000"}, "shadow_reference_model"),
    ({"shadow_reference_model": "yolo11x"}, "shadow_reference_url"),
    ({"shadow_reference_url": "http://ref:8000", "shadow_reference_model": "x",
      "shadow_model_path": "x.onnx"}, "not both"),
])
def test_reference_configuration_that_cannot_work_is_refused_at_start_up(values,
                                                                         message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(values, env={})


def test_a_grpc_reference_is_accepted() -> None:
    config = load_config({"shadow_reference_url": "grpc://reference.pool:8001/",
                          "shadow_reference_model": "yolo11x"}, env={})
    assert config.shadow_reference_url == "grpc://reference.pool:8001"


def test_the_reference_sha256_is_read_where_servers_put_it() -> None:
    digest = "ab" * 32
    assert _sha256_parameter({"sha256": {"string_value": digest.upper()}}) == digest  # Triton
    assert _sha256_parameter({"sha256": digest}) == digest
    assert _sha256_parameter({"sha256": "not-a-digest"}) == ""
    assert _sha256_parameter(None) == ""


def test_backoff_doubles_to_its_cap_and_one_success_resets_it() -> None:
    now = [100.0]
    backoff = RetryBackoff(first=0.5, cap=4.0, clock=lambda: now[0])
    assert backoff.allows() and not backoff.failing
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert not backoff.allows()
    now[0] += 4.0
    assert backoff.allows()
    backoff.succeeded()
    assert not backoff.failing and backoff.failed() == 0.5
