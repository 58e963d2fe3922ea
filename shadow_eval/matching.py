"""Agreement between two sets of detections of the same image.

With the reference model's detections as pseudo ground truth, matched/primary is a
precision proxy and matched/reference a recall proxy. Matching follows the COCO
evaluation: primary boxes in descending confidence each take the unmatched reference
box of the same class with the highest IoU, if that IoU reaches the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookout.shadow_eval.boxes import Detections, box_iou


@dataclass(frozen=True, slots=True)
class Agreement:
    """Per-class counts and per-match quality for one image."""

    primary_per_class: dict[int, int]
    reference_per_class: dict[int, int]
    matched_per_class: dict[int, int]
    match_ious: np.ndarray  # IoU of each match
    confidence_gaps: np.ndarray  # primary minus reference confidence, per match

    @property
    def matched(self) -> int:
        return sum(self.matched_per_class.values())

    @property
    def primary(self) -> int:
        return sum(self.primary_per_class.values())

    @property
    def reference(self) -> int:
        return sum(self.reference_per_class.values())


def _per_class(classes: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(classes, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist(), strict=True))


def _pairs(primary: Detections, reference: Detections, iou_threshold: float
           ) -> tuple[list[int], list[int], list[float]]:
    """Greedy COCO matching: indices of matched primary and reference boxes, and IoUs."""
    primary_ids, reference_ids, ious_kept = [], [], []
    if len(primary) and len(reference):
        ious = box_iou(primary.boxes, reference.boxes)
        ious[primary.classes[:, None] != reference.classes[None, :]] = 0.0
        taken = np.zeros(len(reference), bool)
        for p in np.argsort(-primary.scores, kind="stable"):
            candidates = np.where(taken, -1.0, ious[p])
            r = int(candidates.argmax())
            if candidates[r] >= iou_threshold:
                taken[r] = True
                primary_ids.append(int(p))
                reference_ids.append(r)
                ious_kept.append(float(candidates[r]))
    return primary_ids, reference_ids, ious_kept


def match(primary: Detections, reference: Detections, iou_threshold: float = 0.5) -> Agreement:
    """Class-aware greedy matching of `primary` against `reference`."""
    primary_ids, reference_ids, ious_kept = _pairs(primary, reference, iou_threshold)
    gaps = (primary.scores[primary_ids] - reference.scores[reference_ids]).tolist() \
        if primary_ids else []
    matched_classes = primary.classes[primary_ids] if primary_ids else np.zeros(0, np.int64)
    return Agreement(
        _per_class(primary.classes), _per_class(reference.classes), _per_class(matched_classes),
        np.asarray(ious_kept, np.float32), np.asarray(gaps, np.float32),
    )


def matched_mask(detections: Detections, other: Detections,
                 iou_threshold: float = 0.5) -> np.ndarray:
    """Which boxes of `detections` `other` has a same-class box for (matched as above)."""
    found, _, _ = _pairs(detections, other, iou_threshold)
    mask = np.zeros(len(detections), bool)
    mask[found] = True
    return mask


def flip_horizontally(detections: Detections, image_width: float) -> Detections:
    """Boxes of a horizontally flipped image mapped back onto the original (and the
    other way round: the map is its own inverse)."""
    boxes = detections.boxes.copy()
    boxes[:, [0, 2]] = image_width - detections.boxes[:, [2, 0]]
    return Detections(boxes, detections.scores, detections.classes, detections.names)
