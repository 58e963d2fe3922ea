"""The analysis consumer: labels, metadata, failures, and the queue's byte budget."""

from __future__ import annotations

import dataclasses
import json

import onnx
import pytest
from onnx import TensorProto, helper

from lookout.shadow_eval.names import ModelMetadataError, parse_names, read_model_metadata
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import (
    MAX_CLASS_LABELS,
    OTHER_CLASS,
    ClassLabels,
    TrafficAnalyzer,
)
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import AnalysisSettings, of
from lookout.slo import catalog


def _observation(response: bytes, *, truncated: bool = False, status: int = 200,
                 request: bytes = b"\xff\xd8\xff not really") -> Observation:
    return Observation(
        started_at=0.0, method="POST", path="/predict", route="/predict", status=status,
        code=str(status), request_headers={"Content-Type": "image/jpeg"}, request_body=request,
        response_headers={"Content-Type": "application/json"}, response_body=response,
        response_truncated=truncated, duration=0.01, upstream_duration=0.01, trace_id=None,
        span_id=None, trace_sampled=False, model="m", version="v",
    )


def _sample(metrics: SidecarMetrics, spec: catalog.MetricSpec, suffix: str = "",
            **labels: str) -> float:
    name = spec.sample_name + suffix if spec.type is not catalog.MetricType.HISTOGRAM \
        else spec.name + suffix
    return metrics.registry.get_sample_value(name, {"model": "m", "version": "v", **labels}) or 0


@pytest.fixture
def analyzer():
    config = load_config({"model_name": "m", "model_version": "v",
                          "class_names": "person,car"}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    analyzer = TrafficAnalyzer(of(AnalysisSettings, config), metrics)
    yield analyzer, metrics
    analyzer.close()


def test_detections_are_counted_by_class_name(analyzer) -> None:
    analyzer, metrics = analyzer
    body = json.dumps([{"class": 1, "confidence": 0.8, "xyxy": [0, 0, 10, 10]},
                       {"name": "zebra", "confidence": 0.6, "xyxy": [0, 0, 5, 5]}]).encode()
    result = analyzer.analyse(_observation(body))
    assert len(result.detections) == 2
    assert result.failure is None
    assert _sample(metrics, catalog.DETECTIONS, **{"class": "car"}) == 1
    # names outside the model's list collapse into one label
    assert _sample(metrics, catalog.DETECTIONS, **{"class": OTHER_CLASS}) == 1
    assert _sample(metrics, catalog.DETECTIONS_PER_REQUEST, "_sum") == 2
    # the request image was not decodable: counted, and detections still recorded
    assert _sample(metrics, catalog.PARSE_FAILURES, reason="undecodable_image") == 1


def test_truncated_responses_are_not_parsed(analyzer) -> None:
    analyzer, metrics = analyzer
    result = analyzer.analyse(_observation(b"[{\"confid", truncated=True))
    assert result.failure.reason == "response_too_large"
    assert _sample(metrics, catalog.PARSE_FAILURES, reason="response_too_large") == 1


def test_a_truncated_request_is_not_decoded_and_says_why(analyzer) -> None:
    analyzer, metrics = analyzer
    observation = dataclasses.replace(_observation(b"[]"), request_truncated=True)
    result = analyzer.analyse(observation)
    assert result.image is None and result.failure is None  # detections still counted
    assert _sample(metrics, catalog.PARSE_FAILURES, reason="request_too_large") == 1
    assert _sample(metrics, catalog.PARSE_FAILURES, reason="undecodable_image") == 0


def test_deeply_nested_json_is_a_parse_failure_not_a_crash(analyzer) -> None:
    analyzer, metrics = analyzer
    deep = b"[" * 100_000 + b"]" * 100_000
    observation = dataclasses.replace(
        _observation(deep, request=deep),
        request_headers={"Content-Type": "application/json"})
    result = analyzer.analyse(observation)
    assert result.failure.reason == "bad_json"
    assert _sample(metrics, catalog.PARSE_FAILURES, reason="bad_json") == 2  # both bodies


def test_only_successful_exchanges_with_a_body_are_analysed() -> None:
    assert TrafficAnalyzer.worth_analysing(_observation(b"[]"))
    assert not TrafficAnalyzer.worth_analysing(_observation(b"[]", status=503))
    assert not TrafficAnalyzer.worth_analysing(_observation(b"[]", request=b""))


def test_class_labels_stay_bounded_without_a_names_list() -> None:
    labels = ClassLabels(())
    assert labels.label(3, None) == "3"
    assert labels.label(-1, "cat") == "cat"
    for index in range(MAX_CLASS_LABELS + 10):
        labels.label(-1, f"invented-{index}")
    assert labels.label(-1, "one-more") == OTHER_CLASS
    assert labels.label(MAX_CLASS_LABELS + 5, None) == OTHER_CLASS


def _onnx_with_metadata(path, metadata: dict[str, str]) -> None:
    node = helper.make_node("Identity", ["images"], ["output0"])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def test_names_and_size_come_from_ultralytics_onnx_metadata(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    _onnx_with_metadata(path, {"names": "{0: 'person', 1: 'car'}", "imgsz": "[480, 640]",
                               "stride": "32"})
    metadata = read_model_metadata(path)
    assert metadata.names == ("person", "car")
    assert metadata.input_size == (480, 640)
    assert metadata.stride == 32


def test_bad_models_and_metadata_are_explained(tmp_path) -> None:
    with pytest.raises(ModelMetadataError, match="does not exist"):
        read_model_metadata(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelMetadataError, match="is not a loadable ONNX model"):
        read_model_metadata(corrupt)
    plain = tmp_path / "plain.onnx"
    _onnx_with_metadata(plain, {})
    with pytest.raises(ModelMetadataError, match="no 'names'"):
        read_model_metadata(plain)
    with pytest.raises(ModelMetadataError, match=r"not 0\.\.1"):
        parse_names("{0: 'a', 2: 'b'}")
