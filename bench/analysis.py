"""Analysis throughput: observations analysed per second, per worker and through the
real worker processes, beside the floor of decoding the same bodies alone.

Three kinds of traffic, each a body pair the sidecar sees in production:
  jpeg    640x480 JPEG uploads answered with Ultralytics-style JSON detections
  binary  KServe V2 binary-extension responses carrying a raw 84x8400 FP32 head
  json    the same head as V2 JSON (about 14 MB a response)

For each it measures, in one run:
  floor      Pillow draft decode of the image and json.loads / numpy of the response:
             the bodies' own decoding cost, nothing of lookout's
  per worker the lead worker's chain in this process (what one worker does per
             observation: find the image, decode detections, record metrics, and with
             --drift true the drift features of every image, as by default)
  workers=N  observations offered to N real worker processes through the shared-memory
             channel (a producer that waits for room instead of dropping), timed until
             all are analysed: the rate the sidecar sustains

    python bench/analysis.py                    # 1 and 2 workers, every kind
    python bench/analysis.py --kinds json --count 64
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from multidict import CIMultiDict
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.chain import AnalysisChain
from lookout.sidecar.composition import model_settings, worker_settings
from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline import kserve
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.processes.analysis_pool import AnalysisPool, ChannelSettings
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import of
from lookout.slo import catalog
from tests.support import tap_wire
from tests.support.raw_head_upstream import head

INFER = "/v2/models/yolo11n/infer"
# the clock of the floor and per-worker rates; --cpu: this process's CPU time, steady
# on a machine shared with other work, where wall time measures the neighbours too
clock = time.perf_counter


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(generate_scene(seed).image).resize((640, 480)).save(buffer, "JPEG")
    return buffer.getvalue()


def ultralytics_json(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return json.dumps([{"name": f"class{c}", "class": int(c),
                        "confidence": round(float(rng.uniform(0.3, 0.95)), 5),
                        "box": {"x1": float(x), "y1": float(y), "x2": float(x + 40),
                                "y2": float(y + 60)}}
                       for c, x, y in zip(rng.integers(0, 80, 8), rng.uniform(0, 600, 8),
                                          rng.uniform(0, 420, 8), strict=True)]).encode()


def v2_json_head(seed: int) -> bytes:
    tensor = head(seed % 4)
    return json.dumps({"model_name": "yolo11n", "outputs": [{
        "name": "output0", "datatype": "FP32", "shape": list(tensor.shape),
        "data": tensor.reshape(-1).tolist()}]}).encode()


def v2_binary_head(seed: int) -> tuple[bytes, dict[str, str]]:
    body, length = kserve.encode_infer_body("outputs", [("output0", head(seed % 4))],
                                            binary=True)
    return body, kserve.response_headers(length)


def observation(request: bytes, request_headers: dict[str, str], response: bytes,
                response_headers: dict[str, str], path: str) -> Observation:
    return Observation(
        started_at=time.time(), method="POST", path=path, route=path, status=200,
        code="200", request_headers=CIMultiDict(request_headers), request_body=request,
        response_headers=CIMultiDict(response_headers), response_body=response,
        response_truncated=False, duration=0.01, upstream_duration=0.009, trace_id=None,
        span_id=None, trace_sampled=False, model="m", version="v")


def traffic(kind: str, count: int) -> list[Observation]:
    images = [jpeg(seed) for seed in range(4)]
    made = []
    for i in range(count):
        image = images[i % len(images)]
        if kind == "jpeg":
            made.append(observation(image, {"Content-Type": "image/jpeg"},
                                    ultralytics_json(i % 4),
                                    {"Content-Type": "application/json"}, "/predict"))
        elif kind == "binary":
            body, headers = v2_binary_head(i)
            made.append(observation(image, {"Content-Type": "image/jpeg"}, body, headers,
                                    INFER))
        else:
            made.append(observation(image, {"Content-Type": "image/jpeg"}, v2_json_head(i),
                                    {"Content-Type": "application/json"}, INFER))
    return made


def floor(observations: list[Observation]) -> float:
    """Per second: the image decoded in draft mode, the response parsed (to numpy when
    it is a tensor), and nothing else."""
    started = clock()
    for o in observations:
        with Image.open(io.BytesIO(o.request_body)) as image:
            image.draft("RGB", (image.width // 8, image.height // 8))
            image.load()
        if "Inference-Header-Content-Length" in o.response_headers:
            length = int(o.response_headers["Inference-Header-Content-Length"])
            json.loads(o.response_body[:length])
            np.frombuffer(o.response_body[length:], np.float32)
        else:
            document = json.loads(o.response_body)
            if isinstance(document, dict):
                np.asarray(document["outputs"][0]["data"], np.float32)
    return len(observations) / (clock() - started)


def config(**values: str):
    return load_config({"upstream": "http://127.0.0.1:9", "model_name": "m",
                        "model_version": "v", "class_names": ",".join(
                            f"class{i}" for i in range(80)), **values}, env={})


def per_worker(observations: list[Observation], drift: str) -> float:
    """The lead worker's chain in this process: analysis, and drift when it is on."""
    chain = AnalysisChain.build(model_settings(config(drift=drift)),
                                SidecarMetrics("m", "v", process_metrics=False))
    chain.start()
    started = clock()
    chain.analyse_batch(observations)
    rate = len(observations) / (clock() - started)
    chain.drain_and_close(5)
    return rate


