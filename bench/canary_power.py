"""How much traffic the canary judge needs: its power against a canary whose true
precision is 10 points lower, and its false-rejection rate on identical versions.

The canary is the shipped primary model on darkened scenes, with the darkening chosen
so that its true precision (against the ground truth) is 10 points under the clean
baseline's. Both versions' per-image shadow outcomes come from the real models; each
repeat draws N shadow-evaluated requests per version, spreads them over the judge's
30 intervals (a 30-minute window at 1 minute), and judges the precision proxy with the
default settings (95% confidence, ±0.02 band, effect-size floor 0.3, at least 200
boxes and 10 intervals per version).

    python bench/canary_power.py                 # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo import outcomes
from lookout.slo.canary import PRECISION
from lookout.slo.judge import JudgeSettings, MetricOutcome, judge_metric

GRID = (30, 60, 90, 120, 150, 180, 240, 300, 360, 480, 600, 900, 1200)
INTERVALS = 30
TARGET_DROP = 0.10


def calibrate(primary, reference, scenes: int, clean: float) -> float:
    """The darkening severity whose true precision is TARGET_DROP under `clean`."""
    severities = np.array([0.05, 0.10, 0.15, 0.20, 0.25])
    drops = []
    for severity in severities:
        pool = outcomes.image_outcomes(outcomes.scenes(4_500_000, scenes, "dark", severity),
                                       primary, reference)
        drops.append(clean - outcomes.true_precision(pool))
        print(f"  dark {severity:.2f}: true precision {clean - drops[-1]:.3f} "
              f"(drop {drops[-1]:.3f})", flush=True)
    return float(np.interp(TARGET_DROP, np.maximum.accumulate(drops), severities))


def rejection_rate(baseline: np.ndarray, canary: np.ndarray, requests: int, repeats: int,
                   rng: np.random.Generator) -> tuple[float, float]:
    """(share judged worse, share with enough data to judge)."""
    settings = JudgeSettings()
    results = [judge_metric(PRECISION,
                            outcomes.interval_series(baseline, requests, INTERVALS, rng),
                            outcomes.interval_series(canary, requests, INTERVALS, rng),
                            settings).outcome for _ in range(repeats)]
    return (results.count(MetricOutcome.WORSE) / repeats,
            1 - results.count(MetricOutcome.NODATA) / repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=600, help="images per pool")
    parser.add_argument("--repeats", type=int, default=500, help="repeats per traffic level")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    started = time.monotonic()
    primary, reference = outcomes.detectors()
    clean = outcomes.image_outcomes(outcomes.scenes(4_000_000, args.scenes), primary,
                                    reference)
    clean_precision = outcomes.true_precision(clean)
    print(f"clean: true precision {clean_precision:.3f}, proxy "
          f"{clean[:, outcomes.MATCHED].sum() / clean[:, outcomes.PRIMARY].sum():.3f}")
    severity = calibrate(primary, reference, 200, clean_precision)
    worse = outcomes.image_outcomes(outcomes.scenes(4_200_000, args.scenes, "dark", severity),
                                    primary, reference)
    worse_precision = outcomes.true_precision(worse)
    print(f"canary: dark {severity:.3f}, true precision {worse_precision:.3f} "
          f"(drop {clean_precision - worse_precision:.3f}), proxy "
          f"{worse[:, outcomes.MATCHED].sum() / worse[:, outcomes.PRIMARY].sum():.3f}")
    rng = np.random.default_rng(20261122)
    rows = []
    print("\n| requests per version | power | false rejections | judged (enough data) |")
    print("|---|---|---|---|")
    for requests in GRID:
        power, judged = rejection_rate(clean, worse, requests, args.repeats, rng)
        false_rejections, _ = rejection_rate(clean, clean, requests, args.repeats, rng)
        rows.append({"requests": requests, "power": power,
                     "false_rejections": false_rejections, "judged": judged})
        print(f"| {requests} | {power:.3f} | {false_rejections:.3f} | {judged:.3f} |",
              flush=True)
    enough = next((r["requests"] for r in rows if r["power"] >= 0.95), None)
    worst_false = max(r["false_rejections"] for r in rows)
    print(f"\nrequests per version for 95% power: {enough}; "
          f"highest false-rejection rate: {worst_false:.3f} "
          f"({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "clean_true_precision": clean_precision, "canary_true_precision": worse_precision,
            "dark_severity": severity, "scenes_per_pool": args.scenes,
            "repeats": args.repeats, "intervals": INTERVALS, "rows": rows,
            "requests_for_95_percent_power": enough,
            "highest_false_rejection_rate": worst_false}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
