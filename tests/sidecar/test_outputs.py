"""Finding the primary model's detections in every response shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lookout.shadow_eval.letterbox import Letterbox
from lookout.sidecar.pipeline.inputs import InputImage
from lookout.sidecar.pipeline.kserve import HEADER_LENGTH, encode_infer_body
from lookout.sidecar.pipeline.outputs import OutputSettings, ResponseMapping, extract_detections
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason
from tests.shadow_eval.heads import yolov5_head, yolov8_head

JSON = {"Content-Type": "application/json"}
SETTINGS = OutputSettings()


def _json(document) -> bytes:
    return json.dumps(document).encode()


def test_ultralytics_summary_list() -> None:
    body = _json([
        {"name": "person", "class": 0, "confidence": 0.91,
         "box": {"x1": 10, "y1": 20, "x2": 110, "y2": 220}},
        {"name": "car", "class": 2, "confidence": 0.55,
         "box": {"x1": 300, "y1": 300, "x2": 400, "y2": 360}},
    ])
    detections = extract_detections(JSON, body, None, SETTINGS)
    assert detections.names == ("person", "car")
    assert detections.classes.tolist() == [0, 2]
    np.testing.assert_allclose(detections.boxes[0], [10, 20, 110, 220])


def test_detections_key_with_xyxy_and_nested_images_list() -> None:
    body = _json({"images": [{"results": [
        {"label": "dog", "score": 0.7, "xyxy": [1, 2, 3, 4]}]}]})
    detections = extract_detections(JSON, body, None, SETTINGS)
    assert detections.names == ("dog",)
    body = _json({"detections": [{"class_id": 5, "conf": 0.4, "xywh": [50, 50, 20, 10]}]})
    detections = extract_detections(JSON, body, None, SETTINGS)
    assert detections.classes.tolist() == [5]
    np.testing.assert_allclose(detections.boxes[0], [40, 45, 60, 55])


def test_roboflow_predictions_are_centre_based() -> None:
    body = _json({"time": 0.02, "image": {"width": 640, "height": 480}, "predictions": [
        {"x": 100, "y": 80, "width": 40, "height": 20, "confidence": 0.8, "class": "helmet",
         "class_id": 1}]})
    detections = extract_detections(JSON, body, None, SETTINGS)
    np.testing.assert_allclose(detections.boxes[0], [80, 70, 120, 90])
    assert detections.names == ("helmet",) and detections.classes.tolist() == [1]


def test_empty_detection_list_is_zero_detections() -> None:
    assert len(extract_detections(JSON, _json({"detections": []}), None, SETTINGS)) == 0
    assert len(extract_detections(JSON, _json([]), None, SETTINGS)) == 0


def test_custom_mapping() -> None:
    body = _json({"result": {"objects": [{"rect": [10, 10, 30, 40], "p": 0.6, "kind": "box"}]}})
    mapping = ResponseMapping("result.objects", "rect", "ltwh", "p", "kind")
    detections = extract_detections(JSON, body, None, OutputSettings(mapping=mapping))
    np.testing.assert_allclose(detections.boxes[0], [10, 10, 40, 50])
    assert detections.names == ("box",)


BOXES = np.array([[100, 100, 500, 400], [900, 10, 1270, 700]], np.float32)
CLASSES, SCORES = np.array([1, 5]), np.array([0.7, 0.95], np.float32)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("builder", [yolov8_head, yolov5_head])
def test_kserve_raw_heads_are_decoded_through_the_letterbox(binary, builder) -> None:
    letterbox = Letterbox(1280, 720)
    head = builder(BOXES, CLASSES, SCORES, 80, letterbox=letterbox)
    body, length = encode_infer_body("outputs", [("output0", head)], binary,
                                     {"model_name": "yolo"})
    headers = {HEADER_LENGTH: str(length)} if binary else JSON
    image = InputImage("raw", 1280, 720, encoded=b"...")
    detections = extract_detections(headers, body, image, OutputSettings(num_classes=80))
    order = np.argsort(detections.classes)
    np.testing.assert_allclose(detections.boxes[order], BOXES, atol=0.05)
    assert detections.classes[order].tolist() == [1, 5]


def test_kserve_tensor_inputs_keep_model_coordinates() -> None:
    head = yolov8_head(BOXES / 2, CLASSES, SCORES, 80)
    body, _ = encode_infer_body("outputs", [("output0", head)], binary=False)
    image = InputImage("kserve_tensor", 640, 640, pixels=np.zeros((640, 640, 3), np.uint8))
    detections = extract_detections(JSON, body, image, SETTINGS)
    np.testing.assert_allclose(np.sort(detections.boxes, axis=0), np.sort(BOXES / 2, axis=0),
                               atol=1e-3)


def test_kserve_end_to_end_and_efficient_nms_outputs() -> None:
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, :2, :4], rows[0, :2, 4], rows[0, :2, 5] = BOXES, SCORES, CLASSES
    body, _ = encode_infer_body("outputs", [("output0", rows)], binary=False)
    assert extract_detections(JSON, body, None, SETTINGS).classes.tolist() == [1, 5]

    boxes = np.zeros((1, 100, 4), np.float32)
    boxes[0, :2] = BOXES
    scores = np.zeros((1, 100), np.float32)
    scores[0, :2] = SCORES
    classes = np.zeros((1, 100), np.int32)
    classes[0, :2] = CLASSES
    outputs = [("num_dets", np.array([[2]], np.int32)), ("det_boxes", boxes),
               ("det_scores", scores), ("det_classes", classes)]
    body, length = encode_infer_body("outputs", outputs, binary=True)
    detections = extract_detections({HEADER_LENGTH: str(length)}, body, None, SETTINGS)
    assert detections.classes.tolist() == [1, 5]
    np.testing.assert_allclose(detections.boxes, BOXES)


def test_ten_thousand_detections_parse() -> None:
    items = [{"name": f"c{i % 7}", "confidence": 0.5, "box": {"x1": i, "y1": 0, "x2": i + 5,
                                                            "y2": 5}} for i in range(10_000)]
    assert len(extract_detections(JSON, _json(items), None, SETTINGS)) == 10_000


@pytest.mark.parametrize(("headers", "body", "reason"), [
    (JSON, b"\xff\xfe{not json", Reason.BAD_JSON),
    (JSON, b'{"status": "ok"}', Reason.UNRECOGNIZED_RESPONSE),
    (JSON, b'[{"confidence": 0.9, "box": {"x1": 1}}]', Reason.BAD_DETECTION),
    (JSON, b'[{"confidence": "high", "xyxy": [1, 2, 3, 4]}]', Reason.BAD_DETECTION),
    (JSON, b'[{"confidence": NaN, "xyxy": [1, 2, 3, 4]}]', Reason.BAD_DETECTION),
    (JSON, b'{"outputs": [{"name": "output0", "datatype": "FP32", "shape": [1, 84, 8400], '
           b'"data": [0.5]}]}', Reason.BAD_KSERVE),
    (JSON, b'{"outputs": [{"name": "output0", "datatype": "FP32", "shape": [2, 3], '
           b'"data": [1, 2, 3, 4, 5, 6]}]}', Reason.BAD_TENSOR),
    ({HEADER_LENGTH: "99999"}, b'{"outputs": []}', Reason.BAD_KSERVE),
])
def test_bad_responses_fail_with_a_bounded_reason(headers, body, reason) -> None:
    with pytest.raises(ParseFailure) as caught:
        extract_detections(headers, body, None, SETTINGS)
    assert caught.value.reason is reason
