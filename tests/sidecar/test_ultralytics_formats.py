"""lookout against real Ultralytics output: the fixtures in tests/data/ultralytics/ were
written by Ultralytics itself (tools/ultralytics_fixtures.sh), for known boxes on a
known 640x480 frame, and by two of its ONNX exports built from its YAML configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lookout.shadow_eval.decode import DecodeSettings
from lookout.shadow_eval.letterbox import Letterbox
from lookout.shadow_eval.names import read_model_metadata
from lookout.sidecar.pipeline.inputs import extract_image
from lookout.sidecar.pipeline.kserve import encode_infer_body
from lookout.sidecar.pipeline.outputs import OutputSettings, extract_detections
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason
from tests.shadow_eval.heads import yolov8_head

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "ultralytics"
RESULTS = json.loads((FIXTURES / "results.json").read_text())
EXPORTS = json.loads((FIXTURES / "onnx_metadata.json").read_text())
KNOWN = np.array(RESULTS["boxes_xyxy_conf_cls"], np.float32)
JSON = {"Content-Type": "application/json"}
SETTINGS = OutputSettings()
# Ultralytics rounds to 5 decimals: 0.5e-5 of 640 pixels
PIXEL_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def frame():
    body = (FIXTURES / "frame.jpg").read_bytes()
    image = extract_image("/predict", {"Content-Type": "image/jpeg"}, body, ())
    assert (image.width, image.height) == (RESULTS["image"]["width"],
                                           RESULTS["image"]["height"])
    return image


def _detect(document, image) -> object:
    return extract_detections(JSON, json.dumps(document).encode(), image, SETTINGS)


@pytest.mark.parametrize("form", ["to_json", "summary", "summary_normalized"])
def test_summaries_give_the_boxes_ultralytics_was_given_in_pixels(form, frame) -> None:
    detections = _detect(RESULTS[form], frame)
    np.testing.assert_allclose(detections.boxes, KNOWN[:, :4], atol=PIXEL_TOLERANCE)
    np.testing.assert_allclose(detections.scores, KNOWN[:, 4], atol=1e-5)
    assert detections.names == ("person", "car", "dog")
    assert detections.classes.tolist() == KNOWN[:, 5].astype(int).tolist()


@pytest.mark.parametrize("key", ["xyxy", "xyxyn", "xywh", "xywhn"])
def test_serialised_boxes_arrays_in_every_unit(key, frame) -> None:
    """What a FastAPI app returns from `result.boxes.<key>.tolist()`."""
    arrays = RESULTS["arrays"]
    items = [{key: box, "confidence": conf, "class": int(cls)}
             for box, conf, cls in zip(arrays[key], arrays["conf"], arrays["cls"], strict=True)]
    detections = _detect({"detections": items}, frame)
    np.testing.assert_allclose(detections.boxes, KNOWN[:, :4], atol=PIXEL_TOLERANCE)


def test_normalised_boxes_without_the_image_stay_shares_of_the_frame() -> None:
    detections = _detect(RESULTS["summary_normalized"], None)
    width, height = RESULTS["image"]["width"], RESULTS["image"]["height"]
    expected = KNOWN[:, :4] / np.array([width, height, width, height], np.float32)
    np.testing.assert_allclose(detections.boxes, expected, atol=1e-5)


def test_boxes_that_cannot_be_read_either_way_are_a_counted_failure(frame) -> None:
    arrays = RESULTS["arrays"]
    past_one = [{"xyxyn": box, "confidence": 0.9, "class": 0} for box in arrays["xyxy"]]
    with pytest.raises(ParseFailure) as raised:
        _detect({"detections": past_one}, frame)
    assert raised.value.reason is Reason.AMBIGUOUS_BOXES
    mixed = [{"xyxyn": arrays["xyxyn"][0], "confidence": 0.9, "class": 0},
             {"xyxy": arrays["xyxy"][1], "confidence": 0.8, "class": 2}]
    with pytest.raises(ParseFailure) as raised:
        _detect({"detections": mixed}, frame)
    assert raised.value.reason is Reason.AMBIGUOUS_BOXES


def test_a_real_predict_pass_is_read_whole(frame) -> None:
    """The untrained YOLO11n's own output at a very low threshold: 20 boxes."""
    predicted = RESULTS["predict_summary"]
    detections = _detect(predicted, frame)
    assert len(detections) == len(predicted) == 20
    assert list(detections.names) == [item["name"] for item in predicted]
    np.testing.assert_allclose(detections.boxes[:, 2],
                               [item["box"]["x2"] for item in predicted], atol=PIXEL_TOLERANCE)


def _export_like(path: Path, export: dict) -> None:
    """An ONNX file with an Ultralytics export's metadata and graph signature."""
    [(input_name, input_shape)] = export["inputs"].items()
    [(output_name, output_shape)] = export["outputs"].items()
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["shape"], value=helper.make_tensor(
            "s", TensorProto.INT64, [3], output_shape)),
         helper.make_node("ConstantOfShape", ["shape"], [output_name])],
        "export", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in export["metadata"].items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


@pytest.mark.parametrize("export", EXPORTS, ids=[e["config"] for e in EXPORTS])
def test_export_metadata_gives_names_and_input_size_and_its_head_decodes(
        export, tmp_path) -> None:
    path = tmp_path / "model.onnx"
    _export_like(path, export)
    metadata = read_model_metadata(path)
    assert len(metadata.names) == 80 and metadata.names[:3] == ("person", "bicycle", "car")
    size = export["imgsz"]
    assert metadata.input_size == (size, size) and metadata.stride == 32
    anchors = export["outputs"]["output0"][2]
    letterbox = Letterbox(640, 480, size, size)
    head = yolov8_head(KNOWN[:, :4], KNOWN[:, 5].astype(int), KNOWN[:, 4], 80, anchors,
                       letterbox)
    body, _ = encode_infer_body("outputs", [("output0", head)], False)
    detections = extract_detections(JSON, body, _frame_of(640, 480), OutputSettings(
        DecodeSettings(), num_classes=len(metadata.names), input_size=metadata.input_size))
    order = np.argsort(-detections.scores)
    np.testing.assert_allclose(detections.boxes[order], KNOWN[:, :4], atol=0.5)
    assert detections.classes[order].tolist() == [0, 2, 16]


def _frame_of(width: int, height: int):
    from lookout.sidecar.pipeline.inputs import InputImage

    return InputImage("raw", width, height)
