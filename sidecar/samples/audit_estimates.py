"""Audited precision and recall from labelled images, with 95% intervals over images,
and the label-free proxies over the same images, so the proxies' bias is measured.

Each image i of the random stratum was stored with probability p_i (inclusion.py) and
is weighted by w_i = 1/p_i. Per class, precision is the ratio estimator
sum(w TP) / sum(w predicted) and recall sum(w TP) / sum(w truth): consistent for the
whole window's traffic, whatever the pacing did. Boxes of one image are not
independent (one bad frame loses all its boxes), so the variance is taken over images:
a delete-one-image jackknife of the ratio (each replicate drops one whole image with its
weight), carried to the logit scale by the delta method, and the 95% interval is built
there with Student's t on the Kish effective number of images, which keeps it inside
[0, 1] and asymmetric near 1. Measured on the demo models (bench/audit_power.py,
docs/QUALITY.md): coverage 0.94-0.95 from 100 images, where a percentile bootstrap
over images gave 0.92-0.93 and the linearized (Taylor) variance 0.92-0.94; the
jackknife is a little wider where a few images hold many boxes, which is the case it
must get right. At exactly 0 or 1 the logit has no slope, so Wilson's interval on the
effective box count is used.

The proxies (primary boxes matched by the stored reference boxes, over primary or
reference boxes) are weighted alike, so audited - proxy is the proxy's bias for the
same traffic; its interval comes from the paired jackknife replicates.

Matching is the sidecar's own (`shadow_eval.matching`): IoU 0.5, same class, greedy
by confidence, in thumbnail pixels (IoU does not change under the uniform scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.matching import match
from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.audit_records import ALL_CLASSES
from lookout.sidecar.samples.export import thumbnail_boxes
from lookout.sidecar.samples.store import Sample

IOU = 0.5
LEVEL = 0.95
# per image and class: audited counts, then the proxy's counts
TP, PREDICTED, TRUTH, MATCHED, PRIMARY, REFERENCE = range(6)
QUANTITIES = ("true_positives", "predicted", "truth", "matched", "primary", "reference")


def predictions(sample: Sample, source: str = "primary") -> tuple[LabelledBox, ...]:
    """A sample's stored boxes in thumbnail pixels, named by class name (the reference's
    boxes are stored with the names the shadow stage filled in, so both models' boxes
    and an annotator's meet by name)."""
    return tuple(LabelledBox(label, x1, y1, x2, y2, score)
                 for label, (x1, y1, x2, y2), score in thumbnail_boxes(sample, source))


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
    return [*classes, ALL_CLASSES], matrix


def _ratio(totals: np.ndarray, numerator: int, denominator: int) -> float:
    return float(totals[numerator] / totals[denominator]) if totals[denominator] > 0 \
        else float("nan")


def _t(weights: np.ndarray) -> float:
    """Student's t for 95% on the Kish effective number of images, minus one."""
    effective = weights.sum() ** 2 / (weights ** 2).sum()
    return float(stats.t.ppf(0.5 + LEVEL / 2, max(effective - 1.0, 1.0)))


def _leave_one_out(counts: np.ndarray, weights: np.ndarray, numerator: int,
                   denominator: int, ratio: float) -> np.ndarray:
    """The ratio without each image in turn (the jackknife's replicates); where an
    image holds the whole denominator, the ratio itself."""
    top = weights @ counts[:, numerator] - weights * counts[:, numerator]
    bottom = weights @ counts[:, denominator] - weights * counts[:, denominator]
    return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), ratio)


def _spread(replicates: np.ndarray) -> float:
    """The jackknife's standard error from its leave-one-image-out replicates."""
    images = len(replicates)
    return float(np.sqrt((images - 1) / images
                         * ((replicates - replicates.mean()) ** 2).sum()))


def _interval(counts: np.ndarray, weights: np.ndarray, numerator: int, denominator: int,
              ratio: float) -> list[float] | None:
    """95% interval of a ratio in [0, 1]: the jackknife's standard error carried to the
    logit scale; at 0 or 1, where the logit has no slope, Wilson's on the effective box
    count."""
    if np.isnan(ratio) or len(weights) < 2:
        return None
    t = _t(weights)
    if 0.0 < ratio < 1.0:
        spread = _spread(_leave_one_out(counts, weights, numerator, denominator, ratio))
        centre, half = np.log(ratio / (1 - ratio)), t * spread / (ratio * (1 - ratio))
        return [float(1 / (1 + np.exp(-(centre + side * half)))) for side in (-1, 1)]
    boxes = weights * counts[:, denominator]
    effective = boxes.sum() ** 2 / (boxes ** 2).sum()
    z2 = t * t
    middle = (ratio + z2 / (2 * effective)) / (1 + z2 / effective)
    half = t * np.sqrt(ratio * (1 - ratio) / effective + z2 / (4 * effective ** 2)) \
        / (1 + z2 / effective)
    return [float(max(0.0, middle - half)), float(min(1.0, middle + half))]


def _bias_interval(counts: np.ndarray, weights: np.ndarray, audited: tuple[int, int, float],
                   proxy: tuple[int, int, float]) -> list[float] | None:
    """95% interval of audited - proxy, paired over the same images (jackknife)."""
    if np.isnan(audited[2]) or np.isnan(proxy[2]) or len(weights) < 2:
        return None
    spread = _spread(_leave_one_out(counts, weights, *audited)
                     - _leave_one_out(counts, weights, *proxy))
    difference, half = audited[2] - proxy[2], _t(weights) * spread
    return [difference - half, difference + half]


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


RATES = {"precision": ((TP, PREDICTED), (MATCHED, PRIMARY)),
         "recall": ((TP, TRUTH), (MATCHED, REFERENCE))}


def estimate(classes: Sequence[str], counts: np.ndarray, weights: np.ndarray
             ) -> dict[str, dict[str, Any]]:
    """Per class (and `all`): audited precision and recall with 95% intervals, the
    proxies over the same images, the bias (audited - proxy) with its interval."""
    if len(weights) == 0:
        return {}
    weights = np.asarray(weights, np.float64)
    effective = float(weights.sum() ** 2 / (weights ** 2).sum())
    result: dict[str, dict[str, Any]] = {}
    for column, name in enumerate(classes):
        own = counts[:, column]
        totals = weights @ own
        row: dict[str, Any] = {
            "images": int((own[:, [PREDICTED, TRUTH]].sum(axis=1) > 0).sum()),
            "effective_images": effective,
            "boxes": {q: int(v) for q, v in zip(QUANTITIES, own.sum(axis=0), strict=True)}}
        for rate, ((numerator, denominator), (proxy_numerator, proxy_denominator)) in \
                RATES.items():
            audited = _ratio(totals, numerator, denominator)
            proxy = _ratio(totals, proxy_numerator, proxy_denominator)
            row[rate] = {
                "audited": _value(audited),
                "interval": _interval(own, weights, numerator, denominator, audited),
                "proxy": _value(proxy), "bias": _value(audited - proxy),
                "bias_interval": _bias_interval(
                    own, weights, (numerator, denominator, audited),
                    (proxy_numerator, proxy_denominator, proxy))}
        result[name] = row
    return result
