"""Build YOLO output tensors from known boxes, as a model would emit them."""

from __future__ import annotations

import numpy as np

from lookout.shadow_eval.letterbox import Letterbox


def _centres(boxes_xyxy: np.ndarray) -> np.ndarray:
    return np.stack([(boxes_xyxy[:, 0] + boxes_xyxy[:, 2]) / 2,
                     (boxes_xyxy[:, 1] + boxes_xyxy[:, 3]) / 2,
                     boxes_xyxy[:, 2] - boxes_xyxy[:, 0],
                     boxes_xyxy[:, 3] - boxes_xyxy[:, 1]], axis=1)


def yolov8_head(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, num_classes: int,
                anchors: int = 8400, letterbox: Letterbox | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """[1, 4+nc, anchors]: the objects at random anchors, low-score noise elsewhere."""
    rng = rng or np.random.default_rng(0)
    boxes = letterbox.to_input(boxes) if letterbox else boxes
    head = np.zeros((1, 4 + num_classes, anchors), np.float32)
    head[0, :4] = rng.uniform(0, 640, (4, anchors))
    head[0, 4:] = rng.uniform(0, 0.05, (num_classes, anchors))
    slots = rng.choice(anchors, size=len(boxes), replace=False)
    head[0, :4, slots] = _centres(boxes)
    head[0, 4:, slots] = 0.0
    head[0, 4 + classes, slots] = scores
    return head


def yolov5_head(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, num_classes: int,
                anchors: int = 25200, letterbox: Letterbox | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """[1, anchors, 5+nc] with objectness 1.0 for objects (score in the class column)."""
    rng = rng or np.random.default_rng(0)
    boxes = letterbox.to_input(boxes) if letterbox else boxes
    head = np.zeros((1, anchors, 5 + num_classes), np.float32)
    head[0, :, :4] = rng.uniform(0, 640, (anchors, 4))
    head[0, :, 4] = rng.uniform(0, 0.05, anchors)
    head[0, :, 5:] = rng.uniform(0, 1, (anchors, num_classes))
    slots = rng.choice(anchors, size=len(boxes), replace=False)
    head[0, slots, :4] = _centres(boxes)
    head[0, slots, 4] = 1.0
    head[0, slots, 5:] = 0.0
    head[0, slots, 5 + classes] = scores
    return head
