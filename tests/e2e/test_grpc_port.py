"""lookout's gRPC data port in front of a real gRPC V2 server nobody on the project
wrote: KServe's ModelServer (tests/support/kserve_models.py, with Triton's
`ModelStreamInfer` added through KServe's own servicer), driven with NVIDIA's
`tritonclient.grpc` and plain grpcio. What the client gets through lookout is what it
gets direct; lookout counts, traces (spans decoded by an OTLP receiver here) and
analyses the calls as it does HTTP requests, and says when a status is its own."""

from __future__ import annotations

import io
import os
import queue
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from lookout.lookout_demo.scenes import generate_scene
from lookout.slo import catalog
from tests.e2e.test_kserve_models import _detections, _expected, _frame, _models_option
from tests.support.kserve_catalog import SLOW_MODEL
from tests.support.otlp import SERVER, GrpcOtlpReceiver
from tests.support.processes import (
    SidecarProcess,
    free_port,
    port_accepts,
    request,
    served_module,
    start_sidecar,
    wait_until,
)

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("grpc_port")

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
REQUESTS = catalog.REQUESTS.sample_name


@dataclass
class Upstream:
    http_port: int
    grpc_port: int


@dataclass
class GrpcSidecar:
    sidecar: SidecarProcess
    grpc_port: int

    def metric(self, name: str, **labels: str) -> float:
        return self.sidecar.metric(name, **labels)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    grpc_port = free_port()
    with served_module("tests.support.kserve_models", "--grpc-port", str(grpc_port)) as port:
        wait_until(lambda: port_accepts(grpc_port), 30, "KServe's gRPC port")
        yield Upstream(port, grpc_port)


@pytest.fixture(scope="module")
def receiver() -> Iterator[GrpcOtlpReceiver]:
    collector = GrpcOtlpReceiver()
    yield collector
    collector.close()


def _grpc_sidecar(http_port: int, grpc_upstream: int, *extra: str, env: dict | None = None,
                  wait_ready: bool = True) -> GrpcSidecar:
    port = free_port()
    sidecar = start_sidecar(f"http://127.0.0.1:{http_port}", *_models_option("3"),
                            "--grpc-listen", f"127.0.0.1:{port}",
                            "--grpc-upstream", f"127.0.0.1:{grpc_upstream}", *extra,
                            env=env, wait_ready=wait_ready)
    wait_until(lambda: port_accepts(port), 30, "lookout's gRPC port")
    return GrpcSidecar(sidecar, port)


@pytest.fixture(scope="module")
def lookout(upstream: Upstream, receiver: GrpcOtlpReceiver) -> Iterator[GrpcSidecar]:
    started = _grpc_sidecar(upstream.http_port, upstream.grpc_port, env=receiver.env)
    yield started
    started.sidecar.stop()


@pytest.fixture(scope="module")
def stranded(upstream: Upstream) -> Iterator[GrpcSidecar]:
    """A sidecar whose gRPC upstream is not there (its HTTP one is)."""
    started = _grpc_sidecar(upstream.http_port, free_port(), wait_ready=False)
    yield started
    started.sidecar.stop()


def _client(port: int) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{port}")


def _tensor_input(seed: int) -> triton.InferInput:
    images = triton.InferInput("images", [1, 3, 256, 256], "FP32")
    images.set_data_from_numpy(_frame(seed, 256))
    return images


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(generate_scene(seed).image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _bytes_input(seed: int) -> triton.InferInput:
    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([_jpeg(seed)], dtype=object))
    return images


def _infer(port: int, inputs: triton.InferInput, request_id: str,
           headers: dict[str, str] | None = None) -> triton.InferResult:
    client = _client(port)
    try:
        return client.infer("primary", [inputs], request_id=request_id, headers=headers)
    finally:
        client.close()


def _same_answer(direct: triton.InferResult, via: triton.InferResult) -> None:
    assert via.get_response() == direct.get_response()  # every field and raw byte
    assert np.array_equal(via.as_numpy("output0"), direct.as_numpy("output0"))


