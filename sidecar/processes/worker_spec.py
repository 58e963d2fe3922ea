"""What the proxy needs to start an analysis worker, and nothing more: the spec it is
started with and an entry point that imports the analysis modules only in the worker.
The request-path process thereby never loads numpy, scipy, Pillow or onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

from lookout.sidecar.config import Config
from lookout.sidecar.pipeline.channel import RingAddress


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker process is started with (pickled once, at spawn)."""

    index: int
    config: Config
    inboxes: tuple[RingAddress, ...]  # observations: one ring per request-path process
    forwards: tuple[RingAddress, ...]  # lead: one per other worker; others: the one to the lead
    metrics_dir: str
    parent_pid: int
    labels_path: str = ""  # the lookout process's discovered labels (label_file.py)

    @property
    def lead(self) -> bool:
        return self.index == 0



def main(spec: WorkerSpec) -> None:
    """The process's entry point (multiprocessing, spawn)."""
    from lookout.sidecar.processes.analysis_worker import run

    run(spec)
