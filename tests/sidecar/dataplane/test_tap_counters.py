"""The tap's RED counters as /metrics exports them: today's names and labels, summed
over Envoy's worker threads, raw model names mapped to bounded labels."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.registry import CollectorRegistry

from lookout.sidecar.config import DEFAULT_ROUTES
from lookout.sidecar.dataplane.tap_counters import (
    FLAG_GRPC,
    FLAG_LOCAL,
    FLAG_NO_RESPONSE,
    RedCollector,
    TapCounters,
    code_label,
)
from lookout.sidecar.served_models import ModelLabels
from tests.support.tap_wire import write_slot

INFER = DEFAULT_ROUTES.index("/v2/models/{model}/infer")
OTHER = len(DEFAULT_ROUTES)


def exposition(collector: RedCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def value(text: str, sample: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(sample + " ")]
    assert len(lines) == 1, (sample, text)
    return float(lines[0].rsplit(" ", 1)[1])


def test_threads_are_summed_under_the_request_metrics_labels(counters: TapCounters) -> None:
    write_slot(counters, 0, 3, model=b"yolo", route=INFER, code=200, count=3,
               duration_ns=[2_000_000, 2_000_000, 80_000_000], request_bytes=5000)
    write_slot(counters, 1, 5, model=b"yolo", route=INFER, code=200, count=2)
    write_slot(counters, 1, 6, model=b"yolo", route=OTHER, code=502, flags=FLAG_LOCAL)
    labels = ModelLabels("yolo", "v1", {}, discover=False, max_models=16)
    text = exposition(RedCollector(counters, DEFAULT_ROUTES, labels))
    infer = 'model="yolo",route="/v2/models/{model}/infer",version="v1"'
    assert value(text, 'lookout_requests_total{code="200",' + infer + "}") == 5
    assert value(text, 'lookout_requests_total{code="sidecar_502",model="yolo",'
                       'route="other",version="v1"}') == 1
    assert value(text, "lookout_request_duration_seconds_count{" + infer + "}") == 5
    assert value(text, 'lookout_request_duration_seconds_bucket{le="0.0025",' + infer
                 + "}") == 4
    assert value(text, 'lookout_request_duration_seconds_bucket{le="0.1",' + infer
                 + "}") == 5
    assert value(text, "lookout_request_duration_seconds_sum{" + infer + "}") == \
        pytest.approx(0.086)
    assert value(text, "lookout_request_bytes_sum{" + infer + "}") == 15000


def test_a_name_nobody_configured_is_other_and_bounded(counters: TapCounters) -> None:
    for index, name in enumerate([b"detr", b"junk1", b"junk2"]):
        write_slot(counters, 0, index, model=name, route=INFER, code=404)
    labels = ModelLabels("yolo", "v1", {"detr": "7"}, discover=False, max_models=16)
    text = exposition(RedCollector(counters, DEFAULT_ROUTES, labels))
    assert value(text, 'lookout_requests_total{code="404",model="other",'
                       'route="/v2/models/{model}/infer",version="unknown"}') == 2
    assert value(text, 'lookout_requests_total{code="404",model="detr",'
                       'route="/v2/models/{model}/infer",version="7"}') == 1


def test_the_last_sampled_trace_is_the_latency_exemplar(counters: TapCounters) -> None:
    trace = bytes(range(16))
    write_slot(counters, 0, 0, model=b"yolo", route=INFER, code=200,
               duration_ns=[30_000_000], exemplar=(trace, 30_000_000, 1_700_000_000 * 10**9))
    labels = ModelLabels("yolo", "v1", {}, discover=False, max_models=16)
    registry = CollectorRegistry()
    registry.register(RedCollector(counters, DEFAULT_ROUTES, labels))
    text = openmetrics(registry).decode()
    [line] = [line for line in text.splitlines()
              if line.startswith('lookout_request_duration_seconds_bucket{le="0.03"')]
    assert f'# {{trace_id="{trace.hex()}"}} 0.03' in line


@pytest.mark.parametrize(("code", "flags", "label"), [
    (200, 0, "200"), (503, FLAG_LOCAL, "sidecar_503"), (0, FLAG_GRPC, "OK"),
    (14, FLAG_GRPC, "UNAVAILABLE"), (8, FLAG_GRPC | FLAG_LOCAL, "sidecar_RESOURCE_EXHAUSTED"),
    (99, FLAG_GRPC, "UNKNOWN"), (0, FLAG_GRPC | FLAG_NO_RESPONSE, "sidecar_CANCELLED"),
    (0, FLAG_NO_RESPONSE, "sidecar_499"),
])
def test_codes_are_labelled_as_the_python_path_labelled_them(code: int, flags: int,
                                                             label: str) -> None:
    assert code_label(code, flags) == label
