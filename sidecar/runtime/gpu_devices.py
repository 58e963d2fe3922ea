"""Which GPUs NVML should report for this pod: the ones its processes can use.

NVML enumerates every GPU whose device node the container has; what the pod uses is
narrowed by `NVIDIA_VISIBLE_DEVICES` (the container runtime's list: `all`, `none`,
`void`, indices, `GPU-` or `MIG-` UUIDs) and then `CUDA_VISIBLE_DEVICES` (CUDA's, read as
CUDA reads it: indices into what is left, UUIDs or their prefixes, and the first entry
that names nothing ends the list). Indices follow NVML's PCI-bus order, which is CUDA's
with `CUDA_DEVICE_ORDER=PCI_BUS_ID`. A GPU in MIG mode is reported as its instances:
NVML gives their memory, not the whole GPU's, and they are what a process is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU or MIG instance as NVML enumerated it."""

    label: str  # "0", or "0:1" for instance 1 of GPU 0: the `gpu` label
    uuid: str
    name: str
    handle: Any = None
    parent_uuid: str = ""  # a MIG instance's GPU

    @property
    def index(self) -> str:
        return self.label.partition(":")[0]


def _matches(token: str, device: GpuDevice) -> bool:
    """One list entry against one device; UUIDs may be unambiguous prefixes, as in CUDA."""
    if token.startswith("GPU-"):
        return device.uuid.startswith(token) or device.parent_uuid.startswith(token)
    if token.startswith("MIG-"):
        return device.uuid.startswith(token)
    if ":" in token:
        return token == device.label
    return token == device.index


def _by_runtime(devices: Sequence[GpuDevice], value: str | None) -> list[GpuDevice]:
    """NVIDIA_VISIBLE_DEVICES: unset or `all` keeps what NVML sees (in a container that
    is already only the pod's devices)."""
    if value is None or value.strip() in ("", "all"):
        return list(devices)
    if value.strip() in ("none", "void"):
        return []
    tokens = [token.strip() for token in value.split(",") if token.strip()]
    return [device for device in devices if any(_matches(t, device) for t in tokens)]


def _by_cuda(devices: Sequence[GpuDevice], value: str | None) -> list[GpuDevice]:
    if value is None:
        return list(devices)
    groups: dict[str, list[GpuDevice]] = {}  # CUDA numbers whole GPUs; MIG rides along
    for device in devices:
        groups.setdefault(device.index, []).append(device)
    ordered = list(groups.values())
    chosen: list[GpuDevice] = []
    for token in (t.strip() for t in value.split(",")):
        if token.isdigit():
            if int(token) >= len(ordered):
                break
            found = ordered[int(token)]
        else:
            found = [device for device in devices if token and _matches(token, device)]
        if not found:
            break
        chosen.extend(device for device in found if device not in chosen)
    return chosen


def visible_devices(devices: Sequence[GpuDevice], env: Mapping[str, str]) -> list[GpuDevice]:
    """The devices of `devices` this pod's processes can use, by the two variables."""
    return _by_cuda(_by_runtime(devices, env.get("NVIDIA_VISIBLE_DEVICES")),
                    env.get("CUDA_VISIBLE_DEVICES"))
