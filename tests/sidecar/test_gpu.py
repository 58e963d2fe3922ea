"""The NVML collector. This machine has no NVIDIA driver, so the real binding is tested
where it is: absent (one log line, `lookout_gpu_up 0`, nothing else changes).
`tools/gpu_check.sh` checks the values against `nvidia-smi` on a GPU machine. The
arithmetic (MIG, visible devices, throttle seconds, ECC deltas, XIDs, the pod's
processes) and the failure handling (a call that raises, a call that hangs) are driven
here through `FakeNvml`, which answers the few NVML calls the collector makes with the
types and error codes nvidia-ml-py gives."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from lookout.sidecar.runtime.gpu import GpuCollector, throttle_reasons, xid_label
from lookout.sidecar.runtime.gpu_devices import GpuDevice, visible_devices
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import GpuSettings
from lookout.slo import catalog
from tests.support.processes import wait_until

GIB = 1024**3


def _settings(**changes) -> GpuSettings:
    return GpuSettings(**{"gpu_metrics": True, "gpu_interval": 0.01,
                          "gpu_call_timeout": 0.5, **changes})


def _value(metrics: SidecarMetrics, spec, **labels) -> float | None:
    return metrics.registry.get_sample_value(spec.sample_name, labels)


def test_without_nvml_the_collector_says_so_once_and_exports_gpu_up_0(caplog) -> None:
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    collector = GpuCollector(_settings(), metrics)  # the real nvidia-ml-py, no driver here
    with caplog.at_level(logging.INFO, "lookout.sidecar.runtime.gpu"):
        collector.start()
        assert collector.devices_seen.wait(10)
        collector.close()
    assert _value(metrics, catalog.GPU_UP) == 0
    assert collector.devices == [] and collector.rounds == 0
    lines = [r.getMessage() for r in caplog.records if "GPU metrics off" in r.getMessage()]
    assert len(lines) == 1 and "NVML" in lines[0], lines
    for reason in ("error", "timeout"):  # a CPU node is not a failure
        assert _value(metrics, catalog.GPU_COLLECTOR_FAILURES, reason=reason) == 0


def test_gpu_metrics_off_starts_no_thread() -> None:
    collector = GpuCollector(_settings(gpu_metrics=False),
                             SidecarMetrics("m", "v", process_metrics=False))
    collector.start()
    assert collector.devices_seen.is_set()
    assert not any(t.name == "lookout-gpu" for t in threading.enumerate())


# -- which GPUs are the pod's ---------------------------------------------------------

DEVICES = [GpuDevice("0", "GPU-aaaa-1111", "H100"), GpuDevice("1", "GPU-bbbb-2222", "H100"),
           GpuDevice("2:0", "MIG-cccc-0", "A100 MIG", parent_uuid="GPU-cccc-3333"),
           GpuDevice("2:1", "MIG-cccc-1", "A100 MIG", parent_uuid="GPU-cccc-3333")]


def _labels(env: dict[str, str]) -> list[str]:
    return [device.label for device in visible_devices(DEVICES, env)]


@pytest.mark.parametrize(("env", "expected"), [
    ({}, ["0", "1", "2:0", "2:1"]),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, ["0", "1", "2:0", "2:1"]),
    ({"NVIDIA_VISIBLE_DEVICES": "none"}, []),
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, []),
    ({"NVIDIA_VISIBLE_DEVICES": "1"}, ["1"]),
    ({"NVIDIA_VISIBLE_DEVICES": "GPU-bbbb-2222,0"}, ["0", "1"]),
    ({"NVIDIA_VISIBLE_DEVICES": "MIG-cccc-1"}, ["2:1"]),
    ({"NVIDIA_VISIBLE_DEVICES": "GPU-cccc"}, ["2:0", "2:1"]),  # a whole MIG GPU: its instances
    ({"NVIDIA_VISIBLE_DEVICES": "2:0"}, ["2:0"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"CUDA_VISIBLE_DEVICES": "1,0"}, ["1", "0"]),
    ({"CUDA_VISIBLE_DEVICES": "0,7,1"}, ["0"]),  # CUDA stops at the first entry naming nothing
    ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}, ["1"]),  # an unambiguous UUID prefix
    ({"NVIDIA_VISIBLE_DEVICES": "1,2", "CUDA_VISIBLE_DEVICES": "1"}, ["2:0", "2:1"]),
])
def test_visible_devices_read_both_variables_as_the_runtime_and_cuda_do(env, expected) -> None:
    assert _labels(env) == expected


def test_throttle_reasons_and_xid_labels_are_bounded() -> None:
    assert throttle_reasons(0x1 | 0x2 | 0x100) == []  # idle, app clocks, display: not throttling
    assert throttle_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal"]
    assert xid_label(79) == "79" and xid_label(9999) == "other"


# -- values and failures, through a stand-in for the driver ----------------------------

@dataclass
class FakeGpu:
    uuid: str
    used: int = 2 * GIB
    total: int = 80 * GIB
    utilization: int = 37
    processes: list = field(default_factory=list)
    throttle: int = 0
    ecc: dict = field(default_factory=lambda: {0: 5, 1: 0})
    mig: list = field(default_factory=list)  # FakeGpu instances
    parent: FakeGpu | None = None


class FakeNvml:
    """The NVML calls the collector makes, answering as nvidia-ml-py does (its error
    class and codes are the real module's)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.events: list[tuple[FakeGpu, int]] = []
        self.hang = threading.Event()  # set: the next memory read blocks until released
        self.release = threading.Event()
        self.fail = False

    def _error(self, code: int) -> pynvml.NVMLError:
        return pynvml.NVMLError(code)

    def nvmlInit(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes:
        return b"NVIDIA A100"  # older bindings answer bytes

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        return [1, 1] if gpu.mig else [0, 0]

    def nvmlDeviceGetMaxMigDeviceCount(self, gpu: FakeGpu) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu: FakeGpu, slot: int) -> FakeGpu:
        if slot >= len(gpu.mig):
            raise self._error(pynvml.NVML_ERROR_NOT_FOUND)
        return gpu.mig[slot]

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        if self.hang.is_set():
            self.release.wait(30)
        if self.fail:
            raise self._error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(used=gpu.used, total=gpu.total, free=gpu.total - gpu.used)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        if gpu.parent is not None:
            raise self._error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=gpu.utilization, memory=10)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list:
        return gpu.processes

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGpu) -> list:
        return []

    def nvmlDeviceGetCurrentClocksEventReasons(self, gpu: FakeGpu) -> int:
        return gpu.throttle

    def nvmlDeviceGetTotalEccErrors(self, gpu: FakeGpu, kind: int, counter: int) -> int:
        return gpu.ecc[kind]

    def nvmlEventSetCreate(self) -> object:
        return object()

    def nvmlDeviceRegisterEvents(self, gpu: FakeGpu, kinds: int, events: object) -> None:
        assert kinds == pynvml.nvmlEventTypeXidCriticalError

    def nvmlEventSetWait_v2(self, events: object, timeout_ms: int) -> SimpleNamespace:
        if not self.events:
            raise self._error(pynvml.NVML_ERROR_TIMEOUT)
        gpu, xid = self.events.pop(0)
        return SimpleNamespace(device=gpu, eventData=xid, eventType=8)


