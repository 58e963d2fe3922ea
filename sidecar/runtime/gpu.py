"""GPU truth from NVML (nvidia-ml-py, NVIDIA's own binding), sampled on a background
thread of the lead analysis worker, never the request path.

Per visible GPU (`gpu_devices.visible_devices`): utilisation, memory used and total, the
memory this pod's processes hold, seconds of clock throttling by reason, ECC errors and
critical XID events. No NVML library, no driver or no GPU is the normal case on CPU
nodes: it is logged once, `lookout_gpu_up` is 0, and nothing else changes. Every NVML
round runs on a short-lived daemon thread with a deadline: a driver call that hangs
(it happens when a GPU falls off the bus) is counted as a timeout each interval until
it returns, holds one thread and no more, and never delays a scrape or shutdown.

Which processes are the pod's: NVML reports process ids of the host's PID namespace.
With `shareProcessNamespace` and the pod's PIDs visible, those found in this
container's /proc are summed; when none of NVML's ids can be seen here (the usual
container), every process on the pod's own GPUs counts, since a GPU given to a pod is
not shared unless time-slicing or MPS is configured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookout.sidecar.runtime.gpu_devices import GpuDevice, visible_devices
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import GpuSettings
from lookout.slo import catalog

log = logging.getLogger(__name__)

# NVML's clock event reasons that mean "held down", by bit (nvml.h, a stable ABI); idle,
# application clocks and display settings are not throttling
THROTTLE_REASONS = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
                    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake"}
# XIDs an operator acts on (NVIDIA's XID catalogue); others are counted as "other"
KNOWN_XIDS = frozenset((13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95,
                        119, 120, 140))
ECC_TYPES = {"corrected": 0, "uncorrected": 1}  # NVML_MEMORY_ERROR_TYPE_*
VOLATILE_ECC = 0  # NVML_VOLATILE_ECC: since the driver loaded
NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED
NO_PERMISSION = 4
NOT_FOUND = 6
TIMEOUT = 10  # NVML_ERROR_TIMEOUT: no event waiting
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError
MIG_ENABLED = 1


@dataclass(slots=True)
class GpuReading:
    """One GPU's values from one round, applied to the metrics only when complete."""

    device: GpuDevice
    memory_used: int
    memory_total: int
    utilization: float | None = None  # None: NVML does not report it (a MIG instance)
    process_memory: int | None = None
    throttle_mask: int | None = None
    ecc: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Round:
    taken_at: float
    readings: list[GpuReading]
    xids: list[tuple[str, int]]  # (uuid, xid)


def xid_label(xid: int) -> str:
    return str(xid) if xid in KNOWN_XIDS else "other"


def throttle_reasons(mask: int) -> list[str]:
    return [reason for bit, reason in THROTTLE_REASONS.items() if mask & bit]


