"""A real KServe V2 client (tritonclient) through the sidecar; detections in /metrics."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from lookout.slo import catalog
from tests.support.kserve_upstream import CLASS_NAMES
from tests.support.processes import (
    SidecarProcess,
    request,
    served_module,
    start_sidecar,
    wait_until,
)

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("kserve_traffic")


@pytest.fixture(scope="module")
def kserve_port() -> Iterator[int]:
    with served_module("tests.support.kserve_upstream") as port:
        yield port


@pytest.fixture(scope="module")
def sidecar(kserve_port: int) -> Iterator[SidecarProcess]:
    process = start_sidecar(f"http://127.0.0.1:{kserve_port}",
                            "--class-names", ",".join(CLASS_NAMES), "--ready-path",
                            "/v2/health/ready")
    yield process
    process.stop()


def _value(sidecar: SidecarProcess, name: str, **labels: str) -> float:
    return sidecar.metric(name, **labels)


def _wait_for_value(sidecar: SidecarProcess, expected: float, name: str, **labels: str) -> None:
    wait_until(lambda: _value(sidecar, name, **labels) >= expected, 20,
               f"{name}{labels} to reach {expected}")
    assert _value(sidecar, name, **labels) == expected


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_inferences_become_detection_metrics(sidecar: SidecarProcess,
                                                          binary: bool) -> None:
    detections = catalog.DETECTIONS.sample_name
    before_person = _value(sidecar, detections, **{"class": "person"})
    before_car = _value(sidecar, detections, **{"class": "car"})
    before_requests = _value(sidecar, catalog.DETECTIONS_PER_REQUEST.count_name)

    client = triton.InferenceServerClient(url=f"127.0.0.1:{sidecar.port}")
    assert client.is_server_ready()
    frame = np.random.default_rng(1).random((1, 3, 640, 640), dtype=np.float32)
    for _ in range(2):
        image = triton.InferInput("images", list(frame.shape), "FP32")
        image.set_data_from_numpy(frame, binary_data=binary)
        result = client.infer("yolo", [image],
                              outputs=[triton.InferRequestedOutput("output0", binary_data=binary)])
        assert result.as_numpy("output0").shape == (1, 84, 8400)
    client.close()

    _wait_for_value(sidecar, before_requests + 2, catalog.DETECTIONS_PER_REQUEST.count_name)
    _wait_for_value(sidecar, before_person + 2, detections, **{"class": "person"})
    _wait_for_value(sidecar, before_car + 4, detections, **{"class": "car"})
    assert _value(sidecar, catalog.DETECTION_CONFIDENCE.count_name) >= 6


def _jpeg(size=(1280, 720)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_plain_uploads_give_detections_and_box_sizes(sidecar: SidecarProcess,
                                                     kserve_port: int) -> None:
    before = _value(sidecar, catalog.DETECTION_BOX_AREA.count_name)
    response = request(sidecar.port, "POST", "/predict", body=_jpeg(),
                       headers={"Content-Type": "image/jpeg"})
    assert response.status == 200 and len(response.json()) == 3
    _wait_for_value(sidecar, before + 3, catalog.DETECTION_BOX_AREA.count_name)
    # the person box is 160x260 px of a 1280x720 frame: 4.5% of the area
    assert _value(sidecar, catalog.DETECTION_BOX_AREA.bucket_name, le="0.05") >= 1


def test_ten_thousand_detections_are_counted_and_relayed(sidecar: SidecarProcess,
                                                          kserve_port: int) -> None:
    total = catalog.DETECTIONS_PER_REQUEST.sum_name
    before = _value(sidecar, total)
    direct = request(kserve_port, "POST", "/crowd", body=_jpeg())
    proxied = request(sidecar.port, "POST", "/crowd", body=_jpeg())
    assert proxied.body == direct.body and len(proxied.json()) == 10_000
    _wait_for_value(sidecar, before + 10_000, total)


@pytest.mark.parametrize(("path", "body", "headers", "reason"), [
    ("/predict", _jpeg()[:500], {"Content-Type": "image/jpeg"}, "truncated_image"),
    ("/not-json", b"\x00" * 100, {"Content-Type": "image/jpeg"}, "undecodable_image"),
    ("/not-json", _jpeg(), {"Content-Type": "image/jpeg"}, "bad_json"),
    ("/v2/models/yolo/infer", b'{"inputs": [{"name": "images", "datatype": "FP32", '
     b'"shape": [1, 3, 640, 640], "data": [1.0]}]}', {}, "bad_kserve"),
])
def test_bad_input_is_counted_and_the_response_is_unchanged(
    sidecar: SidecarProcess, kserve_port: int, path: str, body: bytes, headers: dict,
    reason: str,
) -> None:
    before = _value(sidecar, catalog.PARSE_FAILURES.sample_name, reason=reason)
    direct = request(kserve_port, "POST", path, body=body, headers=headers)
    proxied = request(sidecar.port, "POST", path, body=body, headers=headers)
    assert (proxied.status, proxied.body) == (direct.status, direct.body)
    if direct.status == 200:  # only successful exchanges are analysed
        _wait_for_value(sidecar, before + 1, catalog.PARSE_FAILURES.sample_name, reason=reason)