def _process(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


def _running(nvml: FakeNvml, tmp_path: Path, env=None, **settings) -> tuple:
    metrics = SidecarMetrics("m", "v", process_metrics=False)
    collector = GpuCollector(_settings(**settings), metrics, nvml, env or {}, proc=tmp_path)
    collector.start()
    assert collector.devices_seen.wait(10)
    return collector, metrics


def test_values_of_whole_gpus_and_mig_instances(tmp_path) -> None:
    (tmp_path / "4242").mkdir()  # the pod's process; 7 is another namespace's
    whole = FakeGpu("GPU-aaaa", processes=[_process(4242, 3 * GIB), _process(7, GIB)],
                    throttle=0x4 | 0x1)
    mig_gpu = FakeGpu("GPU-cccc")
    mig_gpu.mig = [FakeGpu("MIG-c0", used=GIB, total=10 * GIB, parent=mig_gpu)]
    nvml = FakeNvml([whole, mig_gpu])
    collector, metrics = _running(nvml, tmp_path)
    try:
        wait_until(lambda: collector.rounds >= 3, 10, "three NVML rounds")
        nvml.events.append((whole, 79))
        nvml.events.append((whole, 12345))
        whole.ecc[1] = 2  # two uncorrected errors since the last round
        rounds = collector.rounds
        wait_until(lambda: collector.rounds >= rounds + 2, 10, "two more rounds")
    finally:
        collector.close()
    assert [d.label for d in collector.devices] == ["0", "1:0"]
    assert _value(metrics, catalog.GPU_UP) == 1
    assert _value(metrics, catalog.GPU_MEMORY_USED, gpu="0") == 2 * GIB
    assert _value(metrics, catalog.GPU_MEMORY_TOTAL, gpu="1:0") == 10 * GIB
    assert _value(metrics, catalog.GPU_UTILIZATION, gpu="0") == pytest.approx(0.37)
    assert _value(metrics, catalog.GPU_UTILIZATION, gpu="1:0") is None  # MIG: not reported
    assert _value(metrics, catalog.GPU_PROCESS_MEMORY, gpu="0") == 3 * GIB  # only the pod's
    assert _value(metrics, catalog.GPU_THROTTLE_SECONDS, gpu="0", reason="sw_power_cap") > 0
    assert _value(metrics, catalog.GPU_THROTTLE_SECONDS, gpu="0", reason="hw_thermal") is None
    # counted from the first sample: the 5 corrected errors from before lookout are not
    assert _value(metrics, catalog.GPU_ECC_ERRORS, gpu="0", type="corrected") == 0
    assert _value(metrics, catalog.GPU_ECC_ERRORS, gpu="0", type="uncorrected") == 2
    assert _value(metrics, catalog.GPU_XID_ERRORS, gpu="0", xid="79") == 1
    assert _value(metrics, catalog.GPU_XID_ERRORS, gpu="0", xid="other") == 1
    assert metrics.registry.get_sample_value(catalog.GPU_INFO.name, {
        "gpu": "1:0", "uuid": "MIG-c0", "name": "NVIDIA A100 MIG"}) == 1


def test_process_ids_of_another_namespace_count_every_process_on_the_pods_gpu(
        tmp_path) -> None:
    gpu = FakeGpu("GPU-aaaa", processes=[_process(11, GIB), _process(12, 2 * GIB),
                                         _process(13, None)])
    collector, metrics = _running(FakeNvml([gpu]), tmp_path)  # no pid visible in tmp_path
    try:
        wait_until(lambda: collector.rounds >= 1, 10, "an NVML round")
    finally:
        collector.close()
    assert _value(metrics, catalog.GPU_PROCESS_MEMORY, gpu="0") == 3 * GIB


def test_a_failing_call_is_counted_and_the_collector_recovers(tmp_path) -> None:
    nvml = FakeNvml([FakeGpu("GPU-aaaa")])
    collector, metrics = _running(nvml, tmp_path)
    try:
        wait_until(lambda: collector.rounds >= 1, 10, "an NVML round")
        nvml.fail = True
        wait_until(lambda: _value(metrics, catalog.GPU_COLLECTOR_FAILURES, reason="error") >= 2,
                   10, "failed rounds to be counted")
        assert _value(metrics, catalog.GPU_UP) == 0
        nvml.fail = False
        rounds = collector.rounds
        wait_until(lambda: collector.rounds > rounds, 10, "rounds after the failure")
        wait_until(lambda: _value(metrics, catalog.GPU_UP) == 1, 10, "gpu_up back to 1")
    finally:
        collector.close()


def test_a_hung_call_is_bounded_counted_and_holds_one_thread(tmp_path) -> None:
    nvml = FakeNvml([FakeGpu("GPU-aaaa")])
    collector, metrics = _running(nvml, tmp_path, gpu_call_timeout=0.05)
    try:
        wait_until(lambda: collector.rounds >= 1, 10, "an NVML round")
        nvml.hang.set()
        wait_until(lambda: _value(metrics, catalog.GPU_COLLECTOR_FAILURES,
                                  reason="timeout") >= 3, 10, "timeouts to be counted")
        assert _value(metrics, catalog.GPU_UP) == 0
        hung = [t for t in threading.enumerate() if t.name == "lookout-nvml"]
        assert len(hung) == 1  # later rounds wait for the hung one instead of piling up
        rounds = collector.rounds
        nvml.hang.clear()
        nvml.release.set()
        wait_until(lambda: collector.rounds > rounds, 10, "rounds once the call returned")
        wait_until(lambda: _value(metrics, catalog.GPU_UP) == 1, 10, "gpu_up back to 1")
    finally:
        collector.close()


def test_no_visible_gpu_is_said_once_like_no_driver(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, "lookout.sidecar.runtime.gpu"):
        collector, metrics = _running(FakeNvml([FakeGpu("GPU-aaaa")]), tmp_path,
                                      env={"NVIDIA_VISIBLE_DEVICES": "none"})
        collector.close()
    assert collector.devices == [] and _value(metrics, catalog.GPU_UP) == 0
    assert any("no GPU this pod may use" in r.getMessage() for r in caplog.records)
