"""Shadow pipeline throughput against raw onnxruntime, same run, same model, same batch.

- peer: `session.run` on batches that were decoded and letterboxed beforehand (the
  model's own cost, nothing else);
- lookout: the sidecar's ShadowEvaluator worker fed JPEG frames as clients send them
  through its real queue and threads: decode -> letterbox -> infer -> decode -> match
  -> record metrics. Decoding and letterboxing run in a second thread that overlaps
  the previous batch's inference, as in production.

Both use the same onnxruntime intra-op thread count. Prints images/s and the ratio.

    python bench/shadow.py --frames 512 --batch 8              # CPU
    python bench/shadow.py --frames 2048 --batch 32 --providers cuda   # on a GPU host
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.budget import ComputeBudget
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.inputs import open_encoded
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.quality.shadow import ShadowEvaluator, ShadowSample
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import ShadowSettings, of


def _observation() -> Observation:
    return Observation(0.0, "POST", "/predict", "/predict", 200, "200", {}, b"", {}, b"",
                       False, 0.0, 0.0, None, None, False, "m", "v")


def frames(count: int, primary: OnnxDetector) -> list[Analysis]:
    distinct = []
    for seed in range(min(count, 64)):
        buffer = io.BytesIO()
        Image.fromarray(generate_scene(seed).image).save(buffer, "JPEG", quality=90)
        image = open_encoded(buffer.getvalue(), "raw")
        [detections] = primary.detect_batch([generate_scene(seed).image])
        distinct.append(Analysis(_observation(), image, detections, None))
    return [distinct[i % len(distinct)] for i in range(count)]


def raw_rate(reference: OnnxDetector, analyses: list[Analysis], batch: int) -> float:
    tensors = np.stack([reference.prepare(np.asarray(Image.open(io.BytesIO(a.image.encoded))
                                                     .convert("RGB")))[0]
                        for a in analyses])
    started = time.perf_counter()
    for start in range(0, len(tensors), batch):
        reference.session.run(None, {reference.input_name: tensors[start:start + batch]})
    return len(tensors) / (time.perf_counter() - started)


def pipeline_rate(config, analyses: list[Analysis]) -> tuple[float, int]:
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    unlimited = ComputeBudget(1e9, 1e9, 1.0)
    evaluator = ShadowEvaluator(of(ShadowSettings, config), metrics, (), budget=unlimited,
                                seed=0)
    evaluator.start()
    evaluator.wait_started(120)
    started = time.perf_counter()
    for analysis in analyses:
        # the real queue, blocking rather than dropping: throughput, not sampling
        evaluator._queue.put(ShadowSample(analysis.image, analysis.detections, flip=False))
    evaluator.drain(600)
    elapsed = time.perf_counter() - started
    evaluator.close()
    return evaluator.evaluated / elapsed, evaluator.evaluated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--providers", default="cpu", help="e.g. cuda,cpu or tensorrt,cuda,cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    providers = tuple(args.providers.split(","))
    config = load_config({
        "shadow_model_path": str(model_path("reference")), "shadow_providers": args.providers,
        "shadow_batch_size": str(args.batch), "shadow_threads": str(args.threads),
        "shadow_queue_size": str(4 * args.batch), "model_name": "m", "model_version": "v",
    }, env={})
    reference = OnnxDetector.load(model_path("reference"), providers=providers,
                                  intra_op_threads=args.threads)
    reference.warm_up(args.batch)
    primary = OnnxDetector.load(model_path("primary"), providers=("cpu",))
    analyses = frames(args.frames, primary)
    print(f"reference model on {reference.provider}, batch {args.batch}, "
          f"{args.threads} intra-op thread(s), {args.frames} frames, best of {args.rounds}")
    raw = max(raw_rate(reference, analyses, args.batch) for _ in range(args.rounds))
    runs = [pipeline_rate(config, analyses) for _ in range(args.rounds)]
    ours = max(rate for rate, _ in runs)
    assert all(done == args.frames for _, done in runs), runs
    print(f"raw session.run: {raw:.0f} images/s")
    print(f"lookout shadow pipeline: {ours:.0f} images/s")
    print(f"ratio: {ours / raw:.2f} (target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
