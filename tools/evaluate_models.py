"""mAP@0.5 of the shipped detectors on held-out scenes, clean and under each
perturbation at medium severity: the table in docs/MODELS.md.

    python tools/evaluate_models.py [--scenes 300] [--models primary,reference]
"""

from __future__ import annotations

import argparse
import sys
import time

from lookout.lookout_demo.evaluate import mean_average_precision
from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.perturbations import MEDIUM, PERTURBATIONS, perturb
from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.shadow_eval.decode import DecodeSettings, decode_yolov8
from lookout.shadow_eval.runner import OnnxDetector

HELD_OUT_SEED = 1_000_000  # far from every training seed
EVALUATION = DecodeSettings(conf_threshold=0.01, iou_threshold=0.6, max_detections=100)


def evaluate(detector: OnnxDetector, scenes) -> float:
    predictions, truths = [], []
    for scene in scenes:
        tensor, geometry = detector.prepare(scene.image)
        predictions.append(decode_yolov8(detector.run(tensor[None]), EVALUATION, geometry))
        truths.append((scene.boxes, scene.classes))
    return mean_average_precision(predictions, truths, len(CLASSES))[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--models", default="primary,reference")
    args = parser.parse_args()
    clean = [generate_scene(HELD_OUT_SEED + i) for i in range(args.scenes)]
    conditions = {"clean": clean}
    for kind in PERTURBATIONS:
        conditions[kind] = [perturb(scene, kind, MEDIUM, seed=7) for scene in clean]
    names = args.models.split(",")
    detectors = {name: OnnxDetector.load(model_path(name)) for name in names}
    print(f"| condition ({args.scenes} held-out scenes, severity {MEDIUM}) | "
          + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    started = time.monotonic()
    for condition, scenes in conditions.items():
        scores = [evaluate(detectors[name], scenes) for name in names]
        print(f"| {condition} | " + " | ".join(f"{s:.3f}" for s in scores) + " |", flush=True)
    print(f"\n({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
