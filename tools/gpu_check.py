"""On a machine with an NVIDIA GPU: lookout's NVML collector against the real driver
while the shipped reference model runs on onnxruntime's CUDA provider, its values
checked against `nvidia-smi --query-gpu` taken at the same moment; then the reference
model's images per second on CUDA and on the CPU. Run through tools/gpu_check.sh.

Tolerances: total memory within 1 MiB (both read NVML); used memory within 5% or
256 MiB and utilisation within 20 points (both move under the load between the two
reads); the pod's process memory above zero (this process holds the CUDA session) and
no more than the GPU's used memory. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.runtime.gpu import GpuCollector
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import GpuSettings
from lookout.slo import catalog

MIB = 1024**2
SMI_FIELDS = ("index", "uuid", "memory.used", "memory.total", "utilization.gpu")


def nvidia_smi() -> list[dict[str, str]]:
    output = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=30).stdout
    return [dict(zip(SMI_FIELDS, (v.strip() for v in line.split(",")), strict=True))
            for line in output.strip().splitlines()]


def images_per_second(detector: OnnxDetector, batch: int, seconds: float) -> float:
    frames = [generate_scene(seed).image for seed in range(batch)]
    tensors = np.stack([detector.prepare(frame)[0] for frame in frames])
    detector.run(tensors)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        detector.run(tensors)
        done += batch
    return done / (time.perf_counter() - started)


class Load:
    """The reference model inferring on the GPU until stopped, as a sidecar would."""

    def __init__(self, detector: OnnxDetector, batch: int) -> None:
        self._tensors = np.stack([detector.prepare(generate_scene(s).image)[0]
                                  for s in range(batch)])
        self._detector = detector
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._detector.run(self._tensors)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def compare(metrics: SidecarMetrics, collector: GpuCollector) -> tuple[list[dict], list[str]]:
    """Each visible whole GPU's exported values beside nvidia-smi's, and what is off."""
    value = lambda spec, **labels: metrics.registry.get_sample_value(  # noqa: E731
        spec.sample_name, labels)
    smi = {row["uuid"]: row for row in nvidia_smi()}
    rows, failures = [], []
    if value(catalog.GPU_UP) != 1:
        failures.append(f"{catalog.GPU_UP.name} is {value(catalog.GPU_UP)}")
    for device in collector.devices:
        if device.parent_uuid:  # nvidia-smi's query-gpu rows are whole GPUs
            continue
        theirs = smi.get(device.uuid)
        if theirs is None:
            failures.append(f"GPU {device.label} ({device.uuid}) is not in nvidia-smi")
            continue
        ours = {key: value(spec, gpu=device.label) for key, spec in (
            ("used", catalog.GPU_MEMORY_USED), ("total", catalog.GPU_MEMORY_TOTAL),
            ("utilization", catalog.GPU_UTILIZATION), ("process", catalog.GPU_PROCESS_MEMORY))}
        used, total = float(theirs["memory.used"]) * MIB, float(theirs["memory.total"]) * MIB
        utilization = float(theirs["utilization.gpu"]) / 100
        rows.append({"gpu": device.label, "uuid": device.uuid, "lookout": ours,
                     "nvidia_smi": {"used": used, "total": total, "utilization": utilization}})
        if ours["total"] is None or abs(ours["total"] - total) > MIB:
            failures.append(f"GPU {device.label}: total {ours['total']} vs {total}")
        if ours["used"] is None or abs(ours["used"] - used) > max(0.05 * used, 256 * MIB):
            failures.append(f"GPU {device.label}: used {ours['used']} vs {used}")
        if ours["utilization"] is None or abs(ours["utilization"] - utilization) > 0.2:
            failures.append(f"GPU {device.label}: utilisation {ours['utilization']} vs "
                            f"{utilization}")
        if not ours["process"] or ours["process"] > max(ours["used"] or 0, used) + 256 * MIB:
            failures.append(f"GPU {device.label}: process memory {ours['process']} with "
                            f"{used} used")
    if not rows:
        failures.append("no whole GPU to compare")
    return rows, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput figure")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import onnxruntime

    report: dict[str, object] = {"onnxruntime": onnxruntime.__version__,
                                 "providers": onnxruntime.get_available_providers()}
    failures: list[str] = []
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if not cuda:
        failures.append("this onnxruntime build has no CUDA provider (install onnxruntime-gpu)")
    reference = OnnxDetector.load(model_path("reference"), providers=("cuda", "cpu"))
    report["reference_provider"] = reference.provider
    if cuda and reference.provider != "CUDAExecutionProvider":
        failures.append(f"the reference model fell back to {reference.provider}")

    metrics = SidecarMetrics("gpu-check", "1", process_metrics=False)
    collector = GpuCollector(GpuSettings(True, 0.5, 5.0), metrics)
    with Load(reference, args.batch):
        collector.start()
        collector.devices_seen.wait(30)
        deadline = time.monotonic() + 30
        while collector.rounds < 4 and time.monotonic() < deadline:
            time.sleep(0.25)  # the collector's own interval; this is a script, not a test
        rows, compared = compare(metrics, collector)
    collector.close()
    failures += compared
    report["gpus"] = rows
    report["collector_rounds"] = collector.rounds

    cpu = OnnxDetector.load(model_path("reference"), providers=("cpu",),
                            intra_op_threads=os.cpu_count() or 0)
    rates = {"cpu": images_per_second(cpu, min(args.batch, 8), args.seconds)}
    if cuda:
        rates["cuda"] = images_per_second(reference, args.batch, args.seconds)
        rates["cuda_over_cpu"] = rates["cuda"] / rates["cpu"]
    report["reference_images_per_s"] = rates
    report["failures"] = failures
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print("FAILED:\n  " + "\n  ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