def test_raw_fp32_tensors_are_relayed_counted_analysed_and_traced(
        lookout: GrpcSidecar, upstream: Upstream, receiver: GrpcOtlpReceiver) -> None:
    before = _detections(lookout.sidecar, "primary")
    calls = lookout.metric(REQUESTS, route=INFER, code="OK", model="primary", version="3")
    expected: dict[str, int] = {}
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for seed in range(3):
        direct = _infer(upstream.grpc_port, _tensor_input(seed), f"frame-{seed}")
        via = _infer(lookout.grpc_port, _tensor_input(seed), f"frame-{seed}",
                     {"traceparent": f"00-{trace_id}-{parent}-01"})
        _same_answer(direct, via)
        for name, count in _expected("primary", via.as_numpy("output0")).items():
            expected[name] = expected.get(name, 0) + count
    assert lookout.metric(REQUESTS, route=INFER, code="OK", model="primary",
                          version="3") == calls + 3

    def analysed() -> bool:
        after = _detections(lookout.sidecar, "primary")
        return {n: after[n] - before[n] for n in after if after[n] - before[n]} == expected
    wait_until(analysed, 30, "the gRPC calls' detections")
    assert lookout.metric(catalog.SERVED_RESPONSES.sample_name, model="primary",
                          served_version="3") >= 3

    spans = [s for s in receiver.wait_for_trace(trace_id, 3) if s.trace_id == trace_id]
    servers = [s for s in spans if s.kind == SERVER]
    assert len(servers) == len(spans) == 3  # one span a call, the upstream's parent
    for server in servers:
        assert server.name == "inference.GRPCInferenceService/ModelInfer"
        assert server.parent_span_id == parent
        assert server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.service"] == "inference.GRPCInferenceService"
        assert server.attributes["rpc.method"] == "ModelInfer"
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert server.attributes["lookout.model.name"] == "primary"
        assert server.attributes["http.response.body.size"] > 0


def test_each_model_is_labelled_by_the_name_in_its_messages(
        lookout: GrpcSidecar, upstream: Upstream) -> None:
    """The coarse model's calls count as its own, with its own class names."""
    before = _detections(lookout.sidecar, "coarse")
    frame = triton.InferInput("images", [1, 3, 320, 320], "FP32")
    frame.set_data_from_numpy(_frame(9, 320))
    answers = []
    for port in (upstream.grpc_port, lookout.grpc_port):
        client = _client(port)
        answers.append(client.infer("coarse", [frame], request_id="coarse-9"))
        client.close()
    _same_answer(*answers)
    assert lookout.metric(REQUESTS, route=INFER, model="coarse", version="1", code="OK") == 1
    expected = _expected("coarse", answers[1].as_numpy("output0"))

    def analysed() -> bool:
        after = _detections(lookout.sidecar, "coarse")
        return {n: after[n] - before[n] for n in after if after[n] - before[n]} == expected
    wait_until(analysed, 30, "the coarse model's detections under its own labels")


def test_bytes_images_are_relayed_and_reach_the_reference_model(
        lookout: GrpcSidecar, upstream: Upstream) -> None:
    before = lookout.metric(catalog.DETECTIONS_PER_REQUEST.count_name, model="primary")
    direct = _infer(upstream.grpc_port, _bytes_input(5), "jpeg-5")
    via = _infer(lookout.grpc_port, _bytes_input(5), "jpeg-5")
    _same_answer(direct, via)
    wait_until(lambda: lookout.metric(catalog.DETECTIONS_PER_REQUEST.count_name,
                                      model="primary") > before, 30, "the JPEG's analysis")
    matched = catalog.SHADOW_MATCHED_BOXES.sample_name

    def agreed() -> bool:  # the reference model saw the decoded image itself
        _infer(lookout.grpc_port, _bytes_input(7), "jpeg-7")
        return lookout.metric(matched, model="primary") > 0
    wait_until(agreed, 60, "shadow agreement on gRPC JPEG inputs", interval=0.5)
    assert lookout.metric(catalog.PARSE_FAILURES.sample_name, model="primary") == 0


def _stream(port: int, seeds: range) -> list[triton.InferResult]:
    client = _client(port)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for seed in seeds:
            client.async_stream_infer("primary", [_tensor_input(seed)], request_id=f"s{seed}")
        results = []
        for _ in seeds:
            result, error = answers.get(timeout=30)
            assert error is None, error
            results.append(result)
        return results
    finally:
        client.stop_stream()
        client.close()


def test_model_stream_infer_is_relayed_message_by_message(
        lookout: GrpcSidecar, upstream: Upstream) -> None:
    analysed = catalog.DETECTIONS_PER_REQUEST.count_name
    before = lookout.metric(analysed, model="primary")
    calls = lookout.metric(REQUESTS, route=STREAM, code="OK")
    direct = _stream(upstream.grpc_port, range(20, 24))
    via = _stream(lookout.grpc_port, range(20, 24))
    for one, other in zip(direct, via, strict=True):
        _same_answer(one, other)
    wait_until(lambda: lookout.metric(REQUESTS, route=STREAM, code="OK") == calls + 1, 10,
               "the stream's end")
    wait_until(lambda: lookout.metric(analysed, model="primary") == before + 4, 30,
               "each streamed frame analysed")


