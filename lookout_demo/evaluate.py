"""mAP@0.5 of a detector on labelled scenes: the yardstick for the shipped models and,
later, for how well label-free quality proxies track real quality."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from lookout.shadow_eval.boxes import Detections, box_iou


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (all-point interpolation, as VOC2010+/COCO)."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([1.0], precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(
    predictions: Sequence[Detections], truths: Iterable[tuple[np.ndarray, np.ndarray]],
    num_classes: int, iou_threshold: float = 0.5,
) -> tuple[float, list[float]]:
    """(mAP, AP per class) over images; each truth is (xyxy boxes, class ids). Truth
    boxes with class ids outside [0, num_classes) are ignored (an unseen class)."""
    scores: list[list[float]] = [[] for _ in range(num_classes)]
    hits: list[list[bool]] = [[] for _ in range(num_classes)]
    totals = np.zeros(num_classes, np.int64)
    for detections, (boxes, classes) in zip(predictions, truths, strict=True):
        for cls in range(num_classes):
            truth = boxes[classes == cls]
            totals[cls] += len(truth)
            mine = detections.classes == cls
            order = np.argsort(-detections.scores[mine])
            found = detections.boxes[mine][order]
            found_scores = detections.scores[mine][order]
            taken = np.zeros(len(truth), bool)
            iou = box_iou(found, truth) if len(found) and len(truth) else None
            for index in range(len(found)):
                hit = False
                if iou is not None:
                    candidates = np.where(taken, -1.0, iou[index])
                    best = int(np.argmax(candidates))
                    if candidates[best] >= iou_threshold:
                        taken[best] = hit = True
                scores[cls].append(float(found_scores[index]))
                hits[cls].append(hit)
    per_class = []
    for cls in range(num_classes):
        if totals[cls] == 0:
            continue
        order = np.argsort(-np.asarray(scores[cls]), kind="stable")
        correct = np.asarray(hits[cls], bool)[order]
        true_positives = np.cumsum(correct)
        recall = true_positives / totals[cls]
        precision = true_positives / np.arange(1, len(correct) + 1)
        per_class.append(average_precision(recall, precision) if len(correct) else 0.0)
    return (float(np.mean(per_class)) if per_class else 0.0), per_class
