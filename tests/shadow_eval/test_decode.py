"""Decoders on hand-built tensors whose correct boxes are known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookout.shadow_eval.boxes import box_iou, class_aware_nms, nms
from lookout.shadow_eval.decode import (
    DecodeError,
    DecodeSettings,
    HeadLayout,
    decode,
    identify_layout,
)
from lookout.shadow_eval.letterbox import Letterbox
from tests.shadow_eval.heads import yolov5_head, yolov8_head

BOXES = np.array([[10, 20, 110, 220], [300, 300, 400, 360], [500, 50, 620, 200]], np.float32)
CLASSES = np.array([0, 2, 79])
SCORES = np.array([0.9, 0.8, 0.6], np.float32)


def _sorted(detections):
    order = np.argsort(-detections.scores)
    return detections.boxes[order], detections.classes[order], detections.scores[order]


def test_yolov8_head_decodes_to_the_planted_boxes() -> None:
    boxes, classes, scores = _sorted(decode(yolov8_head(BOXES, CLASSES, SCORES, 80)))
    np.testing.assert_allclose(boxes, BOXES, atol=1e-3)
    assert classes.tolist() == CLASSES.tolist()
    np.testing.assert_allclose(scores, SCORES, atol=1e-6)


def test_yolov5_head_multiplies_objectness_and_class_score() -> None:
    head = yolov5_head(BOXES, CLASSES, SCORES, 80)
    head[0, :, 4] *= 1.0
    boxes, classes, scores = _sorted(decode(head, num_classes=80))
    np.testing.assert_allclose(boxes, BOXES, atol=1e-3)
    assert classes.tolist() == CLASSES.tolist()
    np.testing.assert_allclose(scores, SCORES, atol=1e-6)


def test_letterbox_rescales_to_the_source_image() -> None:
    letterbox = Letterbox(source_width=1280, source_height=720)
    source_boxes = np.array([[100, 100, 500, 400], [900, 10, 1270, 700]], np.float32)
    head = yolov8_head(source_boxes, np.array([1, 5]), np.array([0.7, 0.95]), 80,
                       letterbox=letterbox)
    detections = decode(head, letterbox=letterbox)
    boxes, _, _ = _sorted(detections)
    np.testing.assert_allclose(boxes, source_boxes[::-1], atol=1e-2)
    # the geometry Ultralytics uses for a 1280x720 frame at 640: gain 0.5, 140 px top pad
    assert letterbox.gain == 0.5 and letterbox.padding == (0, 140)


@pytest.mark.parametrize("shape_prefix", [(1,), ()])
def test_end_to_end_six_columns_are_taken_as_they_are(shape_prefix) -> None:
    rows = np.zeros((300, 6), np.float32)
    rows[:3, :4] = BOXES
    rows[:3, 4] = SCORES
    rows[:3, 5] = CLASSES
    output = rows.reshape(*shape_prefix, 300, 6)
    assert identify_layout(output.shape) is HeadLayout.END2END
    boxes, classes, scores = _sorted(decode(output))
    np.testing.assert_allclose(boxes, BOXES)
    assert classes.tolist() == CLASSES.tolist()
    np.testing.assert_allclose(scores, SCORES)


def test_end_to_end_seven_columns_find_the_class_column() -> None:
    standard = np.column_stack([np.zeros(3), BOXES, CLASSES, SCORES]).astype(np.float32)
    swapped = np.column_stack([np.zeros(3), BOXES, SCORES, CLASSES]).astype(np.float32)
    for rows in (standard, swapped):
        boxes, classes, scores = _sorted(decode(rows))
        np.testing.assert_allclose(boxes, BOXES)
        assert classes.tolist() == CLASSES.tolist()
        np.testing.assert_allclose(scores, SCORES)


def test_overlapping_candidates_of_one_class_are_suppressed_but_not_across_classes() -> None:
    duplicate = BOXES[0] + np.array([2, 2, 2, 2], np.float32)  # IoU ~0.96 with BOXES[0]
    boxes = np.vstack([BOXES, duplicate, duplicate])
    classes = np.array([*CLASSES, 0, 3])  # same class as BOXES[0], then another class
    scores = np.array([*SCORES, 0.85, 0.85], np.float32)
    detections = decode(yolov8_head(boxes, classes, scores, 80))
    assert len(detections) == 4
    assert sorted(detections.classes.tolist()) == [0, 2, 3, 79]


def test_thresholds_and_cap_apply() -> None:
    head = yolov8_head(BOXES, CLASSES, SCORES, 80)
    assert len(decode(head, DecodeSettings(conf_threshold=0.7))) == 2
    assert len(decode(head, DecodeSettings(max_detections=1))) == 1


def test_nms_keeps_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    classes = np.array([0, 1, 0])
    assert class_aware_nms(boxes, scores, classes, 0.5).tolist() == [1, 2, 0]


@pytest.mark.parametrize(
    ("shape", "match"),
    [((2, 84, 8400), "batch of 2"), ((84,), "expected a"), ((1, 3, 3), "cannot tell"),
     ((1, 85, 8400), "fits neither")],
)
def test_unsupported_shapes_are_explained(shape, match) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(np.zeros(shape, np.float32), num_classes=80 if shape == (1, 85, 8400) else None)


def test_non_numeric_and_non_finite_tensors_are_refused() -> None:
    with pytest.raises(DecodeError, match="numeric"):
        decode(np.array([["a"] * 6] * 3))
    head = yolov8_head(BOXES, CLASSES, SCORES, 80)
    head[0, 0, 0] = np.nan
    with pytest.raises(DecodeError, match="NaN"):
        decode(head)


def test_layouts_are_identified_with_and_without_class_count() -> None:
    assert identify_layout((1, 84, 8400)) is HeadLayout.YOLOV8
    assert identify_layout((1, 25200, 85)) is HeadLayout.YOLOV5
    assert identify_layout((1, 300, 6)) is HeadLayout.END2END
    assert identify_layout((1, 25200, 6), num_classes=1) is HeadLayout.YOLOV5
    assert identify_layout((1, 6, 8400), num_classes=2) is HeadLayout.YOLOV8


def _separated_boxes(draw, count: int) -> np.ndarray:
    """Boxes in a grid of cells so no two overlap (NMS must keep all of them)."""
    cells = draw(st.lists(st.integers(0, 35), min_size=count, max_size=count, unique=True))
    boxes = []
    for cell in cells:
        row, col = divmod(cell, 6)
        x0, y0 = col * 200.0, row * 110.0
        w = draw(st.floats(8, 190))
        h = draw(st.floats(8, 100))
        dx = draw(st.floats(0, 190 - w))
        dy = draw(st.floats(0, 100 - h))
        boxes.append([x0 + dx, y0 + dy, x0 + dx + w, y0 + dy + h])
    return np.array(boxes, np.float32)


@st.composite
def scenes(draw):
    count = draw(st.integers(1, 12))
    boxes = _separated_boxes(draw, count)
    classes = np.array(draw(st.lists(st.integers(0, 9), min_size=count, max_size=count)))
    scores = np.array(draw(st.lists(st.floats(0.3, 0.99), min_size=count, max_size=count)),
                      np.float32)
    width = draw(st.integers(1200, 1920))
    height = draw(st.integers(660, 1080))
    return boxes, classes, scores, Letterbox(width, height)


@settings(max_examples=60, deadline=None)
@given(scene=scenes(), layout=st.sampled_from([HeadLayout.YOLOV8, HeadLayout.YOLOV5]))
def test_round_trip_boxes_encode_decode(scene, layout) -> None:
    boxes, classes, scores, letterbox = scene
    build = yolov8_head if layout is HeadLayout.YOLOV8 else yolov5_head
    head = build(boxes, classes, scores, 10, anchors=2000, letterbox=letterbox)
    detections = decode(head, letterbox=letterbox, num_classes=10)
    assert len(detections) == len(boxes)
    iou = box_iou(boxes, detections.boxes)
    matched = iou.argmax(axis=1)
    assert np.all(iou.max(axis=1) > 0.999)
    assert detections.classes[matched].tolist() == classes.tolist()
    np.testing.assert_allclose(detections.scores[matched], scores, atol=1e-6)


def _reference_nms(boxes, scores, classes, threshold):
    """Textbook greedy class-aware NMS, one box at a time."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(classes[i] != classes[k] or box_iou(boxes[i:i + 1], boxes[k:k + 1])[0, 0]
               <= threshold for k in kept):
            kept.append(i)
    return kept


