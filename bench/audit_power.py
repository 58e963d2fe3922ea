"""How many images an audit needs: the coverage of its 95% intervals and their width,
against the truth of the whole window of traffic it was drawn from.

The shipped primary and reference models run once over held-out scenes with exact
ground truth (`lookout_demo.outcomes.image_outcomes`). A window of traffic is that pool
drawn with replacement; the `random` stratum takes each exchange with a probability
that is lower on busy frames (as pacing is under a burst: see
`sidecar/samples/inclusion.py`), so an unweighted audit would be biased. Each repeat
redraws the stratum, draws an audit batch uniformly from it, and estimates precision
and recall with `audit_estimates.estimate` (weights 1/p, intervals over images).

    python bench/audit_power.py                  # about 20 seconds on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo import outcomes
from lookout.sidecar.samples.audit_estimates import (
    MATCHED,
    PREDICTED,
    PRIMARY,
    QUANTITIES,
    REFERENCE,
    TP,
    TRUTH,
    estimate,
)

WINDOW = 20_000  # exchanges in the window
BUSY, CALM = 0.02, 0.08  # the stratum's inclusion probability on busy and other frames


def pool_counts(scenes: int = 160, first_seed: int = 6_300_000) -> np.ndarray:
    """Per-image counts [images, 1 (every class), 6] of the shipped models."""
    primary, reference = outcomes.detectors()
    rows = outcomes.image_outcomes(outcomes.scenes(first_seed, scenes), primary, reference)
    counts = np.zeros((len(rows), 1, len(QUANTITIES)))
    for target, source in ((TP, outcomes.TRUE_POSITIVES), (PREDICTED, outcomes.PRIMARY),
                           (TRUTH, outcomes.TRUTH), (MATCHED, outcomes.MATCHED),
                           (PRIMARY, outcomes.PRIMARY), (REFERENCE, outcomes.REFERENCE)):
        counts[:, 0, target] = rows[:, source]
    return counts


def repeat_audits(pool: np.ndarray, batches: int, size: int, seed: int = 0
                  ) -> dict[str, float]:
    """Coverage of the window's truth and mean interval width, over `batches` audits."""
    rng = np.random.default_rng(seed)
    window = rng.integers(0, len(pool), WINDOW)
    counts = pool[window]
    busy = counts[:, 0, TRUTH] > np.median(pool[:, 0, TRUTH])
    probability = np.where(busy, BUSY, CALM)
    totals = counts[:, 0].sum(axis=0)
    truth = {"precision": totals[TP] / totals[PREDICTED], "recall": totals[TP] / totals[TRUTH]}
    covered = {rate: 0 for rate in truth}
    widths: dict[str, list[float]] = {rate: [] for rate in truth}
    naive_error = 0.0
    for _ in range(batches):
        stratum = np.flatnonzero(rng.random(WINDOW) < probability)
        chosen = rng.choice(stratum, size, replace=False)
        result = estimate(["all"], counts[chosen], 1.0 / probability[chosen])["all"]
        for rate, value in truth.items():
            low, high = result[rate]["interval"]
            covered[rate] += low <= value <= high
            widths[rate].append(high - low)
        unweighted = counts[chosen, 0].sum(axis=0)
        naive_error += unweighted[TP] / unweighted[PREDICTED] - truth["precision"]
    return {**{f"{rate}_truth": value for rate, value in truth.items()},
            **{f"{rate}_coverage": covered[rate] / batches for rate in truth},
            **{f"{rate}_width": float(np.mean(widths[rate])) for rate in truth},
            "unweighted_precision_bias": naive_error / batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=160)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--sizes", default="50,100,200,400")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    pool = pool_counts(args.scenes)
    figures = {}
    print("images  precision: coverage, mean 95% width   recall: coverage, mean width")
    for size in (int(s) for s in args.sizes.split(",")):
        found = figures[size] = repeat_audits(pool, args.batches, size)
        print(f"{size:6d}  {found['precision_coverage']:.3f}  {found['precision_width']:.3f}"
              f"            {found['recall_coverage']:.3f}  {found['recall_width']:.3f}")
    print(f"truth: precision {found['precision_truth']:.3f}, recall "
          f"{found['recall_truth']:.3f}; unweighted precision bias "
          f"{found['unweighted_precision_bias']:+.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
