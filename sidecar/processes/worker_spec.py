"""What lookout's process needs to start an analysis worker, and nothing more: the
settings and rings it is started with and an entry point that imports the analysis
modules only in the worker. lookout's own process thereby never loads numpy, scipy,
Pillow or onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

from lookout.sidecar.pipeline.channel import RingAddress
from lookout.sidecar.served_models import ChainSettings, LabelSettings


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every analysis worker is made of, cut once in the lookout process
    (`composition.py`): never the whole configuration."""

    chains: ChainSettings
    labels: LabelSettings
    routes: tuple[str, ...]  # the HTTP port's route templates, for the tap's records
    log_level: str


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker process is started with (pickled once, at spawn)."""

    index: int
    settings: WorkerSettings
    inboxes: tuple[RingAddress, ...]  # observations: one ring per Envoy worker thread
    forwards: tuple[RingAddress, ...]  # lead: one per other worker; others: the one to the lead
    metrics_dir: str
    parent_pid: int
    labels_path: str = ""  # the lookout process's discovered labels (label_file.py)
    margins_path: str = ""  # the trust bands' margin factors (margin_file.py), lead only

    @property
    def lead(self) -> bool:
        return self.index == 0


def main(spec: WorkerSpec) -> None:
    """The process's entry point (multiprocessing, spawn)."""
    from lookout.sidecar.processes.analysis_worker import run

    run(spec)