@settings(max_examples=150, deadline=None)
@given(data=st.data(), count=st.integers(1, 60), threshold=st.sampled_from([0.3, 0.45, 0.7]))
def test_vectorised_nms_equals_textbook_greedy(data, count, threshold) -> None:
    corners = np.array(data.draw(st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(1, 60),
                  st.integers(1, 60)), min_size=count, max_size=count)), np.float32)
    boxes = np.column_stack([corners[:, :2], corners[:, :2] + corners[:, 2:]])
    # distinct scores: ties would make "best first" ambiguous for both implementations
    scores = np.array(data.draw(st.lists(st.integers(1, 10_000), min_size=count,
                                         max_size=count, unique=True)), np.float32) / 10_000
    classes = np.array(data.draw(st.lists(st.integers(0, 3), min_size=count, max_size=count)))
    expected = _reference_nms(boxes, scores, classes, threshold)
    assert class_aware_nms(boxes, scores, classes, threshold).tolist() == expected


def test_letterbox_image_pads_like_ultralytics() -> None:
    from lookout.shadow_eval.letterbox import letterbox_image

    frame = np.full((720, 1280, 3), 200, np.uint8)
    canvas, geometry = letterbox_image(frame, 640, 640)
    assert canvas.shape == (640, 640, 3)
    assert geometry.resized == (640, 360)
    assert np.all(canvas[:140] == 114) and np.all(canvas[500:] == 114)
    assert np.all(canvas[140:500] == 200)
