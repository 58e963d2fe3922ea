"""`lookout shadow baseline` and `lookout shadow report`: drift baselines and reports
made offline, from image folders or from the features a sidecar stored."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from lookout.sidecar.runtime import times

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def parse_time(text: str, now: float | None = None) -> float:
    try:
        return times.parse_time(text, now)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_commands(commands: argparse._SubParsersAction) -> None:
    shadow = commands.add_parser("shadow", help="drift baselines and reports")
    shadow.set_defaults(run=run)
    actions = shadow.add_subparsers(dest="shadow_command", required=True)

    baseline = actions.add_parser("baseline", help="write a drift baseline profile")
    source = baseline.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of images (searched recursively)")
    source.add_argument("--features", type=Path,
                        help="feature store folder of a sidecar (feature_store_dir)")
    baseline.add_argument("--model", type=Path, help="primary ONNX model: adds the output "
                          "features (detections, confidence, box size, class)")
    baseline.add_argument("--since", type=parse_time, default=0.0,
                          help="with --features: first time to use (ISO or e.g. 2h)")
    baseline.add_argument("--until", type=parse_time, default=float("inf"),
                          help="with --features: end time")
    baseline.add_argument("--limit", type=int, default=5000, help="most rows (default 5000)")
    baseline.add_argument("--image-size", type=int, default=256,
                          help="longest side features are measured at (as drift_image_size)")
    baseline.add_argument("--out", type=Path, required=True, help="baseline file to write")

    report = actions.add_parser("report", help="Evidently drift report, HTML and JSON")
    report.add_argument("--baseline", type=Path, required=True)
    report.add_argument("--features", type=Path, required=True,
                        help="feature store folder of a sidecar")
    report.add_argument("--since", type=parse_time, default=0.0,
                        help="window start (ISO or e.g. 2h; default: all)")
    report.add_argument("--until", type=parse_time, default=float("inf"), help="window end")
    report.add_argument("--out", type=Path, required=True,
                        help="output prefix: writes PREFIX.html and PREFIX.json")


def _rows_from_images(folder: Path, model_path: Path | None, limit: int,
                      image_size: int) -> list[dict]:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from lookout.shadow_eval.features import feature_row
    from lookout.shadow_eval.runner import OnnxDetector

    detector = OnnxDetector.load(model_path) if model_path else None
    chooser = random.Random(0)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rows, unreadable = [], 0
    for path in paths[:limit]:
        try:
            with Image.open(path) as opened:
                width, height = opened.size
                rgb = np.asarray(opened.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError):
            unreadable += 1
            continue
        detections = detector.detect_batch([rgb])[0] if detector is not None else None
        rows.append(feature_row(rgb, width, height, detections,
                                detector.names if detector else (), chooser, image_size))
    if unreadable:
        print(f"skipped {unreadable} unreadable image(s)", file=sys.stderr)
    return rows


def run(args: argparse.Namespace) -> int:
    from lookout.shadow_eval.baseline import Baseline, BaselineError
    from lookout.shadow_eval.drift import DriftConfigError
    from lookout.sidecar.quality.feature_store import read_rows

    try:
        if args.shadow_command == "baseline":
            if args.images:
                rows = _rows_from_images(args.images, args.model, args.limit, args.image_size)
                source = f"images in {args.images}"
            else:
                rows = list(read_rows(args.features, args.since, args.until))[:args.limit]
                source = f"feature store {args.features}"
            if not rows:
                print("lookout: no usable rows: nothing to learn a baseline from",
                      file=sys.stderr)
                return 1
            Baseline.from_rows(rows, source).save(args.out)
            print(f"wrote {args.out}: {len(rows)} images from {source}")
            return 0
        from lookout.shadow_eval.report import write_drift_report

        baseline = Baseline.load(args.baseline)
        window = list(read_rows(args.features, args.since, args.until))
        files = write_drift_report(baseline.rows, window, args.out,
                                   f"{baseline.source} vs {args.features}")
        print(f"wrote {files.html} and {files.json}: {len(window)} images compared with "
              f"{len(baseline.rows)} baseline images; drifted (p < 0.05): "
              f"{', '.join(files.drifted) or 'none'}")
        return 0
    except (BaselineError, DriftConfigError, OSError) as error:
        print(f"lookout: {error}", file=sys.stderr)
        return 1
