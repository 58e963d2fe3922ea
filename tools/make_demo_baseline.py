"""Regenerate the demo's drift baseline (lookout_demo/drift_baseline.json) from clean
demo scenes with the real `lookout shadow baseline` command, so the shipped file is
exactly what a user would make for their own camera.

    python tools/make_demo_baseline.py [--count N] [--out FILE]

The scenes are a pure function of their seeds and the command reads them in name order,
so the rows are the same on every run (up to onnxruntime's last float bits across CPUs);
the file's `created` time and `source` are fixed so that the bytes are too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from lookout.lookout_demo.baseline import (
    BASELINE_IMAGES,
    BASELINE_SOURCE,
    DRIFT_BASELINE,
    write_clean_frames,
)
from lookout.lookout_demo.models import PRIMARY
from lookout.shadow_eval.baseline import Baseline
from lookout.sidecar.config import Config


def make(out: Path, count: int = BASELINE_IMAGES) -> Baseline:
    """Write `count` clean scenes, run `lookout shadow baseline` on them, and pin the
    file's metadata; returns the baseline written to `out`."""
    with tempfile.TemporaryDirectory(prefix="lookout-demo-baseline-") as folder:
        write_clean_frames(Path(folder), count)
        subprocess.run([sys.executable, "-m", "lookout", "shadow", "baseline",
                        "--images", folder, "--model", str(PRIMARY),
                        "--image-size", str(Config().drift_image_size),
                        "--limit", str(count), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    baseline = Baseline(Baseline.load(out).rows, BASELINE_SOURCE, created=0.0)
    baseline.save(out)
    return baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=BASELINE_IMAGES,
                        help=f"clean scenes (default {BASELINE_IMAGES})")
    parser.add_argument("--out", type=Path, default=DRIFT_BASELINE)
    args = parser.parse_args()
    baseline = make(args.out, args.count)
    print(f"wrote {args.out}: {len(baseline.rows)} clean scenes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
