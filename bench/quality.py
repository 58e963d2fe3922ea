"""How well the label-free proxies track real quality.

Streams held-out scenes under every perturbation at five severities. Per condition it
measures the primary model's true precision and recall against the ground truth, and
the proxies the sidecar exports: precision = matched / primary boxes and recall =
matched / reference boxes, matching the primary against the reference model with the
very function the sidecar uses (`shadow_eval.matching.match`). It prints the Spearman
rank correlation between proxy and truth across conditions and the proxies' absolute
error on clean scenes.

Ground truth is the objects of the classes the models were trained on; boxes on the
unseen class are false positives for precision and not counted for recall.

    python bench/quality.py --scenes 100          # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo import outcomes
from lookout.lookout_demo.perturbations import PERTURBATIONS, perturb
from lookout.lookout_demo.scenes import generate_scene

SEVERITIES = (0.2, 0.4, 0.6, 0.8, 1.0)
HELD_OUT_SEED = 2_000_000


@dataclass
class Tally:
    primary: float
    reference: float
    truth: float
    matched_reference: float
    matched_truth: float

    @classmethod
    def of(cls, rows: np.ndarray) -> Tally:
        """Per-image outcomes (lookout_demo.outcomes) summed over a condition."""
        totals = rows.sum(axis=0)
        return cls(totals[outcomes.PRIMARY], totals[outcomes.REFERENCE],
                   totals[outcomes.TRUTH], totals[outcomes.MATCHED],
                   totals[outcomes.TRUE_POSITIVES])

    @property
    def precision(self) -> float:
        return self.matched_truth / self.primary if self.primary else 1.0

    @property
    def recall(self) -> float:
        return self.matched_truth / self.truth if self.truth else 1.0

    @property
    def precision_proxy(self) -> float:
        return self.matched_reference / self.primary if self.primary else 1.0

    @property
    def recall_proxy(self) -> float:
        return self.matched_reference / self.reference if self.reference else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="scenes per condition")
    args = parser.parse_args()
    primary, reference = outcomes.detectors()
    scenes = [generate_scene(HELD_OUT_SEED + i) for i in range(args.scenes)]
    conditions = [("clean", 0.0)] + [(k, s) for k in PERTURBATIONS for s in SEVERITIES]
    started = time.monotonic()
    results: dict[tuple[str, float], Tally] = {}
    print("| condition | severity | precision | proxy | recall | proxy |")
    print("|---|---|---|---|---|---|")
    for kind, severity in conditions:
        batch = [scene if kind == "clean" else perturb(scene, kind, severity, seed=11)
                 for scene in scenes]
        tally = Tally.of(outcomes.image_outcomes(batch, primary, reference))
        results[(kind, severity)] = tally
        print(f"| {kind} | {severity:.1f} | {tally.precision:.3f} | "
              f"{tally.precision_proxy:.3f} | {tally.recall:.3f} | {tally.recall_proxy:.3f} |",
              flush=True)
    tallies = list(results.values())
    rho_p = stats.spearmanr([t.precision_proxy for t in tallies],
                            [t.precision for t in tallies]).statistic
    rho_r = stats.spearmanr([t.recall_proxy for t in tallies],
                            [t.recall for t in tallies]).statistic
    clean = results[("clean", 0.0)]
    print()
    print(f"conditions: {len(tallies)} ({args.scenes} scenes each), "
          f"{time.monotonic() - started:.0f} s")
    print(f"Spearman(proxy, truth): precision {rho_p:.3f}, recall {rho_r:.3f} "
          f"(target >= 0.9)")
    print(f"clean-scene absolute error: precision "
          f"{abs(clean.precision_proxy - clean.precision):.3f}, recall "
          f"{abs(clean.recall_proxy - clean.recall):.3f} (target <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