def through_workers(observations: list[Observation], workers: int, drift: str) -> float:
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    options = config(analysis_workers=str(workers), drift=drift,
                     observation_queue_bytes=f"{40 * workers}MiB")
    pool = AnalysisPool(of(ChannelSettings, options), worker_settings(options), metrics,
                        workers)
    pool.start()
    try:
        warm = observations[:workers * 2]
        _offer_all(pool, warm)
        _wait_analysed(metrics, len(warm))
        started = time.perf_counter()
        _offer_all(pool, observations)
        _wait_analysed(metrics, len(warm) + len(observations))
        return len(observations) / (time.perf_counter() - started)
    finally:
        pool.stop(30)


def _tap_record(o: Observation) -> bytes:
    """The exchange as the tap writes it into a ring (`tap/PROTOCOL.md`)."""
    def pairs(headers) -> list[tuple[bytes, bytes]]:
        return [(name.encode(), value.encode()) for name, value in headers.items()]

    return tap_wire.record(
        request_headers=[(b":method", o.method.encode()), (b":path", o.path.encode()),
                         *pairs(o.request_headers)],
        request_body=o.request_body, response_headers=[(b":status", str(o.status).encode()),
                                                       *pairs(o.response_headers)],
        response_body=o.response_body, status=o.status)


def _offer_all(pool: AnalysisPool, observations: list[Observation]) -> None:
    """Into the rings round robin, as Envoy's worker thread does; a benchmark producer
    waits for room where the tap would drop."""
    records = [_tap_record(o) for o in observations]
    rings = pool.inboxes
    for index, record in enumerate(records):
        while not rings[index % len(rings)].put([record]):
            time.sleep(0.0005)


def _wait_analysed(metrics: SidecarMetrics, count: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = sum(sample.value for family in metrics.collect()
                   if family.name == catalog.OBSERVATIONS.name for sample in family.samples
                   if sample.name == catalog.OBSERVATIONS.sample_name)
        if done >= count:
            return
        time.sleep(0.005)
    raise TimeoutError(f"{count} observations not analysed in time")


def head_decode_ms(repeats: int = 5) -> float:
    """Best time to decode the primary's detections from one 14 MB V2 JSON head."""
    from lookout.shadow_eval.decode import DecodeSettings
    from lookout.sidecar.pipeline.outputs import OutputSettings, extract_detections

    body = v2_json_head(0)
    settings = OutputSettings(decode=DecodeSettings(0.25, 0.45, 300), num_classes=80)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        extract_detections({"Content-Type": "application/json"}, body, None, settings)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="jpeg,binary,json")
    parser.add_argument("--count", type=int, default=0, help="observations per kind "
                        "(default: 400 jpeg, 160 binary, 48 json)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--drift", default="false", choices=("true", "false"),
                        help="drift features on every image too (the sidecar's default)")
    parser.add_argument("--cpu", action="store_true", help="floor and per-worker rates "
                        "per CPU second of this process (w=N stay wall time)")
    parser.add_argument("--head", action="store_true",
                        help="only time decoding one 14 MB V2 JSON head")
    args = parser.parse_args()
    # spawned workers get this path, and run this file again (not as __main__): not
    # bench/ itself, where bench/grpc.py would stand in for the grpc package
    sys.path[:] = [p for p in sys.path if p != str(Path(__file__).resolve().parent)]
    global clock
    if args.cpu:
        clock = time.process_time
    if args.head:
        print(f"V2 JSON head {len(v2_json_head(0)) / 1e6:.1f} MB: detections decoded in "
              f"{head_decode_ms():.0f} ms")
        return
    counts = {"jpeg": 400, "binary": 160, "json": 48}
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    print(f"{'kind':8}{'floor/s':>10}{'worker/s':>10}"
          + "".join(f"{'w=' + n:>10}" for n in args.workers.split(","))
          + f"{'worker/floor':>14}")
    for kind in args.kinds.split(","):
        observations = traffic(kind, args.count or counts[kind])
        floor_rate = floor(observations)
        worker_rate = per_worker(observations, args.drift)
        pooled = [through_workers(observations, int(n), args.drift)
                  for n in args.workers.split(",")]
        print(f"{kind:8}{floor_rate:10.1f}{worker_rate:10.1f}"
              + "".join(f"{rate:10.1f}" for rate in pooled)
              + f"{worker_rate / floor_rate:14.2f}", flush=True)


if __name__ == "__main__":
    main()
