"""How well the label-free proxies track real quality, and when they should not be
believed.

Streams held-out scenes under every condition: the ten perturbations the models were
first measured on and the field conditions of `lookout_demo.field_conditions` (weather,
optics, sensor and pipeline faults), each at five severities, and the negative controls
once. Per condition it measures the primary model's true precision and recall against
the ground truth, and the proxies, matching with the very function the sidecar uses
(`shadow_eval.matching.match`):

- precision proxy = matched / primary boxes;
- recall proxy = matched / reference boxes (the sidecar's current definition);
- robust recall proxy = matched / the reference boxes it is sure of: confidence at least
  `--floor` and, where the reference also ran on the mirrored frame, found again there
  (a box that does not survive its own flip is not evidence).

The trust signal is the sidecar's (`shadow_eval.trust`), per window of `--window`
images from the reference's own outputs — boxes per image and its flip consistency —
against windows of clean calibration scenes (other seeds): a window whose boxes per
image leave the clean windows' range, or whose flip consistency falls below it, by more
than `--margin` of that range, is low trust. It prints Spearman
rank correlation and mean absolute error of each proxy over all conditions, and over the
conditions where trust is high, and which conditions are off by more than 0.2.

    python bench/quality.py --scenes 100 --json out.json   # about 7 minutes, 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo import outcomes
from lookout.lookout_demo.field_conditions import FIELD_CONDITIONS, NEGATIVE_CONTROLS
from lookout.lookout_demo.perturbations import PERTURBATIONS, perturb
from lookout.lookout_demo.scenes import Scene, generate_scene
from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.matching import match
from lookout.shadow_eval.runner import OnnxDetector
from lookout.shadow_eval.trust import TrustBand, WindowTally, confirmed

SEVERITIES = (0.2, 0.4, 0.6, 0.8, 1.0)
HELD_OUT_SEED = 2_000_000
CALIBRATION_SEED = 3_000_000
IOU = outcomes.IOU
# per-image columns
(MATCHED, PRIMARY, REFERENCE, TRUE_POSITIVES, TRUTH, SURE, MATCHED_SURE,
 FLIP_AGREED, FLIPPED, SCORE_SUM) = range(10)


def condition_scenes(kind: str, severity: float, scenes: list[Scene]) -> list[Scene]:
    if kind == "clean":
        return scenes
    if kind in PERTURBATIONS:
        return [perturb(scene, kind, severity, seed=11) for scene in scenes]
    degrade = FIELD_CONDITIONS.get(kind) or NEGATIVE_CONTROLS[kind]
    return [degrade(scene, severity, np.random.default_rng([scene.seed, 11]))
            for scene in scenes]


def image_rows(images: list[Scene], primary: OnnxDetector, reference: OnnxDetector,
               floor: float) -> np.ndarray:
    rows = []
    for start in range(0, len(images), 16):
        chunk = images[start:start + 16]
        pixels = [scene.image for scene in chunk]
        mirrored = [np.ascontiguousarray(p[:, ::-1]) for p in pixels]
        for scene, found, pseudo, again in zip(chunk, primary.detect_batch(pixels),
                                               reference.detect_batch(pixels),
                                               reference.detect_batch(mirrored), strict=True):
            known = scene.classes >= 0
            truth = Detections.from_arrays(scene.boxes[known], np.ones(int(known.sum())),
                                           scene.classes[known])
            sure, survived = confirmed(pseudo, again, scene.image.shape[1], floor, IOU)
            rows.append((match(found, pseudo, IOU).matched, len(found), len(pseudo),
                         match(found, truth, IOU).matched, len(truth), len(sure),
                         match(found, sure, IOU).matched, survived, len(again),
                         float(pseudo.scores.sum())))
    return np.asarray(rows, dtype=float)


def window_statistics(rows: np.ndarray, window: int) -> np.ndarray:
    """Per window of images, the sidecar's trust statistics (shadow_eval.trust): the
    reference's boxes per image, their mean confidence, its flip consistency."""
    windows = []
    for start in range(0, len(rows) - window + 1, window):
        tally = WindowTally()
        for row in rows[start:start + window]:
            tally.add(int(row[REFERENCE]), row[SCORE_SUM],
                      (int(row[REFERENCE]), int(row[FLIPPED]), int(row[FLIP_AGREED])))
        windows.append(tally.statistics())
    return np.asarray(windows)


def trusted_windows(band: TrustBand, windows: np.ndarray) -> np.ndarray:
    return np.array([not band.reasons(statistics) for statistics in windows])


