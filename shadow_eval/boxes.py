"""Detections as arrays, IoU and class-aware non-maximum suppression in numpy."""

from __future__ import annotations

from collections.abc import Sequence
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

    def labels(self, names: Sequence[str]) -> list[str]:
        """Each box's class name: the producer's own, else `names` by class id, else the
        id itself."""
        if self.names:
            return list(self.names)
        return [names[c] if 0 <= c < len(names) else str(c) for c in self.classes.tolist()]

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


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                    iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS within each class; indices of kept boxes, best first.

    Exactly the greedy result, computed for all classes at once: candidates are grouped
    by class (best first within a group); each round keeps every group's best remaining
    box and drops the members of its group that overlap it. Rounds = the most boxes
    kept in any one class (a handful), not the number of boxes kept overall, so the
    per-call cost of numpy is paid a few times per image rather than once per box.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    ordered_classes = classes[order]
    by_class = np.argsort(ordered_classes, kind="stable")
    remaining, groups = order[by_class], ordered_classes[by_class]
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    kept: list[np.ndarray] = []
    while remaining.size:
        positions = np.arange(remaining.size)
        is_leader = np.empty(remaining.size, bool)
        is_leader[0] = True
        np.not_equal(groups[1:], groups[:-1], out=is_leader[1:])
        kept.append(remaining[is_leader])
        # each box's group leader: the last leader position at or before it
        leader = remaining[np.maximum.accumulate(np.where(is_leader, positions, 0))]
        width = np.minimum(x2[leader], x2[remaining]) - np.maximum(x1[leader], x1[remaining])
        height = np.minimum(y2[leader], y2[remaining]) - np.maximum(y1[leader], y1[remaining])
        intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
        union = areas[leader] + areas[remaining] - intersection
        # iou <= t  <=>  intersection <= t * union, without a division
        survives = ~is_leader & (intersection <= iou_threshold * union)
        remaining, groups = remaining[survives], groups[survives]
    result = np.concatenate(kept)
    result = result[np.argsort(-scores[result], kind="stable")]
    return result[:max_keep] if max_keep is not None else result


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS over all boxes regardless of class; indices kept, best first."""
    return class_aware_nms(boxes, scores, np.zeros(boxes.shape[0], np.int64), iou_threshold,
                           max_keep)
