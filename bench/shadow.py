"""Shadow pipeline throughput against raw onnxruntime, same run, same model, same batch.

- peer: `session.run` on batches that were decoded and letterboxed beforehand (the
  model's own cost, nothing else);
- lookout: the sidecar's ShadowEvaluator worker fed JPEG frames as clients send them
  through its real queue and threads: decode -> letterbox -> infer -> decode -> match
  -> record metrics. Decoding and letterboxing run in a second thread that overlaps
  the previous batch's inference, as in production.

Both use the same onnxruntime intra-op thread count. Prints images/s and the ratio.

With `--remote` (the default) the same pipeline also runs against the same model served
remotely, as a shared reference pool serves it: KServe's own ModelServer
(tests/support/kserve_models.py --reference, the same intra-op threads) over V2 REST with
binary tensors and over V2 gRPC. It prints images/s against the local runner, and the
latency of one reference call at batch 1 and at `--batch` (the sidecar's letterboxed
tensor out, the raw head back). Here the server shares this machine's cores with the
client, so the remote figures are the transport's cost with no GPU to gain from it.

    python bench/shadow.py --frames 512 --batch 8              # CPU
    python bench/shadow.py --frames 2048 --batch 32 --providers cuda --no-remote  # GPU host
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# the repository instead of bench/ itself, whose grpc.py would hide the grpc package
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.budget import ComputeBudget
from lookout.shadow_eval.decode import DecodeSettings
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.inputs import open_encoded
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.quality.remote_reference import RemoteDetector
from lookout.sidecar.quality.shadow import ShadowEvaluator, ShadowSample
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import ShadowSettings, of
from tests.support.shadow_stack import ReferenceServer


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


def call_latency(detector, tensors: np.ndarray, calls: int) -> float:
    """Median milliseconds of one `run` on `tensors` (after one warm-up call)."""
    detector.run(tensors)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        detector.run(tensors)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def remote_config(base: dict[str, str], url: str):
    return load_config({**{k: v for k, v in base.items() if k != "shadow_model_path"},
                        "shadow_reference_url": url,
                        "shadow_reference_model": ReferenceServer.name,
                        "shadow_reference_timeout": "30"}, env={})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--providers", default="cpu", help="e.g. cuda,cpu or tensorrt,cuda,cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--remote", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the reference served by KServe (REST, gRPC)")
    parser.add_argument("--calls", type=int, default=20, help="calls per latency figure")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    providers = tuple(args.providers.split(","))
    options = {
        "shadow_model_path": str(model_path("reference")), "shadow_providers": args.providers,
        "shadow_batch_size": str(args.batch), "shadow_threads": str(args.threads),
        "shadow_queue_size": str(4 * args.batch), "model_name": "m", "model_version": "v",
    }
    config = load_config(options, env={})
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
    figures: dict[str, object] = {"provider": reference.provider, "batch": args.batch,
                                  "threads": args.threads, "frames": args.frames,
                                  "raw_images_per_s": raw, "pipeline_images_per_s": ours}
    if args.remote:
        figures["remote"] = remote_figures(args, options, reference, analyses, ours)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def remote_figures(args, options: dict[str, str], reference: OnnxDetector,
                   analyses: list[Analysis], local_rate: float) -> dict[str, object]:
    """Pipeline throughput and call latency through each V2 transport, beside the local
    runner's, with the server and the client on this machine."""
    one = np.stack([reference.prepare(np.asarray(Image.open(io.BytesIO(
        analyses[0].image.encoded)).convert("RGB")))[0]])
    full = np.repeat(one, args.batch, axis=0)
    local = {"images_per_s": local_rate,
             "latency_ms_batch_1": call_latency(reference, one, args.calls),
             f"latency_ms_batch_{args.batch}": call_latency(reference, full, args.calls)}
    print(f"\nlocal runner: {local_rate:.0f} images/s, one call "
          f"{local['latency_ms_batch_1']:.1f} ms at batch 1, "
          f"{local[f'latency_ms_batch_{args.batch}']:.1f} ms at batch {args.batch}")
    figures: dict[str, object] = {"local": local}
    server = ReferenceServer(args.threads)
    server.start()
    try:
        for transport, url in server.urls.items():
            config = remote_config(options, url)
            remote = RemoteDetector.connect(of(ShadowSettings, config), (), DecodeSettings())
            try:
                latency_one = call_latency(remote, one, args.calls)
                latency_full = call_latency(remote, full, args.calls)
            finally:
                remote.close()
            runs = [pipeline_rate(config, analyses) for _ in range(args.rounds)]
            assert all(done == args.frames for _, done in runs), runs
            rate = max(r for r, _ in runs)
            figures[transport] = {"images_per_s": rate, "ratio_to_local": rate / local_rate,
                                  "latency_ms_batch_1": latency_one,
                                  f"latency_ms_batch_{args.batch}": latency_full}
            print(f"remote {transport}: {rate:.0f} images/s ({rate / local_rate:.2f} of "
                  f"local), one call {latency_one:.1f} ms at batch 1 "
                  f"({latency_one / local['latency_ms_batch_1']:.2f}x local), "
                  f"{latency_full:.1f} ms at batch {args.batch} "
                  f"({latency_full / local[f'latency_ms_batch_{args.batch}']:.2f}x local)")
    finally:
        server.stop()
    return figures


if __name__ == "__main__":
    sys.exit(main())
