"""The demo inference server on a small ONNX model built here, with a real
KServe client and plain uploads."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper, numpy_helper

from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.letterbox import Letterbox
from tests.shadow_eval.heads import yolov8_head
from tests.support.processes import ManagedProcess, free_port, port_accepts, request, wait_until

INPUT = 320
# the fixed "detections" of the stand-in model, in model-input pixels
BOXES = np.array([[20, 60, 120, 160], [200, 100, 260, 180]], np.float32)


def stand_in_model(path: Path) -> np.ndarray:
    """An ONNX model in YOLOv8 layout whose output is a fixed head (plus 0 x input, so
    the input is really consumed), with Ultralytics metadata."""
    head = yolov8_head(BOXES, np.array([0, 3]), np.array([0.9, 0.7], np.float32),
                       len(CLASSES), anchors=2100)
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["head", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "stand_in",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, INPUT, INPUT])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))],
        initializer=[numpy_helper.from_array(head, "head"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(CLASSES)) + "}"
    for key, value in {"names": names, "imgsz": f"[{INPUT}, {INPUT}]", "stride": "32"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return head


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[int, np.ndarray]]:
    path = tmp_path_factory.mktemp("model") / "stand_in.onnx"
    head = stand_in_model(path)
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", "lookout", "demo-upstream",
                              "--model", str(path), "--listen", f"127.0.0.1:{port}"])
    wait_until(lambda: port_accepts(port) or not process.alive(), 60, "the demo upstream")
    assert process.alive(), process.output
    yield port, head
    process.terminate()


def _jpeg(scene_seed: int = 1) -> tuple[bytes, tuple[int, int]]:
    scene = generate_scene(scene_seed)
    buffer = io.BytesIO()
    scene.to_pil().save(buffer, "JPEG")
    return buffer.getvalue(), scene.size


def test_predict_returns_detections_in_source_pixels(server) -> None:
    port, _ = server
    data, (width, height) = _jpeg()
    response = request(port, "POST", "/predict", body=data,
                       headers={"Content-Type": "image/jpeg"})
    assert response.status == 200
    detections = response.json()
    assert [d["name"] for d in detections] == ["circle", "star"]
    expected = Letterbox(width, height, INPUT, INPUT).to_source(BOXES)
    got = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in detections])
    np.testing.assert_allclose(got, expected, atol=0.02)


@pytest.mark.parametrize("binary", [False, True])
def test_kserve_clients_get_the_raw_head(server, binary: bool) -> None:
    port, head = server
    client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    assert client.is_server_ready()
    tensor = np.zeros((1, 3, INPUT, INPUT), np.float32)
    images = triton.InferInput("images", list(tensor.shape), "FP32")
    images.set_data_from_numpy(tensor, binary_data=binary)
    result = client.infer("yolo", [images],
                          outputs=[triton.InferRequestedOutput("output0", binary_data=binary)])
    np.testing.assert_allclose(result.as_numpy("output0"), head, atol=1e-6)
    client.close()


def test_bad_inputs_get_400_with_a_reason(server) -> None:
    port, _ = server
    response = request(port, "POST", "/predict", body=b"not an image",
                       headers={"Content-Type": "image/jpeg"})
    assert response.status == 400 and "readable image" in response.json()["error"]
    wrong = (b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8], '
             b'"data": ' + str([0.0] * 192).encode() + b"}]}")
    response = request(port, "POST", "/v2/models/yolo/infer", body=wrong,
                       headers={"Content-Type": "application/json"})
    assert response.status == 400 and "must be [1, 3, 320, 320]" in response.json()["error"]


def test_uploads_through_multipart(server) -> None:
    port, _ = server
    data, _ = _jpeg(2)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"f.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    response = request(port, "POST", "/predict", body=body,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status == 200 and len(response.json()) == 2


def test_an_image_can_be_sent_as_kserve_bytes(server) -> None:
    port, head = server
    data, _ = _jpeg(3)
    from lookout.sidecar.pipeline.kserve import (
        HEADER_LENGTH,
        as_array,
        encode_infer_body,
        parse_tensors,
    )

    body, length = encode_infer_body(
        "inputs", [("IMAGE", [data])], binary=True,
        extra={"outputs": [{"name": "output0", "parameters": {"binary_data": True}}]})
    response = request(port, "POST", "/v2/models/yolo/infer", body=body,
                       headers={HEADER_LENGTH: str(length),
                                "Content-Type": "application/octet-stream"})
    assert response.status == 200
    [output] = parse_tensors(response.body, int(response.headers[HEADER_LENGTH]), "outputs")
    np.testing.assert_allclose(as_array(output), head, atol=1e-6)


def test_a_corrupt_model_fails_to_start_with_a_clear_message(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 50)
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", "lookout", "demo-upstream",
                              "--model", str(corrupt), "--listen", f"127.0.0.1:{port}"])
    assert process.popen.wait(60) == 1
    assert "cannot be loaded" in process.output
    assert "Traceback" not in process.output


def test_default_model_is_the_shipped_primary() -> None:
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", "lookout", "demo-upstream",
                              "--port", str(port)])
    try:
        wait_until(lambda: port_accepts(port) or not process.alive(), 60, "the demo upstream")
        scene_jpeg, _ = _jpeg(4)
        response = request(port, "POST", "/predict", body=scene_jpeg,
                           headers={"Content-Type": "image/jpeg"})
        assert response.status == 200
        truth = generate_scene(4)
        names = sorted(d["name"] for d in response.json() if d["confidence"] > 0.5)
        assert names == sorted(CLASSES[c] for c in truth.classes)
    finally:
        process.terminate()