def test_readiness_passes_through_and_readyz_asks_the_grpc_upstream(
        lookout: GrpcSidecar, upstream: Upstream) -> None:
    direct, via = _client(upstream.grpc_port), _client(lookout.grpc_port)
    try:
        for client in (direct, via):
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("primary") and client.is_model_ready("coarse")
        assert via.get_model_metadata("coarse") == direct.get_model_metadata("coarse")
    finally:
        direct.close()
        via.close()
    ready = request(lookout.sidecar.admin_port, "GET", "/readyz")
    assert ready.status == 200 and b"ServerReady -> ready=true" in ready.body


def _raw_call(port: int, method: str, body: bytes, timeout: float = 10
              ) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", -1)]) as channel, \
            pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(method)(body, timeout=timeout)
    return raised.value


def _infer_request(model: str = "primary", size: int = 256) -> bytes:
    frame = np.zeros((1, 3, size, size), np.float32)
    message = service_pb2.ModelInferRequest(model_name=model, raw_input_contents=[
        frame.tobytes()])
    message.inputs.add(name="images", datatype="FP32", shape=frame.shape)
    return message.SerializeToString()


def test_the_upstreams_own_errors_and_deadlines_are_relayed_as_they_are(
        lookout: GrpcSidecar, upstream: Upstream) -> None:
    direct = _raw_call(upstream.grpc_port, INFER, _infer_request("nothere"))
    via = _raw_call(lookout.grpc_port, INFER, _infer_request("nothere"))
    assert (via.code(), via.details()) == (direct.code(), direct.details())
    assert "lookout-error" not in dict(via.trailing_metadata() or ())
    assert lookout.metric(REQUESTS, route=INFER, code=direct.code().name, model="other") >= 1

    def deadlines() -> float:  # the answer at the deadline, or the client's own give-up
        return sum(lookout.metric(REQUESTS, route=INFER, code=code)
                   for code in ("DEADLINE_EXCEEDED", "sidecar_CANCELLED"))

    exceeded = deadlines()
    for port in (upstream.grpc_port, lookout.grpc_port):
        client = _client(port)
        with pytest.raises(InferenceServerException) as raised:
            client.infer(SLOW_MODEL, [_tensor_input(0)], client_timeout=1.0)
        client.close()
        assert "DEADLINE_EXCEEDED" in raised.value.status()
    wait_until(lambda: deadlines() == exceeded + 1, 10, "the deadline counted, not as an "
               "error of lookout's or the upstream's: " + ", ".join(
                   line for line in lookout.sidecar.metrics_text().splitlines()
                   if line.startswith(REQUESTS) and "ModelInfer" in line))
    assert lookout.metric(REQUESTS, route=INFER, code="sidecar_DEADLINE_EXCEEDED") == 0


def test_a_dead_upstream_is_lookouts_unavailable_and_not_ready(
        stranded: GrpcSidecar) -> None:
    error = _raw_call(stranded.grpc_port, INFER, _infer_request())
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith("lookout: the upstream 127.0.0.1:")
    assert dict(error.trailing_metadata())["lookout-error"] == "upstream_unavailable"
    assert stranded.metric(REQUESTS, route=INFER, code="sidecar_UNAVAILABLE") == 1
    ready = request(stranded.sidecar.admin_port, "GET", "/readyz")
    assert ready.status == 503 and b"gRPC 127.0.0.1:" in ready.body


def test_a_dead_collector_a_killed_worker_and_a_broken_message_change_no_answer(
        upstream: Upstream) -> None:
    """Fail-open on the gRPC port: spans to a collector that is not there, an analysis
    worker killed under traffic, a message that is not protobuf: each answer is the
    upstream's own."""
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_TRACES_SAMPLER": "always_on"}
    started = _grpc_sidecar(upstream.http_port, upstream.grpc_port, env=env)
    try:
        pid = started.sidecar.process.popen.pid
        workers = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        for seed in range(6):
            if seed == 3:
                os.kill(workers[0], signal.SIGKILL)
            _same_answer(_infer(upstream.grpc_port, _tensor_input(seed), f"f{seed}"),
                         _infer(started.grpc_port, _tensor_input(seed), f"f{seed}"))
        garbage = b"\xff\x00 not a ModelInferRequest"
        direct = _raw_call(upstream.grpc_port, INFER, garbage)
        via = _raw_call(started.grpc_port, INFER, garbage)
        assert (via.code(), via.details()) == (direct.code(), direct.details())
        assert started.metric(REQUESTS, route=INFER, code="OK") == 6
        wait_until(lambda: started.metric("lookout_component_errors_total",
                                          component="analysis_worker") >= 1, 30,
                   "the killed worker counted")
    finally:
        assert started.sidecar.stop() == 0