class Nvml:
    """The NVML calls lookout makes, with unsupported values read as None."""

    def __init__(self, module: Any) -> None:
        self.api = module

    def _optional(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self.api.NVMLError as error:
            if getattr(error, "value", None) in (NOT_SUPPORTED, NO_PERMISSION):
                return None
            raise

    def devices(self) -> list[GpuDevice]:
        """Every GPU, or its MIG instances where MIG is on."""
        api, found = self.api, []
        for index in range(api.nvmlDeviceGetCount()):
            handle = api.nvmlDeviceGetHandleByIndex(index)
            uuid, name = _text(api.nvmlDeviceGetUUID(handle)), _text(api.nvmlDeviceGetName(handle))
            mode = self._optional(lambda h=handle: api.nvmlDeviceGetMigMode(h))
            if mode is not None and mode[0] == MIG_ENABLED:
                for slot in range(api.nvmlDeviceGetMaxMigDeviceCount(handle)):
                    try:
                        instance = api.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                    except api.NVMLError as error:
                        if getattr(error, "value", None) == NOT_FOUND:
                            continue
                        raise
                    found.append(GpuDevice(f"{index}:{slot}",
                                           _text(api.nvmlDeviceGetUUID(instance)),
                                           f"{name} MIG", instance, uuid))
            else:
                found.append(GpuDevice(str(index), uuid, name, handle))
        return found

    def read(self, device: GpuDevice, own_pid: Callable[[int], bool]) -> GpuReading:
        api, handle = self.api, device.handle
        memory = api.nvmlDeviceGetMemoryInfo(handle)
        reading = GpuReading(device, int(memory.used), int(memory.total))
        rates = self._optional(lambda: api.nvmlDeviceGetUtilizationRates(handle))
        reading.utilization = None if rates is None else rates.gpu / 100
        reading.process_memory = self._process_memory(handle, own_pid)
        if not device.parent_uuid:  # clocks and ECC belong to the whole GPU
            reasons = getattr(api, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                api.nvmlDeviceGetCurrentClocksThrottleReasons
            reading.throttle_mask = self._optional(lambda: reasons(handle))
            for kind, code in ECC_TYPES.items():
                count = self._optional(
                    lambda c=code: api.nvmlDeviceGetTotalEccErrors(handle, c, VOLATILE_ECC))
                if count is not None:
                    reading.ecc[kind] = int(count)
        return reading

    def _process_memory(self, handle: Any, own_pid: Callable[[int], bool]) -> int | None:
        api, used = self.api, {}
        for call in (api.nvmlDeviceGetComputeRunningProcesses,
                     api.nvmlDeviceGetGraphicsRunningProcesses):
            processes = self._optional(lambda c=call: c(handle))
            for process in processes or ():
                if process.usedGpuMemory is not None:  # None: NVML cannot tell (Windows, MIG)
                    used[process.pid] = max(used.get(process.pid, 0), int(process.usedGpuMemory))
        if not used:
            return 0
        ours = {pid: amount for pid, amount in used.items() if own_pid(pid)}
        return sum((ours or used).values())

    def watch_xids(self, devices: Sequence[GpuDevice]) -> Any:
        """An event set for critical XIDs on the whole GPUs, or None where unsupported."""
        api = self.api
        events = api.nvmlEventSetCreate()
        registered = 0
        for device in devices:
            if device.parent_uuid:
                continue
            try:
                api.nvmlDeviceRegisterEvents(device.handle, XID_EVENT, events)
                registered += 1
            except api.NVMLError as error:
                if getattr(error, "value", None) not in (NOT_SUPPORTED, NO_PERMISSION):
                    raise
        return events if registered else None

    def pending_xids(self, events: Any) -> list[tuple[str, int]]:
        api, found = self.api, []
        while True:
            try:
                event = api.nvmlEventSetWait_v2(events, 0)
            except api.NVMLError as error:
                if getattr(error, "value", None) == TIMEOUT:
                    return found
                raise
            found.append((_text(api.nvmlDeviceGetUUID(event.device)), int(event.eventData)))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pid_visible(proc: Path) -> Callable[[int], bool]:
    return lambda pid: (proc / str(pid)).is_dir()


class GpuCollector:
    """Background NVML sampling into the catalog's GPU series; see the module docstring."""

    name = "gpu"

    def __init__(self, settings: GpuSettings, metrics: SidecarMetrics,
                 nvml_module: Any = None, env: Mapping[str, str] | None = None,
                 proc: Path = Path("/proc")) -> None:
        self._settings = settings
        self._metrics = metrics
        self._module = nvml_module
        self._env = os.environ if env is None else env
        self._own_pid = _pid_visible(proc)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lookout-gpu", daemon=True)
        self._call: threading.Thread | None = None  # the NVML round in progress
        self._failures = FailureLog(log)
        self._nvml: Nvml | None = None
        self._devices: list[GpuDevice] = []
        self._events: Any = None
        self._last: dict[str, GpuReading] = {}
        self._last_at: float | None = None
        self.rounds = 0  # completed rounds; for tests
        self.devices_seen = threading.Event()  # set once started (GPUs or not)
        self._up = metrics[catalog.GPU_UP]
        self._up.set(0)
        self._failed = {reason: metrics[catalog.GPU_COLLECTOR_FAILURES].labels(reason)
                        for reason in ("error", "timeout")}

    @property
    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def start(self) -> None:
        if self._settings.gpu_metrics:
            self._thread.start()
        else:
            self.devices_seen.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._settings.gpu_call_timeout + 1)

    # -- the collector thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            started = self._bounded(self._open)
        finally:
            self.devices_seen.set()
        if not started:
            return
        while not self._stop.is_set():
            taken = self._bounded(self._take_round)
            if taken is not None:
                self._apply(taken)
            if self._stop.wait(self._settings.gpu_interval):
                return

    def _bounded(self, work: Callable[[], Any]) -> Any:
        """`work` on its own daemon thread, waited for `gpu_call_timeout` seconds; None on
        failure or timeout (counted, gpu_up 0). While an earlier call still hangs, no new
        one starts: that counts as a timeout too."""
        if self._call is not None and self._call.is_alive():
            self._failed["timeout"].inc()
            self._up.set(0)
            return None
        result: list[Any] = []
        errors: list[BaseException] = []

        def call() -> None:
            try:
                result.append(work())
            except BaseException as error:  # reported on the collector thread
                errors.append(error)

        self._call = threading.Thread(target=call, name="lookout-nvml", daemon=True)
        self._call.start()
        self._call.join(self._settings.gpu_call_timeout)
        if self._call.is_alive():
            self._failed["timeout"].inc()
            self._up.set(0)
            self._failures.warning("timeout", "an NVML call has not returned in %gs; GPU "
                                   "metrics are stale until it does",
                                   self._settings.gpu_call_timeout)
            return None
        if errors:
            return self._failed_with(errors[0])
        return result[0] if result else None

    def _failed_with(self, error: BaseException) -> None:
        if isinstance(error, _Unavailable):
            log.info("GPU metrics off: %s", error)
            return None
        self._failed["error"].inc()
        self._up.set(0)
        self._failures.warning("error", "NVML sample failed: %s", error)
        return None

    def _open(self) -> bool:
        """Load and initialise NVML; find this pod's GPUs. False when there are none."""
        module = self._module
        if module is None:
            try:
                import pynvml as module
            except ImportError as error:
                raise _Unavailable(f"nvidia-ml-py is not installed ({error})") from None
        try:
            module.nvmlInit()
        except module.NVMLError as error:
            raise _Unavailable(f"NVML cannot start ({error}): no NVIDIA driver or GPU "
                               "visible to this container") from None
        nvml = Nvml(module)
        devices = visible_devices(nvml.devices(), self._env)
        if not devices:
            raise _Unavailable("NVML sees no GPU this pod may use "
                               f"(NVIDIA_VISIBLE_DEVICES={self._env.get('NVIDIA_VISIBLE_DEVICES')!r}"
                               f", CUDA_VISIBLE_DEVICES={self._env.get('CUDA_VISIBLE_DEVICES')!r})")
        try:
            self._events = nvml.watch_xids(devices)
        except module.NVMLError as error:
            log.info("GPU XID events not watched: %s", error)
        self._nvml, self._devices = nvml, devices
        for device in devices:
            self._metrics[catalog.GPU_INFO].labels(device.label, device.uuid, device.name).set(1)
        log.info("GPU metrics every %gs from NVML for %s", self._settings.gpu_interval,
                 ", ".join(f"{d.label} ({d.name}, {d.uuid})" for d in devices))
        return True

    def _take_round(self) -> Round:
        assert self._nvml is not None
        readings = [self._nvml.read(device, self._own_pid) for device in self._devices]
        xids = self._nvml.pending_xids(self._events) if self._events is not None else []
        return Round(time.monotonic(), readings, xids)

    def _apply(self, taken: Round) -> None:
        metrics = self._metrics
        elapsed = taken.taken_at - self._last_at if self._last_at is not None else 0.0
        for reading in taken.readings:
            gpu = reading.device.label
            metrics[catalog.GPU_MEMORY_USED].labels(gpu).set(reading.memory_used)
            metrics[catalog.GPU_MEMORY_TOTAL].labels(gpu).set(reading.memory_total)
            if reading.utilization is not None:
                metrics[catalog.GPU_UTILIZATION].labels(gpu).set(reading.utilization)
            if reading.process_memory is not None:
                metrics[catalog.GPU_PROCESS_MEMORY].labels(gpu).set(reading.process_memory)
            for reason in throttle_reasons(reading.throttle_mask or 0):
                metrics[catalog.GPU_THROTTLE_SECONDS].labels(gpu, reason).inc(elapsed)
            before = self._last.get(gpu)
            for kind, count in reading.ecc.items():
                # counted from the first sample on: a restart must not replay old errors
                seen = before.ecc.get(kind, count) if before is not None else count
                metrics[catalog.GPU_ECC_ERRORS].labels(gpu, kind).inc(max(0, count - seen))
            self._last[gpu] = reading
        for uuid, xid in taken.xids:
            device = next((d for d in self._devices if uuid in (d.uuid, d.parent_uuid)), None)
            metrics[catalog.GPU_XID_ERRORS].labels(
                device.label if device else "other", xid_label(xid)).inc()
        self._last_at = taken.taken_at
        self._up.set(1)
        self.rounds += 1


class _Unavailable(RuntimeError):
    """No NVML or no GPU here: the normal state of a CPU node, not a failure."""
