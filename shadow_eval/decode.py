"""Decode YOLO output tensors into detections: raw heads and NMS-included outputs.

Layouts (batch of one):
- `yolov8`: [1, 4+nc, N] — YOLOv8/YOLO11 (cx, cy, w, h in input pixels, then nc
  class scores already through a sigmoid, no objectness);
- `yolov5`: [1, N, 5+nc] — YOLOv5/v7 (cx, cy, w, h, objectness, nc class scores;
  score = objectness x class score);
- `end2end`: [1, K, 6] / [K, 6] (x1, y1, x2, y2, score, class — YOLOv10, YOLO11/26
  end-to-end exports) or [K, 7] (batch, x1, y1, x2, y2, class, score — the
  YOLOv7/TensorRT-style NMS plugin output). No NMS is applied again.
- TensorRT `EfficientNMS_TRT` outputs, common on Triton: four tensors holding the
  count, boxes, scores and classes (`decode_efficient_nms`).
Raw heads get a confidence threshold, class-aware NMS and a cap on detections. Boxes
are mapped back through the letterbox when the source image size is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from lookout.shadow_eval.boxes import Detections, class_aware_nms, xywh_to_xyxy
from lookout.shadow_eval.letterbox import Letterbox


class DecodeError(ValueError):
    """The tensor is not a YOLO output this module understands; the message says why."""


class HeadLayout(StrEnum):
    YOLOV8 = "yolov8"
    YOLOV5 = "yolov5"
    END2END = "end2end"


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300
    # most candidates fed to NMS, as Ultralytics' max_nms: bounds the worst case
    max_candidates: int = 30_000


# fewer anchors than this in an [1, N, 6] tensor means end-to-end detections (K <= 300
# in every known export), more means a single-class YOLOv5 head.
_MIN_RAW_ANCHORS = 1000


def identify_layout(shape: tuple[int, ...], num_classes: int | None = None) -> HeadLayout:
    """Which layout a tensor of `shape` is; `num_classes` resolves ambiguous shapes."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 3 and dims[0] != 1:
        raise DecodeError(f"batch of {dims[0]} images; only batch size 1 is decoded")
    core = dims[1:] if len(dims) == 3 else dims
    if len(core) != 2 or min(core) <= 0:
        raise DecodeError(f"expected a [1, A, B] or [K, 6|7] tensor, got shape {list(dims)}")
    rows, cols = core
    if cols in (6, 7) and rows < _MIN_RAW_ANCHORS:
        return HeadLayout.END2END
    if num_classes is not None:
        if rows == 4 + num_classes and cols > rows:
            return HeadLayout.YOLOV8
        if cols == 5 + num_classes and rows > cols:
            return HeadLayout.YOLOV5
        raise DecodeError(
            f"shape {list(dims)} fits neither [1, 4+{num_classes}, N] (YOLOv8) nor "
            f"[1, N, 5+{num_classes}] (YOLOv5) for the model's {num_classes} classes"
        )
    if rows > 4 and cols > rows:
        return HeadLayout.YOLOV8
    if cols > 5 and rows > cols:
        return HeadLayout.YOLOV5
    raise DecodeError(f"cannot tell the YOLO layout of shape {list(dims)}")


def _finish(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
            settings: DecodeSettings, letterbox: Letterbox | None) -> Detections:
    if scores.shape[0] > settings.max_candidates:
        top = np.argpartition(-scores, settings.max_candidates)[: settings.max_candidates]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    keep = class_aware_nms(boxes, scores, classes, settings.iou_threshold,
                           settings.max_detections)
    boxes = boxes[keep]
    if letterbox is not None:
        boxes = letterbox.to_source(boxes)
    return Detections.from_arrays(boxes, scores[keep], classes[keep])


def decode_yolov8(head: np.ndarray, settings: DecodeSettings = DecodeSettings(),
                  letterbox: Letterbox | None = None) -> Detections:
    predictions = np.asarray(head, dtype=np.float32).reshape(head.shape[-2], head.shape[-1])
    class_scores = predictions[4:]
    # threshold on the best class first: only survivors pay for argmax and box maths
    best = class_scores.max(axis=0)
    candidates = np.flatnonzero(best > settings.conf_threshold)
    if candidates.size == 0:
        return Detections.empty()
    classes = class_scores[:, candidates].argmax(axis=0)
    boxes = xywh_to_xyxy(predictions[:4, candidates].T)
    return _finish(boxes, best[candidates], classes, settings, letterbox)


