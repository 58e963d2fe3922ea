"""V2 gRPC messages in the analysis: the same tensors as the REST body of the same call
give the same image and detections, and a message that is not what it should be is
rejected with a counted reason, whatever its bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.letterbox import letterbox_image
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import TrafficAnalyzer
from lookout.sidecar.pipeline.kserve import HEADER_LENGTH, encode_infer_body
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.outcome import Outcome
from lookout.sidecar.pipeline.parse_errors import Reason
from lookout.sidecar.pipeline.protos import INFER_METHOD, STREAM_INFER_METHOD, message_class
from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import AnalysisSettings, of
from lookout.slo import catalog
from tests.fuzz.targets import grpc_messages

GRPC = RawHeaders([(b"content-type", b"application/grpc")])  # as the port hands it over
Request = message_class("inference.ModelInferRequest")
Response = message_class("inference.ModelInferResponse")
StreamResponse = message_class("inference.ModelStreamInferResponse")


def _observation(path: str, request: bytes, response: bytes, headers: dict | None = None,
                 response_headers: dict | None = None) -> Observation:
    return Observation(
        started_at=0.0, method="POST", path=path, route=path, status=200, code="OK",
        request_headers=headers or GRPC, request_body=request,
        response_headers=response_headers or GRPC, response_body=response,
        response_truncated=False, duration=0.01, upstream_duration=0.01, trace_id=None,
        span_id=None, trace_sampled=False, model="m", version="v")


@pytest.fixture
def analyzer():
    config = load_config({"model_name": "m", "model_version": "v", "input_size": "256",
                          "class_names": "a,b,c,d,e,f"}, env={})
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    analyzer = TrafficAnalyzer(of(AnalysisSettings, config), metrics)
    yield analyzer, metrics
    analyzer.close()


def _sample(metrics: SidecarMetrics, spec: catalog.MetricSpec, **labels: str) -> float:
    return metrics.registry.get_sample_value(
        spec.sample_name, {"model": "m", "version": "v", **labels}) or 0


def _frame() -> np.ndarray:
    canvas, _ = letterbox_image(generate_scene(3).image, 256, 256)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], np.float32) / 255.0


def _head() -> np.ndarray:
    rng = np.random.default_rng(4)
    head = rng.uniform(0, 0.05, (1, 10, 1344)).astype(np.float32)
    head[0, :4, :] = rng.uniform(10, 240, (4, 1344))
    head[0, 4 + 2, 100] = 0.9  # one confident box of class 2
    return head


def _grpc_pair(raw: bool) -> tuple[bytes, bytes]:
    frame, head = _frame(), _head()
    request = Request(model_name="m")
    tensor = request.inputs.add(name="images", datatype="FP32", shape=frame.shape)
    response = Response(model_name="m", model_version="7")
    output = response.outputs.add(name="output0", datatype="FP32", shape=head.shape)
    if raw:
        request.raw_input_contents.append(frame.tobytes())
        response.raw_output_contents.append(head.tobytes())
    else:
        tensor.contents.fp32_contents.extend(frame.reshape(-1).tolist())
        output.contents.fp32_contents.extend(head.reshape(-1).tolist())
    return request.SerializeToString(), response.SerializeToString()


@pytest.mark.parametrize("raw", [True, False], ids=["raw_contents", "typed_contents"])
def test_a_grpc_call_reads_as_its_rest_twin(analyzer, raw: bool) -> None:
    analyzer, metrics = analyzer
    rest_request, request_length = encode_infer_body("inputs", [("images", _frame())], True)
    rest_response, response_length = encode_infer_body("outputs", [("output0", _head())], True,
                                                       {"model_name": "m"})
    rest = analyzer.analyse(_observation(
        "/v2/models/m/infer", rest_request, rest_response,
        {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(request_length)},
        {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(response_length)}))
    via_grpc = analyzer.analyse(_observation(INFER_METHOD, *_grpc_pair(raw)))
    assert via_grpc.failure is None and rest.failure is None
    assert (via_grpc.image.width, via_grpc.image.height) == (256, 256)
    assert np.array_equal(via_grpc.image.pixels, rest.image.pixels)
    assert len(via_grpc.detections) == len(rest.detections) > 0
    assert np.allclose(via_grpc.detections.boxes, rest.detections.boxes)
    assert _sample(metrics, catalog.SERVED_RESPONSES, served_version="7") == 1


def test_uint8_images_and_fp16_heads_as_raw_contents(analyzer) -> None:
    analyzer, _ = analyzer
    pixels = np.ascontiguousarray((_frame() * 255).round().astype(np.uint8))
    request = Request(model_name="m", raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="images", datatype="UINT8", shape=pixels.shape)
    head = _head().astype(np.float16)
    response = Response(model_name="m", raw_output_contents=[head.tobytes()])
    response.outputs.add(name="output0", datatype="FP16", shape=head.shape)
    result = analyzer.analyse(_observation(INFER_METHOD, request.SerializeToString(),
                                           response.SerializeToString()))
    assert result.failure is None
    assert np.array_equal(result.image.pixels, pixels[0].transpose(1, 2, 0))
    assert len(result.detections) == 1 and result.detections.classes.tolist() == [2]


def test_a_stream_message_and_its_error_answer(analyzer) -> None:
    analyzer, _ = analyzer
    request, response = _grpc_pair(raw=True)
    answered = StreamResponse(infer_response=Response.FromString(response))
    good = analyzer.analyse(_observation(STREAM_INFER_METHOD, request,
                                         answered.SerializeToString()))
    assert good.failure is None and len(good.detections) > 0
    failed = analyzer.analyse(_observation(STREAM_INFER_METHOD, request, StreamResponse(
        error_message="model is unloading").SerializeToString()))
    assert failed.failure.reason is Reason.BAD_GRPC
    assert "model is unloading" in failed.failure.detail


@pytest.mark.parametrize("request_body", [
    b"\xff\xff\xff",  # not protobuf at all
    Request(model_name="m", raw_input_contents=[b"1", b"2"]).SerializeToString(),  # 2 for 0
    _grpc_pair(True)[0][:-7],  # cut short on the wire
], ids=["garbage", "raw_count", "cut"])
def test_a_broken_request_is_counted_and_the_response_still_read(
        analyzer, request_body: bytes) -> None:
    analyzer, metrics = analyzer
    (result,) = analyzer.analyse_batch([_observation(INFER_METHOD, request_body,
                                                     _grpc_pair(True)[1])])
    assert result.image is None and len(result.detections) > 0
    assert _sample(metrics, catalog.PARSE_FAILURES, reason=Reason.BAD_GRPC) == 1


def test_fuzzed_messages_are_each_analysed_or_rejected_with_a_counted_reason(
        analyzer) -> None:
    analyzer, metrics = analyzer

    def failures() -> float:
        return sum(_sample(metrics, catalog.PARSE_FAILURES, reason=reason) for reason in Reason)

    def outcomes() -> float:
        return sum(_sample(metrics, catalog.OBSERVATIONS, outcome=outcome) for outcome in Outcome)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(grpc_messages("request"), grpc_messages("response"), st.booleans())
    def run(request, response, streamed) -> None:
        path = STREAM_INFER_METHOD if streamed else INFER_METHOD
        before, observed = failures(), outcomes()
        results = analyzer.analyse_batch([_observation(path, request[1], response[1])])
        assert outcomes() == observed + 1  # each one counted once, and nothing raised
        # an empty message (every field at its default) has no body to analyse
        assert len(results) == (1 if request[1] else 0)
        for result in results:
            if result.failure is None:
                continue
            assert failures() > before
            assert _sample(metrics, catalog.PARSE_FAILURES, reason=result.failure.reason) >= 1
        assert _sample(metrics, catalog.OBSERVATIONS, outcome=Outcome.ERROR) == 0

    run()
