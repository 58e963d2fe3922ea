"""The pieces of analysis in worker processes that need no traffic: worker counts, the
channel's start-up checks, the per-message budget, one /metrics from many processes, and
the settings a worker is started with."""

from __future__ import annotations

import dataclasses

import pytest
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lookout.sidecar.composition import worker_settings
from lookout.sidecar.config import Config, load_config
from lookout.sidecar.pipeline.analysis import Outcome, TrafficAnalyzer
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.parse_errors import Reason
from lookout.sidecar.processes import wire
from lookout.sidecar.processes.analysis_pool import (
    ChannelSettings,
    WorkerStartError,
    check_channel,
    worker_count,
)
from lookout.sidecar.processes.worker_spec import WorkerSettings
from lookout.sidecar.runtime.metrics import SidecarMetrics, merge
from lookout.sidecar.settings import AnalysisSettings, of
from lookout.slo import catalog


def _config(**values: str):
    return load_config({"upstream": "http://127.0.0.1:9", "model_name": "m",
                        "model_version": "v", **values}, env={})


def _channel(**values: str) -> ChannelSettings:
    return of(ChannelSettings, _config(**values))


def test_an_explicit_worker_count_wins_and_auto_stays_within_the_channel() -> None:
    assert worker_count(_channel(analysis_workers="3", observation_queue_bytes="1GiB")) == 3
    auto = worker_count(_channel())
    assert 1 <= auto <= 4
    # 64 MiB holds one 2 x 16 MiB observation per worker at most once
    assert worker_count(_channel(observe_max_bytes="16MiB")) == 1


def test_a_channel_too_small_for_one_observation_per_worker_refuses_to_start() -> None:
    channel = _channel(analysis_workers="4", observation_queue_bytes="64MiB")
    with pytest.raises(WorkerStartError, match="observation_queue_bytes"):
        check_channel(channel, 4)
    check_channel(_channel(observe_max_bytes="1MiB"), 4)


def _observation(response: bytes, content_type: str) -> Observation:
    return Observation(
        started_at=0.0, method="POST", path="/predict", route="/predict", status=200,
        code="200", request_headers=CIMultiDict({"Content-Type": "image/jpeg"}),
        request_body=b"\xff\xd8\xff" + b"\0" * 100, response_headers=CIMultiDict(
            {"Content-Type": content_type}), response_body=response,
        response_truncated=False, duration=0.01, upstream_duration=0.01, trace_id=None,
        span_id=None, trace_sampled=False, model="m", version="v")


def test_an_exchange_over_the_budget_is_skipped_before_parsing_and_counted() -> None:
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    analyzer = TrafficAnalyzer(of(AnalysisSettings, _config(analysis_budget="0.01")),
                               metrics)
    big = b"[" + b"1," * 1_000_000 + b"1]"  # 2 MB of JSON: ~20 ms at the floor rate
    small = b"[]"
    analyzer.analyse_batch([_observation(big, "application/json"),
                            _observation(small, "application/json")])

    def value(spec, **labels):
        return metrics.registry.get_sample_value(
            spec.sample_name, {"model": "m", "version": "v", **labels}) or 0

    assert value(catalog.PARSE_FAILURES, reason=Reason.OVER_BUDGET) == 1
    assert value(catalog.OBSERVATIONS, outcome=Outcome.PARSE_FAILED) == 1
    # the small one is analysed: its broken image is counted and tolerated
    assert value(catalog.OBSERVATIONS, outcome=Outcome.ANALYSED) == 1
    assert value(catalog.PARSE_FAILURES, reason=Reason.UNDECODABLE_IMAGE) == 1


def test_one_exposition_adds_what_several_processes_count() -> None:
    proxy, worker = CollectorRegistry(), CollectorRegistry()
    for registry, errors, share in ((proxy, 2, 0), (worker, 3, 7)):
        Counter("lookout_component_errors", "h", ["component"], registry=registry
                ).labels("telemetry" if registry is proxy else "analysis").inc(errors)
        Counter("lookout_queue_dropped", "h", ["queue"], registry=registry
                ).labels("observations").inc(errors)
        Gauge("lookout_drift_statistic", "h", registry=registry).set(share)
        Histogram("lookout_detections_per_request", "h", buckets=(1, 5),
                  registry=registry).observe(errors)
    families = {family.name: family for family in merge([proxy, worker])}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families.values() for s in family.samples
               if not s.name.endswith("_created")}
    assert samples[("lookout_component_errors_total", (("component", "telemetry"),))] == 2
    assert samples[("lookout_component_errors_total", (("component", "analysis"),))] == 3
    assert samples[("lookout_queue_dropped_total", (("queue", "observations"),))] == 5
    assert samples[("lookout_drift_statistic", ())] == 7
    assert samples[("lookout_detections_per_request_count", ())] == 2
    assert samples[("lookout_detections_per_request_bucket", (("le", "5.0"),))] == 2
    assert len([f for f in families if f == "lookout_queue_dropped"]) == 1


def test_a_dev_shm_too_small_for_the_channel_refuses_to_start(tmp_path, monkeypatch) -> None:
    """A container's /dev/shm is 64 MiB unless a memory emptyDir is mounted there: the
    sidecar says so at start-up instead of dying with SIGBUS on a later write."""
    from lookout.sidecar.processes import analysis_pool as workers
    from tests.support.processes import small_filesystem

    with small_filesystem(tmp_path / "shm", "8m") as shm:
        monkeypatch.setattr(workers, "SHM_PATH", str(shm))
        metrics = SidecarMetrics("m", "v", process_metrics=False)
        with pytest.raises(WorkerStartError, match="emptyDir with medium: Memory"):
            config = _config(observation_queue_bytes="64MiB")
            workers.AnalysisPool(of(workers.ChannelSettings, config), worker_settings(config),
                                 metrics, 1)


def _types(value: object) -> set[type]:
    """Every type reachable from `value` through dataclass fields and tuples."""
    found: set[type] = {type(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            found |= _types(getattr(value, field.name))
    elif isinstance(value, tuple | list):
        for item in value:
            found |= _types(item)
    return found


def test_a_worker_is_started_with_its_settings_cut_once_not_the_configuration() -> None:
    config = _config(models="[{name: coarse, version: '2', input_size: 320, drift: false}]",
                     sample_dir="/tmp/unused-samples")
    settings = worker_settings(config)
    assert Config not in _types(settings)
    crossed = wire.loads(wire.dumps(settings), WorkerSettings)  # as it crosses at spawn
    assert crossed == settings
    models = {model.name: model for model in crossed.chains.models}
    assert list(models) == ["m", "coarse"]  # the default model first
    assert models["coarse"].analysis.input_size == 320
    assert models["coarse"].drift is None and models["m"].drift is not None
    assert models["coarse"].feeds_lead  # its samples are the lead's
    discovered = crossed.chains.pod.discovered("found", 416)
    assert (discovered.name, discovered.version, discovered.analysis.input_size) == (
        "found", "unknown", 416)
    with pytest.raises(ValueError, match="expected a WorkerSettings"):
        wire.loads(wire.dumps(config), WorkerSettings)
