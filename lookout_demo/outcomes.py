"""Per-image shadow outcomes of the shipped models on synthetic scenes — the raw
material of the canary judge's power figures and of its seeded repeat tests.

For each image: the primary boxes matched by the reference, the primary and reference
box counts (the sidecar's precision/recall proxy counters), and the primary boxes
matched by the ground truth with the ground-truth count (true precision and recall).
Drawing images from these pools and summing them per interval gives the per-interval
series the judge sees in Prometheus, without the hours of traffic that would take.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.perturbations import perturb
from lookout.lookout_demo.scenes import Scene, generate_scene
from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.decode import DecodeSettings
from lookout.shadow_eval.matching import match
from lookout.shadow_eval.runner import OnnxDetector
from lookout.slo.judge import Series

MATCHED, PRIMARY, REFERENCE, TRUE_POSITIVES, TRUTH = range(5)
IOU = 0.5


def detectors() -> tuple[OnnxDetector, OnnxDetector]:
    settings = DecodeSettings(conf_threshold=0.25)
    return tuple(OnnxDetector.load(model_path(role), providers=("cpu",), settings=settings)
                 for role in ("primary", "reference"))  # type: ignore[return-value]


def scenes(first_seed: int, count: int, perturbation: str = "", severity: float = 0.0
           ) -> list[Scene]:
    made = [generate_scene(first_seed + i) for i in range(count)]
    if perturbation:
        made = [perturb(scene, perturbation, severity, seed=11) for scene in made]
    return made


def image_outcomes(images: Sequence[Scene], primary: OnnxDetector,
                   reference: OnnxDetector) -> np.ndarray:
    """One row per image: matched, primary, reference, true positives, truth."""
    rows = []
    for start in range(0, len(images), 16):
        chunk = images[start:start + 16]
        pixels = [scene.image for scene in chunk]
        for scene, found, pseudo in zip(chunk, primary.detect_batch(pixels),
                                        reference.detect_batch(pixels), strict=True):
            known = scene.classes >= 0
            truth = Detections.from_arrays(scene.boxes[known], np.ones(int(known.sum())),
                                           scene.classes[known])
            rows.append((match(found, pseudo, IOU).matched, len(found), len(pseudo),
                         match(found, truth, IOU).matched, len(truth)))
    return np.asarray(rows, dtype=float)


def true_precision(outcomes: np.ndarray) -> float:
    return float(outcomes[:, TRUE_POSITIVES].sum() / outcomes[:, PRIMARY].sum())


def interval_series(pool: np.ndarray, requests: int, intervals: int,
                    rng: np.random.Generator, numerator: int = MATCHED,
                    denominator: int = PRIMARY) -> Series:
    """`requests` images drawn from `pool` at random, spread evenly over `intervals`:
    each interval's proxy is its summed numerator over its summed denominator, as
    `increase()` over the interval gives it."""
    drawn = pool[rng.integers(0, len(pool), size=requests)]
    slot = np.arange(requests) % intervals
    num = np.bincount(slot, weights=drawn[:, numerator], minlength=intervals)
    den = np.bincount(slot, weights=drawn[:, denominator], minlength=intervals)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(den > 0, num / den, np.nan)
    return Series(values.tolist(), den.tolist())
