"""Drift detection power and false-alarm run length, with the sidecar's own detector.

A pool of held-out scenes is generated once, and for each scene the per-image feature
row is computed (input features and the primary model's output features, exactly as
the sidecar's drift monitor computes them) for three variants: clean, 30% darker
(pixel values x 0.7) and defocus-blurred (Gaussian, radius 2 px).

- Power: per seed, a baseline is learnt from 1,000 clean images, a random number of
  clean images follows (so the change lands anywhere in a window), then the drifted
  variant of unseen images until the detector raises an alarm. The delay is the
  number of drifted images it took; p50/p95 are over seeds.
- False alarms: per seed, a baseline from 1,000 clean images, then a stationary
  stream drawn with replacement from the other clean images of the pool (features
  only: no model runs per streamed image). The run length between false alarms is
  streamed images / alarms raised.

    python bench/drift.py --pool 4000 --seeds 50 --stationary 300000   # ~6 min, 2 cores
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.perturbations import perturb
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.drift import DriftModel
from lookout.shadow_eval.features import feature_row
from lookout.shadow_eval.limits import FEATURES
from lookout.shadow_eval.runner import OnnxDetector

POOL_SEED = 3_000_000
BASELINE = 1000
WINDOW = 100
FALSE_ALARM_IMAGES = 100_000
VARIANTS = ("clean", "dark", "blur")
_detector: OnnxDetector | None = None


def _variant(image: np.ndarray, variant: str, seed: int) -> np.ndarray:
    if variant == "dark":
        return (image.astype(np.float32) * 0.7).round().astype(np.uint8)
    if variant == "blur":
        scene = generate_scene(seed)
        return perturb(scene, "defocus_blur", 0.5).image
    return image


def _rows(seed: int) -> dict[str, dict]:
    global _detector
    if _detector is None:
        _detector = OnnxDetector.load(model_path("primary"), providers=("cpu",),
                                      intra_op_threads=1)
    scene = generate_scene(seed)
    images = {v: _variant(scene.image, v, seed) for v in VARIANTS}
    found = _detector.detect_batch(list(images.values()))
    chooser = random.Random(seed)
    height, width = scene.image.shape[:2]
    rows = {}
    for (variant, image), detections in zip(images.items(), found, strict=True):
        rows[variant] = feature_row(image, width, height, detections, _detector.names, chooser,
                                    256)
    return rows


def _model(rows: list[dict], seed: int) -> DriftModel:
    return DriftModel.from_rows(rows, FEATURES, window=WINDOW,
                                false_alarm_images=FALSE_ALARM_IMAGES, seed=seed)


def power(pool: list[dict[str, dict]], variant: str, seeds: int) -> tuple[list[int], int]:
    delays, early = [], 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        model = _model([pool[i]["clean"] for i in order[:BASELINE]], seed)
        rest = iter(order[BASELINE:])
        for _ in range(int(rng.integers(0, WINDOW))):
            if any(r.raised for r in model.update(pool[next(rest)]["clean"])):
                early += 1
        for delay, index in enumerate(rest, start=1):
            if any(r.raised for r in model.update(pool[index][variant])):
                delays.append(delay)
                break
        else:
            delays.append(10**9)  # never detected within the pool
    return delays, early


def false_alarms(pool: list[dict[str, dict]], seeds: int, images: int) -> tuple[int, int, dict]:
    raised, streamed, by_feature = 0, 0, {}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        order = rng.permutation(len(pool))
        model = _model([pool[i]["clean"] for i in order[:BASELINE]], seed)
        stream = order[BASELINE:]
        for index in rng.choice(stream, size=images // seeds):
            for result in model.update(pool[index]["clean"]):
                if result.raised:
                    raised += 1
                    by_feature[result.feature] = by_feature.get(result.feature, 0) + 1
        streamed += images // seeds
    return raised, streamed, by_feature


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=4000, help="distinct scenes")
    parser.add_argument("--seeds", type=int, default=50, help="power runs per drift")
    parser.add_argument("--stationary", type=int, default=300_000,
                        help="images in the false-alarm run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.monotonic()
    with ProcessPoolExecutor(args.workers) as workers:
        pool = list(workers.map(_rows, range(POOL_SEED, POOL_SEED + args.pool), chunksize=50))
    print(f"pool: {len(pool)} scenes x {len(VARIANTS)} variants, "
          f"{time.monotonic() - started:.0f} s")
    print(f"detector: window {WINDOW}, baseline {BASELINE}, calibrated for one false alarm "
          f"per {FALSE_ALARM_IMAGES:,} images")
    for variant, target in (("dark", 300), ("blur", 500)):
        delays, early = power(pool, variant, args.seeds)
        p50, p95 = np.percentile(delays, [50, 95])
        print(f"{variant}: images to alarm p50 {p50:.0f}, p95 {p95:.0f}, max {max(delays)} "
              f"over {args.seeds} seeds (target p95 <= {target}); false alarms before the "
              f"change: {early}")
    raised, streamed, by_feature = false_alarms(pool, 5, args.stationary)
    run_length = streamed / raised if raised else float("inf")
    print(f"stationary: {streamed:,} images, {raised} false alarms "
          f"({', '.join(f'{k} {v}' for k, v in sorted(by_feature.items())) or 'none'}); "
          f"run length between false alarms {run_length:,.0f} images (target >= 50,000)")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
