"""Audited precision and recall from labelled images, with 95% intervals over images,
and the label-free proxies over the same images, so the proxies' bias is measured.

Each image i of the random stratum was stored with probability p_i (inclusion.py) and
is weighted by w_i = 1/p_i. Per class, precision is the ratio estimator
sum(w TP) / sum(w predicted) and recall sum(w TP) / sum(w truth): consistent for the
whole window's traffic, whatever the pacing did. Boxes of one image are not
independent (one bad frame loses all its boxes), so the intervals come from a
bootstrap over images (percentile, seeded): each resample redraws whole images with
their weights. The proxies (primary boxes matched by the stored reference boxes, over
primary or reference boxes) are weighted alike, so audited - proxy is the proxy's
bias for the same traffic; its interval comes from the same resamples (paired).

Matching is the sidecar's own (`shadow_eval.matching`): IoU 0.5, same class, greedy
by confidence, in thumbnail pixels (IoU does not change under the uniform scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.matching import match
from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.export import thumbnail_boxes
from lookout.sidecar.samples.store import Sample

IOU = 0.5
RESAMPLES = 1000
LEVEL = 0.95
ALL = "all"  # the every-class row
# per image and class: audited counts, then the proxy's counts
TP, PREDICTED, TRUTH, MATCHED, PRIMARY, REFERENCE = range(6)
QUANTITIES = ("true_positives", "predicted", "truth", "matched", "primary", "reference")


def predictions(sample: Sample, source: str = "primary") -> tuple[LabelledBox, ...]:
    """A sample's stored boxes in thumbnail pixels, named by class name (the reference's
    boxes are stored with the names the shadow stage filled in, so both models' boxes
    and an annotator's meet by name)."""
    return tuple(LabelledBox(label, *box, score=score)
                 for label, box, score in thumbnail_boxes(sample, source))


def _detections(boxes: Sequence[LabelledBox], index: dict[str, int]) -> Detections:
    return Detections.from_arrays(
        np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], np.float32).reshape(-1, 4),
        np.array([1.0 if b.score is None else b.score for b in boxes], np.float32),
        np.array([index[b.label] for b in boxes], np.int64))


def image_counts(primary: Sequence[LabelledBox], reference: Sequence[LabelledBox],
                 truth: Sequence[LabelledBox]) -> dict[str, np.ndarray]:
    """Class -> the six counts (TP, predicted, truth, matched, primary, reference)."""
    names = sorted({b.label for b in (*primary, *reference, *truth)})
    index = {name: number for number, name in enumerate(names)}
    found, pseudo, true = (_detections(b, index) for b in (primary, reference, truth))
    audited, proxy = match(found, true, IOU), match(found, pseudo, IOU)
    counts = {}
    for name, number in index.items():
        counts[name] = np.array([
            audited.matched_per_class.get(number, 0), audited.primary_per_class.get(number, 0),
            audited.reference_per_class.get(number, 0), proxy.matched_per_class.get(number, 0),
            proxy.primary_per_class.get(number, 0), proxy.reference_per_class.get(number, 0)],
            np.float64)
    return counts


def count_matrix(per_image: Sequence[Mapping[str, np.ndarray]]
                 ) -> tuple[list[str], np.ndarray]:
    """Classes, and counts [images, classes + 1 (the last: all), 6]."""
    classes = sorted({name for counts in per_image for name in counts})
    matrix = np.zeros((len(per_image), len(classes) + 1, len(QUANTITIES)))
    for row, counts in enumerate(per_image):
        for column, name in enumerate(classes):
            if name in counts:
                matrix[row, column] = counts[name]
    matrix[:, -1] = matrix[:, :-1].sum(axis=1)
    return [*classes, ALL], matrix


def _ratios(totals: np.ndarray) -> dict[str, np.ndarray]:
    """The four rates from weighted totals [..., 6] (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        def ratio(numerator: int, denominator: int) -> np.ndarray:
            d = totals[..., denominator]
            return np.where(d > 0, totals[..., numerator] / np.where(d > 0, d, 1), np.nan)

        return {"precision": ratio(TP, PREDICTED), "recall": ratio(TP, TRUTH),
                "precision_proxy": ratio(MATCHED, PRIMARY),
                "recall_proxy": ratio(MATCHED, REFERENCE)}


def _interval(values: np.ndarray) -> list[float] | None:
    """The percentile interval of bootstrap values, over those defined."""
    kept = values[~np.isnan(values)]
    if len(kept) < 0.9 * len(values):  # undefined too often to mean anything
        return None
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return [float(low), float(high)]


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def estimate(classes: Sequence[str], counts: np.ndarray, weights: np.ndarray, seed: int,
             resamples: int = RESAMPLES) -> dict[str, dict[str, Any]]:
    """Per class (and `all`): audited precision and recall with 95% intervals, the
    proxies over the same images, the bias (audited - proxy) with its interval."""
    images = len(weights)
    if images == 0:
        return {}
    weights = np.asarray(weights, np.float64)
    flat = counts.reshape(images, -1)
    point = _ratios((weights @ flat).reshape(counts.shape[1:]))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, images, (resamples, images))
    times = np.zeros((resamples, images))
    np.add.at(times, (np.arange(resamples)[:, None], drawn), 1.0)
    boot = _ratios(((times * weights) @ flat).reshape(resamples, *counts.shape[1:]))
    effective = float(weights.sum() ** 2 / (weights ** 2).sum())
    result: dict[str, dict[str, Any]] = {}
    for column, name in enumerate(classes):
        unweighted = counts[:, column].sum(axis=0)
        row: dict[str, Any] = {
            "images": int((counts[:, column, [PREDICTED, TRUTH]].sum(axis=1) > 0).sum()),
            "effective_images": effective,
            "boxes": {q: int(v) for q, v in zip(QUANTITIES, unweighted, strict=True)}}
        for rate in ("precision", "recall"):
            audited = point[rate][column]
            proxy = point[f"{rate}_proxy"][column]
            row[rate] = {
                "audited": _value(audited), "interval": _interval(boot[rate][:, column]),
                "proxy": _value(proxy), "bias": _value(audited - proxy),
                "bias_interval": _interval(boot[rate][:, column]
                                           - boot[f"{rate}_proxy"][:, column])}
        result[name] = row
    return result
