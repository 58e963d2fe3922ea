"""Detections as arrays, IoU and class-aware non-maximum suppression in numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Detections:
    """N boxes in xyxy pixels of the original image, with score and class id."""

    boxes: np.ndarray  # float32 [N, 4]
    scores: np.ndarray  # float32 [N]
    classes: np.ndarray  # int64 [N]
    # class names when the producer gave names rather than (or besides) ids
    names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_arrays(cls, boxes, scores, classes,
                    names: tuple[str, ...] | None = None) -> Detections:
        return cls(np.asarray(boxes, np.float32).reshape(-1, 4),
                   np.asarray(scores, np.float32).reshape(-1),
                   np.asarray(classes, np.int64).reshape(-1), names)

    def areas(self) -> np.ndarray:
        widths = np.clip(self.boxes[:, 2] - self.boxes[:, 0], 0, None)
        heights = np.clip(self.boxes[:, 3] - self.boxes[:, 1], 0, None)
        return widths * heights


def xywh_to_xyxy(centres: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    half = centres[:, 2:4] / 2
    return np.concatenate((centres[:, :2] - half, centres[:, :2] + half), axis=1)


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU matrix [len(first), len(second)] of xyxy boxes."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_first = np.prod(first[:, 2:] - first[:, :2], axis=1)
    area_second = np.prod(second[:, 2:] - second[:, :2], axis=1)
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS; indices of kept boxes, best first. Each round keeps the best
    remaining box and drops those overlapping it, so the loop runs once per kept box."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    limit = max_keep if max_keep is not None else len(order)
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        intersection = width * height
        iou = intersection / np.maximum(areas[best] + areas[rest] - intersection, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                    iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """NMS within each class only: boxes are shifted apart by class so that boxes of
    different classes can never overlap (the torchvision `batched_nms` trick)."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    span = float(np.max(boxes)) + 1.0
    shifted = boxes + (classes.astype(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_keep)
