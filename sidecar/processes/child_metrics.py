"""Metrics kept by analysis worker processes and exported by lookout's /metrics: the one
way a child's metrics reach it.

Each worker records into prometheus_client's multiprocess files (one memory-mapped file
per process and metric type) in a directory lookout owns; lookout reads them at each
scrape and merges them with its own registry under the same names. The files of a dead
worker stay, so its counters keep counting in the sum and never go backwards when it is
replaced; its gauges (mode `livemax`) are removed when it is reaped.
"""

from __future__ import annotations

import glob
import os
import shutil
import struct
import tempfile

from prometheus_client import multiprocess, values
from prometheus_client.metrics_core import Metric

DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
READ_ATTEMPTS = 3


def _has_data(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8
    except OSError:
        return False


def record_into(directory: str) -> None:
    """In a worker process, before any metric exists: keep values in `directory`."""
    os.environ[DIRECTORY_ENV] = directory
    values.ValueClass = values.MultiProcessValue()


class WorkerMetricFiles:
    """lookout's end: a fresh directory, read at each scrape, removed at stop."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix="lookout-metrics-", dir=parent)

    def collect(self) -> list[Metric]:
        """The workers' metrics. A scrape can meet a file being created (still empty)
        or a dead worker's gauge file being removed; both hold nothing to export, and
        the read is simply made again on the files there are then."""
        for attempt in range(READ_ATTEMPTS):
            files = [path for path in glob.glob(os.path.join(self.path, "*.db"))
                     if _has_data(path)]
            try:
                return list(multiprocess.MultiProcessCollector.merge(files))
            except (FileNotFoundError, struct.error):
                if attempt == READ_ATTEMPTS - 1:
                    raise
        return []

    def process_exited(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, self.path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