def decode_yolov5(head: np.ndarray, settings: DecodeSettings = DecodeSettings(),
                  letterbox: Letterbox | None = None) -> Detections:
    predictions = np.asarray(head, dtype=np.float32).reshape(head.shape[-2], head.shape[-1])
    candidates = np.flatnonzero(predictions[:, 4] > settings.conf_threshold)
    if candidates.size == 0:
        return Detections.empty()
    rows = predictions[candidates]
    scores_by_class = rows[:, 5:] * rows[:, 4:5]
    classes = scores_by_class.argmax(axis=1)
    scores = scores_by_class[np.arange(rows.shape[0]), classes]
    confident = scores > settings.conf_threshold
    boxes = xywh_to_xyxy(rows[confident, :4])
    return _finish(boxes, scores[confident], classes[confident], settings, letterbox)


def decode_end2end(output: np.ndarray, settings: DecodeSettings = DecodeSettings(),
                   letterbox: Letterbox | None = None) -> Detections:
    rows = np.asarray(output, dtype=np.float32).reshape(-1, output.shape[-1])
    if rows.shape[1] == 7:
        rows = _seven_columns_as_six(rows)
    rows = rows[rows[:, 4] > settings.conf_threshold][: settings.max_detections]
    boxes = rows[:, :4]
    if letterbox is not None:
        boxes = letterbox.to_source(boxes)
    return Detections.from_arrays(boxes, rows[:, 4], rows[:, 5].round())


def _seven_columns_as_six(rows: np.ndarray) -> np.ndarray:
    """[batch, x1, y1, x2, y2, class, score] -> [x1, y1, x2, y2, score, class]. Some
    exporters swap the last two; the class column is the one holding integers."""
    class_col, score_col = 5, 6
    integral = np.all(np.equal(np.mod(rows[:, 6], 1), 0))
    if integral and not np.all(np.equal(np.mod(rows[:, 5], 1), 0)):
        class_col, score_col = 6, 5
    return rows[:, [1, 2, 3, 4, score_col, class_col]]


def decode(output: np.ndarray, settings: DecodeSettings = DecodeSettings(),
           letterbox: Letterbox | None = None, num_classes: int | None = None,
           layout: HeadLayout | None = None) -> Detections:
    """Decode any supported layout; raises DecodeError for anything else."""
    array = np.asarray(output)
    if array.dtype.kind not in "fiu":
        raise DecodeError(f"expected a numeric tensor, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise DecodeError("tensor holds NaN or infinite values")
    layout = layout or identify_layout(array.shape, num_classes)
    if layout is HeadLayout.YOLOV8:
        return decode_yolov8(array, settings, letterbox)
    if layout is HeadLayout.YOLOV5:
        return decode_yolov5(array, settings, letterbox)
    return decode_end2end(array, settings, letterbox)


def decode_efficient_nms(outputs: Mapping[str, np.ndarray],
                         settings: DecodeSettings = DecodeSettings(),
                         letterbox: Letterbox | None = None) -> Detections | None:
    """EfficientNMS_TRT outputs found by name (`num_dets`, `det_boxes`, `det_scores`,
    `det_classes` or similar); None when the outputs are not that plugin's."""
    def named(part: str) -> np.ndarray | None:
        return next((v for k, v in outputs.items() if part in k.lower()), None)

    count, boxes, scores, classes = (named(p) for p in ("num", "boxes", "scores", "classes"))
    if count is None or boxes is None or scores is None or classes is None:
        return None
    n = int(np.asarray(count).reshape(-1)[0])
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:n]
    scores = np.asarray(scores, np.float32).reshape(-1)[:n]
    classes = np.asarray(classes).reshape(-1)[:n]
    if boxes.shape[0] != n or scores.shape[0] != n or classes.shape[0] != n:
        raise DecodeError(f"num_dets says {n} but the tensors hold fewer")
    if letterbox is not None:
        boxes = letterbox.to_source(boxes)
    keep = scores > settings.conf_threshold
    return Detections.from_arrays(boxes[keep], scores[keep], classes[keep])