@dataclass
class Result:
    condition: str
    severity: float
    precision: float
    precision_proxy: float
    recall: float
    recall_proxy: float
    robust_recall_proxy: float
    trusted_windows: float

    @classmethod
    def of(cls, kind: str, severity: float, rows: np.ndarray, trusted: np.ndarray) -> Result:
        t = rows.sum(axis=0)
        ratio = lambda num, den: float(num / den) if den else 1.0  # noqa: E731
        return cls(kind, severity, ratio(t[TRUE_POSITIVES], t[PRIMARY]),
                   ratio(t[MATCHED], t[PRIMARY]), ratio(t[TRUE_POSITIVES], t[TRUTH]),
                   ratio(t[MATCHED], t[REFERENCE]), ratio(t[MATCHED_SURE], t[SURE]),
                   float(trusted.mean()) if len(trusted) else 1.0)

    @property
    def trust_high(self) -> bool:
        return self.trusted_windows >= 0.5


def summary(results: list[Result], truth: str, proxy: str) -> dict[str, float]:
    proxies = np.array([getattr(r, proxy) for r in results])
    truths = np.array([getattr(r, truth) for r in results])
    return {"spearman": float(stats.spearmanr(proxies, truths).statistic),
            "mae": float(np.abs(proxies - truths).mean()), "conditions": len(results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="scenes per condition")
    parser.add_argument("--window", type=int, default=20, help="images per trust window")
    parser.add_argument("--floor", type=float, default=0.35,
                        help="reference confidence the robust recall proxy counts from")
    parser.add_argument("--margin", type=float, default=0.25)
    parser.add_argument("--calibration", type=int, default=400, help="clean scenes")
    parser.add_argument("--json", type=Path, help="write every figure here too")
    args = parser.parse_args()
    primary, reference = outcomes.detectors()
    started = time.monotonic()
    calibration = [generate_scene(CALIBRATION_SEED + i) for i in range(args.calibration)]
    band = TrustBand.learn(window_statistics(
        image_rows(calibration, primary, reference, args.floor), args.window), args.margin)
    scenes = [generate_scene(HELD_OUT_SEED + i) for i in range(args.scenes)]
    conditions = [("clean", 0.0)] + [(k, s) for k in (*PERTURBATIONS, *FIELD_CONDITIONS)
                                     for s in SEVERITIES]
    controls = [(k, 0.0) for k in NEGATIVE_CONTROLS]
    results: list[Result] = []
    print("| condition | severity | precision | proxy | recall | proxy | robust | trusted |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, severity in conditions + controls:
        rows = image_rows(condition_scenes(kind, severity, scenes), primary, reference,
                          args.floor)
        result = Result.of(kind, severity, rows,
                           trusted_windows(band, window_statistics(rows, args.window)))
        results.append(result)
        print(f"| {kind} | {severity:.1f} | {result.precision:.3f} | "
              f"{result.precision_proxy:.3f} | {result.recall:.3f} | "
              f"{result.recall_proxy:.3f} | {result.robust_recall_proxy:.3f} | "
              f"{result.trusted_windows:.2f} |", flush=True)
    measured = [r for r in results if r.condition not in NEGATIVE_CONTROLS]
    trusted = [r for r in measured if r.trust_high]
    report: dict[str, object] = {"settings": vars(args) | {"json": None},
                                 "conditions": [asdict(r) for r in results]}
    print(f"\n{len(measured)} conditions ({args.scenes} scenes each), trust high in "
          f"{len(trusted)}; {time.monotonic() - started:.0f} s")
    for label, truth, proxy in (("precision", "precision", "precision_proxy"),
                                ("recall", "recall", "recall_proxy"),
                                ("robust recall", "recall", "robust_recall_proxy")):
        every, gated = summary(measured, truth, proxy), summary(trusted, truth, proxy)
        off = [r for r in measured if abs(getattr(r, proxy) - getattr(r, truth)) > 0.2]
        caught = [r for r in off if r.trusted_windows <= 0.2]
        report[proxy] = {"all": every, "trust_high": gated,
                         "off_by_over_0.2": [(r.condition, r.severity) for r in off],
                         "off_and_trust_low_in_80pct": len(caught)}
        print(f"{label:>14}: all Spearman {every['spearman']:.3f} MAE {every['mae']:.3f}; "
              f"trust high Spearman {gated['spearman']:.3f} MAE {gated['mae']:.3f}; "
              f"off by > 0.2 in {len(off)}, of which trust low in >= 80% of windows: "
              f"{len(caught)}")
    clean = results[0]
    for r in results:
        if r.condition in NEGATIVE_CONTROLS:
            precision = r.precision_proxy - clean.precision_proxy
            recall = r.robust_recall_proxy - clean.robust_recall_proxy
            print(f"control {r.condition}: precision proxy {precision:+.3f}, robust recall "
                  f"proxy {recall:+.3f}, trusted {r.trusted_windows:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
