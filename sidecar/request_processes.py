"""More than one core for the request path: `request_processes: N` runs the data port as
N processes on one port (SO_REUSEPORT: the kernel spreads new connections over them).

The main process keeps everything that must exist once: the admin port with the one
/metrics, the upstream probe, readiness, and the analysis workers. It is request-path
process 0 as well; processes 1..N-1 are its children, each with its own upstream pool,
its own tracer and its own ring to every analysis worker (rings are one-producer: no
lock shared between processes, so a killed process can leave nothing held).

/metrics merges every child's registry, read over a Unix socket in a directory only
this user can open, with the main process's and the workers'. A child that dies is
started again; the counters of its last reading stay in the sum (so totals never go
backwards when it is replaced), what it counted after that reading is lost with it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import threading
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from prometheus_client.metrics_core import Metric

from lookout.sidecar.config import Config
from lookout.sidecar.pipeline.channel import RingAddress
from lookout.sidecar.runtime.metrics import SidecarMetrics, merge
from lookout.sidecar.runtime.supervisor import Supervisor

ROLE = "request-path process"
COMPONENT = "request_process"
READ_TIMEOUT = 2.0  # a child busy with a burst still answers between two requests
KEPT_TYPES = ("counter", "histogram", "summary")  # what a dead child's sum keeps


@dataclass(frozen=True, slots=True)
class RequestProcessSpec:
    """Everything a request-path child is started with (pickled once, at spawn)."""

    index: int
    config: Config
    inboxes: tuple[RingAddress, ...]  # this process's ring to each analysis worker
    metrics_socket: str
    parent_pid: int


def entry(spec: RequestProcessSpec) -> None:
    """The child's entry point (multiprocessing, spawn)."""
    from lookout.sidecar.request_process import run

    run(spec)


def read_families(path: str, timeout: float = READ_TIMEOUT) -> tuple[int, list[Metric]]:
    """One child's pid and metric families, as its metrics socket answers them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(path)
        chunks = []
        while chunk := client.recv(1 << 16):
            chunks.append(chunk)
    return pickle.loads(b"".join(chunks))  # our own child, over a 0700 directory


class RequestProcesses:
    """The children: their supervisor, and their metrics as one collector source."""

    def __init__(self, config: Config, metrics: SidecarMetrics, directory: str,
                 inboxes: list[tuple[RingAddress, ...]]) -> None:
        """`inboxes[i]` are child i+1's rings (empty when analysis is off)."""
        self._metrics = metrics
        self._sockets = [os.path.join(directory, f"request-{index}.sock")
                         for index in range(1, config.request_processes)]
        specs = [(RequestProcessSpec(index, config, inboxes[index - 1],
                                     self._sockets[index - 1], os.getpid()),)
                 for index in range(1, config.request_processes)]
        self._last: dict[int, list[Metric]] = {}  # by pid: the latest reading of each
        self._dead: set[int] = set()
        self._retired: list[Metric] = []  # the dead ones' counters, summed
        self._lock = threading.Lock()
        self.supervisor = Supervisor(ROLE, entry, specs, self._died, first_index=1)
        metrics.add_source(self)

    def start(self) -> None:
        self.supervisor.start()

    @property
    def pids(self) -> list[int]:
        return self.supervisor.pids

    def _died(self, process: BaseProcess) -> None:
        """Its last reading's counters join the retired sum; a reading of it still on
        its way is not taken (that could count it twice)."""
        self._metrics.component_error(COMPONENT)
        with self._lock:
            self._dead.add(process.pid)
            last = self._last.pop(process.pid, None)
            if last is not None:
                kept = [family for family in last if family.type in KEPT_TYPES]
                self._retired = merge([_Families(self._retired), _Families(kept)])

    def collect(self) -> list[Metric]:
        """Every live child's families, and the kept counters of those that died."""
        for path in self._sockets:
            with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):
                pid, families = read_families(path)
                with self._lock:
                    if pid not in self._dead:
                        self._last[pid] = families
        with self._lock:
            sources = [self._retired, *self._last.values()]
        return merge(_Families(families) for families in sources)

    def stop(self, deadline: float) -> None:
        """SIGTERM to each child (it drains its connections within the grace) and wait."""
        self.supervisor.stop_restarting()
        self.supervisor.terminate()
        for slot in self.supervisor.slots:
            self.supervisor.join(slot, deadline)


class _Families:
    """A list of families as a collector, for `merge`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
