"""Fuzz every parser that touches user input, at volume: hypothesis properties from
tests/fuzz/targets.py (structured inputs), then atheris (coverage-guided, raw bytes)
on the byte-level parsers. Each input has a time limit (a hang is a finding), and the
process's peak memory is reported. Results go to docs/RELIABILITY.md.

    pip install -e '.[test,fuzz]'
    python tools/fuzz.py --json bench/results/fuzz.json     # ~15 minutes on 2 cores
    python tools/fuzz.py --examples 500 --atheris-runs 0    # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

INPUT_SECONDS = 10  # longer than this for one input is a hang
ATHERIS_TARGETS = ("kserve_binary", "image_body", "detection_json")


class Hang(Exception):
    pass


def _alarm(*_: object) -> None:
    raise Hang(f"one input ran over {INPUT_SECONDS} s")


def run_hypothesis(examples: int) -> list[dict]:
    from hypothesis import HealthCheck, given, settings

    from tests.fuzz.targets import TARGETS

    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for target in TARGETS:
        count, slowest = [0], [0.0]
        run = settings(max_examples=examples, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))(
            given(target.strategy)(_timed(target.check, count, slowest)))
        started = time.monotonic()
        finding = ""
        try:
            run()
        except Exception as error:  # a finding: report it, go on with the next target
            finding = f"{type(error).__name__}: {error}"[:2000]
        results.append({"target": target.name, "what": target.what, "engine": "hypothesis",
                        "inputs": count[0], "seconds": round(time.monotonic() - started, 1),
                        "slowest_input_s": round(slowest[0], 3), "finding": finding,
                        "peak_rss_mb": _peak_rss_mb()})
        print(json.dumps(results[-1]), flush=True)
    return results


def _timed(check, count: list[int], slowest: list[float]):
    """`check` with the input counted, timed, and stopped by SIGALRM if it hangs."""
    def run(case) -> None:
        count[0] += 1
        started = time.perf_counter()
        signal.alarm(INPUT_SECONDS)
        try:
            check(case)
        finally:
            signal.alarm(0)
            slowest[0] = max(slowest[0], time.perf_counter() - started)
    return run


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def atheris_target(name: str, runs: int) -> int:
    """Run inside its own process: atheris takes the process over and exits it."""
    import atheris

    with atheris.instrument_imports():
        from lookout.sidecar.pipeline import kserve
        from lookout.sidecar.pipeline.images import decode_rgb
        from lookout.sidecar.pipeline.inputs import extract_image
        from lookout.sidecar.pipeline.outputs import OutputSettings, extract_detections
        from lookout.sidecar.pipeline.parse_errors import ParseFailure
    import numpy as np

    from lookout.sidecar.samples.thumbnails import ThumbnailSettings, make_thumbnail

    def kserve_binary(data: bytes) -> None:
        if len(data) < 2:
            return
        headers = {kserve.HEADER_LENGTH: str(int.from_bytes(data[:2], "little")),
                   "Content-Type": "application/octet-stream"}
        try:
            _, tensors = kserve.parse_request(data[2:], headers)
            for tensor in tensors:
                kserve.as_array(tensor)
        except kserve.KServeFormatError:
            pass

    def image_body(data: bytes) -> None:
        try:
            image = extract_image("/predict", {"Content-Type": "image/jpeg"}, data)
        except ParseFailure:
            return
        if image is None:  # no body
            return
        try:
            decode_rgb(image, 64, 64)
            make_thumbnail(image, np.array([[0, 0, image.width, image.height]], float), ["x"],
                           ThumbnailSettings(longest_side=32, pixelate_all=True))
        except (OSError, ValueError):
            pass

    def detection_json(data: bytes) -> None:
        with contextlib.suppress(ParseFailure):
            extract_detections({"Content-Type": "application/json"}, data, None,
                               OutputSettings())

    check = {"kserve_binary": kserve_binary, "image_body": image_body,
             "detection_json": detection_json}[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"lookout-fuzz-{name}-"))
    for index, seed in enumerate(_seeds(name)):
        (corpus / f"seed-{index}").write_bytes(seed)
    argv = [sys.argv[0], f"-runs={runs}", "-max_len=4096", "-rss_limit_mb=2048",
            f"-timeout={INPUT_SECONDS}", str(corpus)]
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


def _seeds(name: str) -> list[bytes]:
    """Valid inputs to start from, made here (no binary files in the repo): coverage
    guidance mutates its way out from them."""
    import base64

    from lookout.sidecar.pipeline.kserve import encode_infer_body
    from tests.fuzz.targets import SEED_IMAGES

    if name == "image_body":
        return list(SEED_IMAGES)
    if name == "detection_json":
        items = [{"box": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}, "name": "car", "class": 2,
                  "confidence": 0.9}, {"xyxy": [1, 2, 3, 4], "confidence": 0.5, "class": 0}]
        return [json.dumps(items).encode(), json.dumps({"predictions": [
            {"x": 5, "y": 5, "width": 4, "height": 4, "confidence": 0.7, "class": "dog"}]}
        ).encode(), json.dumps({"outputs": [{"name": "o", "datatype": "FP32",
                                             "shape": [1, 6], "data": [1, 2, 3, 4, .9, 0]}]
                                }).encode()]
    import numpy as np

    seeds = []
    for image in SEED_IMAGES[:2]:
        body, length = encode_infer_body("inputs", [("images", [image])], binary=True)
        seeds.append(length.to_bytes(2, "little") + body)
    tensor = np.zeros((1, 3, 8, 8), np.float32)
    body, length = encode_infer_body("inputs", [("images", tensor)], binary=True)
    seeds.append(length.to_bytes(2, "little") + body)
    header = json.dumps({"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1],
                                     "data": [base64.b64encode(SEED_IMAGES[0]).decode()]}]})
    seeds.append(len(header).to_bytes(2, "little") + header.encode())
    return seeds


def run_atheris(runs: int) -> list[dict]:
    results = []
    for name in ATHERIS_TARGETS:
        started = time.monotonic()
        process = subprocess.run([sys.executable, __file__, "--atheris-target", name,
                                  "--atheris-runs", str(runs)], capture_output=True, text=True)
        output = process.stdout + process.stderr
        done = re.search(r"Done (\d+) runs in", output)
        peak = re.findall(r"rss: (\d+)Mb", output)
        finding = "" if process.returncode == 0 else output[-2000:]
        results.append({"target": name, "engine": "atheris",
                        "inputs": int(done.group(1)) if done else 0,
                        "seconds": round(time.monotonic() - started, 1),
                        "coverage": _last(r"cov: (\d+)", output),
                        "peak_rss_mb": float(peak[-1]) if peak else None,
                        "finding": finding})
        print(json.dumps(results[-1]), flush=True)
    return results


def _last(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12_000,
                        help="hypothesis inputs per target")
    parser.add_argument("--atheris-runs", type=int, default=30_000,
                        help="atheris inputs per byte-level target (0: skip)")
    parser.add_argument("--atheris-target", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.atheris_target:
        return atheris_target(args.atheris_target, args.atheris_runs)
    results = run_hypothesis(args.examples)
    if args.atheris_runs:
        results += run_atheris(args.atheris_runs)
    total = sum(r["inputs"] for r in results)
    findings = [r for r in results if r["finding"]]
    print(f"\n{total:,} inputs over {len(results)} target runs; "
          f"{len(findings)} with findings")
    if args.json:
        args.json.write_text(json.dumps({"inputs": total, "results": results}, indent=2))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
