"""Envoy as the data plane, put together: the tap's counters and filter configuration,
Envoy's bootstrap written to lookout's private directory, and the Envoy process.

The analysis rings belong to the analysis pool (`processes/analysis_pool.py` makes
them, one per Envoy worker and analysis worker, with FIFO wake-ups the tap opens by
name); this module hands their names to the tap and exports what the tap counts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, Metric

from lookout.sidecar.dataplane import abi
from lookout.sidecar.dataplane.envoy_config import TAP_LIBRARY, DataPlaneSettings, bootstrap
from lookout.sidecar.dataplane.envoy_refusals import EnvoyRefusals
from lookout.sidecar.dataplane.label_publisher import LabelPublisher
from lookout.sidecar.dataplane.tap_counters import RedCollector, TapCounters
from lookout.sidecar.dataplane.trace_settings import TraceSettings
from lookout.sidecar.fd_budget import raise_file_limit
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.pipeline.observation import OBSERVATION_QUEUE
from lookout.sidecar.processes.envoy import EnvoyProcess, envoy_binary, envoy_version
from lookout.sidecar.processes.shm_segments import SegmentOwner
from lookout.sidecar.runtime.logs import TallyLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.served_models import ModelLabels
from lookout.slo import catalog

log = logging.getLogger(__name__)

COUNTER_SLOTS = 1024  # per Envoy worker: (model, route, code) keys; full: `other`
READY_TIMEOUT = 30.0
DEFAULT_MODULE = Path(__file__).with_name(TAP_LIBRARY)
COMPONENT = EnvoyProcess.name


@dataclass(frozen=True, slots=True)
class TapSettings:
    """What the tap and Envoy's process are made of (`settings.of(TapSettings, config)`)."""

    routes: tuple[str, ...]
    grpc_listen: Any  # config.Address or None: the gRPC methods are routes too
    observe_max_bytes: int
    observation_queue_bytes: int
    envoy_concurrency: int
    tap_module: str
    shutdown_grace: float


def grpc_methods(config: TapSettings) -> tuple[str, ...]:
    """The gRPC methods lookout knows by name, with a gRPC port (their descriptors load
    protobuf, which an HTTP-only sidecar never imports)."""
    if config.grpc_listen is None:
        return ()
    from lookout.sidecar.pipeline.protos import KNOWN_METHODS

    return tuple(KNOWN_METHODS)


def tap_routes(config: TapSettings) -> tuple[str, ...]:
    """The HTTP port's templates, then the gRPC methods (a gRPC call's `route` is its
    method, as the Python port labelled it)."""
    return (*config.routes, *grpc_methods(config))


def filter_config(counters: str, rings: Sequence[Ring], workers: int, max_body: int,
                  max_buffered: int, routes: Sequence[str], tracing: TraceSettings) -> str:
    """The tap's configuration text (`tap/PROTOCOL.md`): rings Envoy-worker major."""
    lines = ["layout=4", f"counters={counters}", f"ring_workers={workers}",
             f"max_body={max_body}", f"max_buffered={max_buffered}"]
    if tracing.enabled:
        lines.append(f"trace_sampling_ppm={tracing.sample_ppm}")
    lines += [f"ring={ring.name},{ring.wake_path},{ring.max_records}" for ring in rings]
    lines += [f"route={route}" for route in routes]
    return "\n".join(lines) + "\n"


class TapStats:
    """What the tap counted beside RED, under the catalog's names."""

    def __init__(self, counters: TapCounters) -> None:
        self._counters = counters

    def collect(self) -> list[Metric]:
        totals = self._counters.area_totals()
        dropped = CounterMetricFamily(catalog.QUEUE_DROPPED.name, catalog.QUEUE_DROPPED.help,
                                      labels=catalog.QUEUE_DROPPED.labels)
        dropped.add_metric([OBSERVATION_QUEUE], totals["ring_full"])
        errors = CounterMetricFamily(catalog.COMPONENT_ERRORS.name,
                                     catalog.COMPONENT_ERRORS.help,
                                     labels=catalog.COMPONENT_ERRORS.labels)
        errors.add_metric(["tap"], totals["unrecorded"] + self._counters.untapped)
        reserved = CounterMetricFamily(catalog.SPANS_RESERVED.name, catalog.SPANS_RESERVED.help)
        reserved.add_metric([], totals["spans_only"])
        return [dropped, errors, reserved]


class EnvoyDataPlane:
    """Owns the counters segment, the bootstrap file and the Envoy process."""

    def __init__(self, network: DataPlaneSettings, config: TapSettings,
                 metrics: SidecarMetrics, rings: Sequence[Ring], workers: int,
                 directory: str, models: ModelLabels, labels_path: str,
                 segments: SegmentOwner, env: Mapping[str, str] | None = None) -> None:
        """`labels_path`: where the discovered model labels are published for the
        analysis workers (`label_publisher.py`); `segments`: names the counters'."""
        env = os.environ if env is None else env
        self.module = Path(config.tap_module) if config.tap_module else DEFAULT_MODULE
        self.binary = envoy_binary()
        threads = config.envoy_concurrency
        name = segments.name("counters")
        self.counters = TapCounters(name, threads, COUNTER_SLOTS, catalog.LATENCY_BUCKETS,
                                    catalog.BYTES_BUCKETS)
        routes = tap_routes(config)
        self.labels = LabelPublisher(self.counters, models, labels_path)
        metrics.add_source(RedCollector(self.counters, routes, models, self.labels.readings))
        metrics.add_source(TapStats(self.counters))
        tap = filter_config(name, rings, workers, config.observe_max_bytes,
                            config.observation_queue_bytes, routes, TraceSettings.from_env(env))
        self.admin_socket = os.path.join(directory, "envoy-admin.sock")
        self.bootstrap_path = os.path.join(directory, "envoy.json")
        document = bootstrap(network, tap, self.admin_socket)
        Path(self.bootstrap_path).write_text(json.dumps(document, indent=1))
        environment = {**env, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(self.module.parent)}
        command = [str(self.binary), "-c", self.bootstrap_path,
                   "--concurrency", str(threads), "--disable-hot-restart",
                   "--log-level", "warning",
                   "--component-log-level", "dynamic_modules:info",
                   "--drain-time-s", str(max(1, int(config.shutdown_grace))),
                   "--drain-strategy", "immediate"]
        self.refusals = EnvoyRefusals(self.admin_socket, TallyLog(
            log, "refused client requests or connections"))
        metrics.add_source(self.refusals)
        self.process = EnvoyProcess(command, environment, self.admin_socket,
                                    lambda: metrics.component_error(COMPONENT),
                                    abi.check_log_line)

    def start(self) -> None:
        """Refuses a module built for another ABI before Envoy ever loads it."""
        if self.module.name != TAP_LIBRARY:
            link = self.module.with_name(TAP_LIBRARY)
            raise abi.AbiError(f"tap_module {self.module}: Envoy loads modules as "
                               f"lib<name>.so; name it {link.name}")
        abi.check_pair(envoy_version(self.binary), self.binary, self.module)
        raise_file_limit()
        self.process.start(READY_TIMEOUT)
        self.refusals.start()

    @property
    def running(self) -> bool:
        return self.process.running

    def stop(self, grace: float) -> None:
        self.refusals.stop()
        self.process.drain_and_stop(grace)
        self.counters.close()
