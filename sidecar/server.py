"""Process lifecycle: bind both ports, run until SIGTERM, drain, flush, exit 0."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from lookout.sidecar.admin import AdminApp
from lookout.sidecar.config import Address, Config, per_model
from lookout.sidecar.pipeline.observation import (
    OBSERVATION_QUEUE,
    ObservationConsumer,
    ObservationPipeline,
    ObservationQueue,
)
from lookout.sidecar.pipeline.outcome import Outcome
from lookout.sidecar.pipeline.parse_errors import Reason
from lookout.sidecar.proxy.messages import REFUSAL_REASONS
from lookout.sidecar.proxy.telemetry import RequestTelemetry
from lookout.sidecar.proxy.upstream import GrpcUpstream, UpstreamProbe
from lookout.sidecar.proxy.upstream_client import UpstreamPool
from lookout.sidecar.request_path import RequestPath
from lookout.sidecar.request_processes import COMPONENT as REQUEST_PROCESS_COMPONENT
from lookout.sidecar.request_processes import RequestProcesses
from lookout.sidecar.runtime.event_loop import run_event_loop, tune_runtime
from lookout.sidecar.runtime.logs import TallyLog
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.tracing import Tracing, build_tracing, flush_spans
from lookout.sidecar.samples.api import SampleApi
from lookout.sidecar.samples.store import SampleStore, StoreError
from lookout.sidecar.samples.ui import SampleUi
from lookout.sidecar.served_models import ModelLabels
from lookout.sidecar.settings import SampleSettings, UpstreamSettings, of
from lookout.sidecar.workers import AnalysisWorkers, WorkerStartError, worker_count

if TYPE_CHECKING:  # loaded only with the Envoy data plane
    from lookout.sidecar.dataplane.data_plane import EnvoyDataPlane
    from lookout.sidecar.samples.fleet_store import FleetStore

log = logging.getLogger(__name__)

PIPELINE_DRAIN_TIMEOUT = 2.0
WORKER_STOP_TIMEOUT = 20.0  # the lead drains the reference model and the sample writer
CHILD_STOP_MARGIN = 10.0  # beyond the grace: a child's span flush and exit


class StartupError(RuntimeError):
    """The sidecar cannot start; the message says why and what to change."""


def read_admin_token(config: Config) -> str:
    """The admin API token: the file wins (a mounted Secret); never logged."""
    if not config.admin_token_file:
        return config.admin_token.strip()
    try:
        token = Path(config.admin_token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise StartupError(f"admin_token_file {config.admin_token_file}: cannot read it "
                           f"({getattr(error, 'strerror', None) or error})") from None
    if not token:
        raise StartupError(f"admin_token_file {config.admin_token_file} is empty")
    return token


class Sidecar:
    """Owns every long-lived part of the running sidecar."""

    def __init__(
        self,
        config: Config,
        tracing: Tracing | None = None,
        consumers: Sequence[ObservationConsumer] | None = None,
        analysis_in_process: bool = False,
    ) -> None:
        """`consumers` or `analysis_in_process` run analysis in this process's threads,
        as before worker processes: for embedding and for tests that reach into the
        stages. The sidecar itself always runs it in worker processes."""
        self.config = config
        self._consumers = consumers
        self._in_process = analysis_in_process or consumers is not None
        self.metrics = SidecarMetrics(config.model_name, config.model_version)
        self.models = per_model(config)
        for model in self.models.values():
            self.metrics.labelled(model.model_name, model.model_version).set_model_info(
                model.model_sha256, role="primary",
                served_name=Path(model.model_path).name if model.model_path else "")
        self.tracing = tracing or build_tracing()
        self.draining = False
        self._runners: list[web.AppRunner] = []
        self.admin_token = read_admin_token(config)

    async def start(self) -> None:
        config = self.config
        upstream = of(UpstreamSettings, config)
        self.pool = UpstreamPool(upstream)
        self.chain = None  # AnalysisChain: the default model's, in-process only
        self.chains = None  # ModelChains, in-process only
        self.workers: AnalysisWorkers | None = None
        self.children: RequestProcesses | None = None
        self.pipeline: ObservationPipeline | None = None
        self.data_plane: EnvoyDataPlane | None = None
        self._store: SampleStore | None = None
        self._fleet: FleetStore | None = None
        self.analyzer = self.shadow = self.drift = self.samples = None  # in-process only
        if config.data_plane == "envoy":
            if self._in_process:
                await self.pool.close()
                raise StartupError("data_plane: envoy hands exchanges to the analysis "
                                   "workers; analysis in this process needs data_plane: "
                                   "python")
            await self._start_envoy(upstream)
            return
        components = [RequestTelemetry.name, UpstreamProbe.name]
        if config.request_processes > 1:
            components.append(REQUEST_PROCESS_COMPONENT)
        if self._in_process:
            if config.request_processes > 1:
                await self.pool.close()
                raise StartupError("request_processes > 1 needs the analysis workers; "
                                   "analysis in this process serves one request path")
            components += self._start_in_process()
        else:
            components += await self._start_workers()
        self.analyzer = self.chain.analyzer if self.chain else None
        self.shadow = self.chain.shadow if self.chain else None
        self.drift = self.chain.drift if self.chain else None
        self.samples = self.chain.samples if self.chain else None
        self.metrics.initialise(
            queues=[OBSERVATION_QUEUE, *(self.chains.queues if self.chains else [])],
            components=components,
            reasons=list(Reason) if self.chain else [], refusals=REFUSAL_REASONS,
            outcomes=list(Outcome) if self.chain else [])
        self._refusals = TallyLog(log, "refused client requests or connections")
        self.request_path = RequestPath(config, self.metrics, self.tracing, self.queue,
                                        self._refused, self.pool)
        self.probe = UpstreamProbe(upstream, self.pool, self.metrics, self.request_path.grpc)
        self.probe.start()
        self.data_server = self.request_path.server
        self.model_labels = self.request_path.telemetry.models
        admin_site = await self._admin_site()
        await self._bind("listen", config.listen, self.request_path.start(
            reuse_port=config.request_processes > 1))
        if config.grpc_listen is not None:
            await self._bind("grpc-listen", config.grpc_listen, self.request_path.start_grpc(
                reuse_port=config.request_processes > 1))
        await self._bind("admin", config.admin, admin_site.start())
        if config.request_processes > 1:
            self.children = RequestProcesses(
                config, self.metrics, self.workers.files.path,
                [self.workers.producer_inboxes(index)
                 for index in range(1, config.request_processes)])
            self.children.start()
        if config.grpc_listen is not None:
            log.info("lookout serving gRPC %s -> %s", config.grpc_listen, config.grpc_upstream)
        log.info("lookout serving %s -> %s (admin %s, model %s version %s, %d request-path "
                 "process%s)", config.listen, config.upstream, config.admin,
                 config.model_name, config.model_version, config.request_processes,
                 "" if config.request_processes == 1 else "es")

    async def _admin_site(self) -> web.TCPSite:
        config = self.config
        sample_api = SampleApi(self.admin_token, lambda: self._open_store(),
                               bool(config.sample_dir))
        gallery = SampleUi(self.admin_token, lambda: self._open_store(),
                           bool(config.sample_dir), config.trace_url_template,
                           config.drift_baseline_path)
        admin_app = AdminApp(self.metrics, self.probe, lambda: self.analysis_running,
                             lambda: self.draining, sample_api, gallery,
                             self._data_plane_running).build()
        self.admin_runner = web.AppRunner(admin_app, access_log=None, handle_signals=False)
        await self.admin_runner.setup()
        return web.TCPSite(self.admin_runner, config.admin.host, config.admin.port)

    def _data_plane_running(self) -> bool:
        return self.data_plane is None or self.data_plane.running

    async def _start_envoy(self, upstream: UpstreamSettings) -> None:
        """Envoy serves both data ports; the tap hands exchanges to the analysis
        workers' rings and counts RED; this process keeps the admin port."""
        from lookout.sidecar.dataplane.abi import AbiError
        from lookout.sidecar.dataplane.data_plane import COMPONENT, EnvoyDataPlane, TapSettings
        from lookout.sidecar.dataplane.envoy_config import DataPlaneSettings
        from lookout.sidecar.dataplane.envoy_process import EnvoyStartError
        from lookout.sidecar.dataplane.envoy_tracing import TracingConfigError

        config = self.config
        for role, address in (("listen", config.listen), ("grpc-listen", config.grpc_listen)):
            if address is not None:
                await self._bind(role, address, _bindable(address))
        self._private = tempfile.mkdtemp(prefix="lookout-")
        count = worker_count(config)
        try:
            self.workers = AnalysisWorkers(config, self.metrics, count,
                                           wake_dir=self._private)
        except WorkerStartError as error:
            await self._abandon_envoy()
            raise StartupError(str(error)) from None
        self.queue = self.workers
        self.model_labels = ModelLabels(
            config.model_name, config.model_version,
            {name: model.model_version for name, model in self.models.items()
             if name != config.model_name}, config.discover_models, config.max_models)
        try:
            self.data_plane = EnvoyDataPlane(
                of(DataPlaneSettings, config), of(TapSettings, config), self.metrics,
                self.workers.inboxes, count, self._private, self.model_labels)
        except (TracingConfigError, ValueError, OSError) as error:
            await self._abandon_envoy()
            raise StartupError(f"the Envoy data plane: {error}") from None
        self.workers.start()
        self.metrics.initialise(queues=[OBSERVATION_QUEUE],
                                components=[UpstreamProbe.name, AnalysisWorkers.name,
                                            COMPONENT, "tap"])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.data_plane.start)
        except (AbiError, EnvoyStartError) as error:
            await self._abandon_envoy()
            raise StartupError(str(error)) from None
        self.probe = UpstreamProbe(upstream, self.pool, self.metrics,
                                   GrpcUpstream(config.grpc_upstream)
                                   if config.grpc_listen is not None else None)
        self.probe.start()
        admin_site = await self._admin_site()
        await self._bind("admin", config.admin, admin_site.start())
        log.info("lookout: Envoy (pid %s) serving %s%s -> %s (admin %s, model %s version "
                 "%s)", self.data_plane.process.pid, config.listen,
                 f" and gRPC {config.grpc_listen}" if config.grpc_listen else "",
                 config.upstream, config.admin, config.model_name, config.model_version)

    async def _abandon_envoy(self) -> None:
        loop = asyncio.get_running_loop()
        if self.data_plane is not None:
            await loop.run_in_executor(None, self.data_plane.stop, 0.0)
        if self.workers is not None:
            await loop.run_in_executor(None, self.workers.stop, 1.0)
        await self.pool.close()
        shutil.rmtree(self._private, ignore_errors=True)

    def _start_in_process(self) -> list[str]:
        """Analysis in this process's threads; returns its components' names. Imported
        here: the sidecar's own request-path process never loads the analysis."""
        from lookout.sidecar.model_chains import ModelChains

        config = self.config
        self.queue = ObservationQueue(config.observation_queue_size, self.metrics,
                                      config.observation_queue_bytes)
        if self._consumers is None:
            self.chains = ModelChains(config, self.metrics)
            self.chain = self.chains.default
            self.consumers: list[ObservationConsumer] = [self.chains]
            self.chains.start()
            names = self.chains.components
        else:
            self.consumers = list(self._consumers)
            names = [consumer.name for consumer in self.consumers]
        self.pipeline = ObservationPipeline(self.queue, self.consumers, self.metrics,
                                            self.tracing)
        self.pipeline.start()
        return names

    async def _start_workers(self) -> list[str]:
        """Analysis in worker processes, fed through the shared-memory channel."""
        try:
            self.workers = AnalysisWorkers(self.config, self.metrics,
                                           worker_count(self.config))
        except WorkerStartError as error:
            await self.pool.close()
            raise StartupError(str(error)) from None
        self.workers.start()
        self.queue = self.workers
        return [AnalysisWorkers.name]

    async def _bind(self, role: str, address: Address, listening: Awaitable[None]) -> None:
        try:
            await listening
        except OSError as error:
            if self.data_plane is not None or self.config.data_plane != "envoy":
                await self._abandon_start()
            else:
                await self.pool.close()
            raise StartupError(
                f"cannot listen on {address} (the {role} address): "
                f"{error.strerror or error}; choose another with --{role}"
            ) from None

    def _refused(self, reason: str) -> None:
        self.metrics.client_refused(reason)
        self._refusals.add(reason)

    @property
    def analysis_running(self) -> bool:
        if self.workers is not None:
            return self.workers.running
        return self.pipeline is not None and self.pipeline.running

    def _open_store(self) -> SampleStore | None:
        """The sample store, for reading; written only by the lead analysis worker. With
        `sample_gallery: fleet`, the fleet's store instead (read-only, like the other)."""
        if self.config.sample_gallery == "fleet":
            if self._fleet is None:
                from lookout.sidecar.samples.fleet_store import open_fleet

                self._fleet = open_fleet(of(SampleSettings, self.config))
            return self._fleet  # type: ignore[return-value]  # the same read interface
        if self.samples is not None:
            return self.samples.store if self.samples.ready.is_set() else None
        if self._store is None and self.config.sample_dir:
            try:
                self._store = SampleStore(self.config.sample_dir, repair=False)
            except StoreError as error:
                log.warning("sample API: %s", error)
        return self._store

    async def _abandon_start(self) -> None:
        if self.data_plane is not None:
            await self._abandon_envoy()
            await self.probe.stop()
            await self.admin_runner.cleanup()
            return
        if self.chains is not None:
            self.chains.abandon()
        if self.pipeline is not None:
            await self.pipeline.stop(0)
        if self.workers is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.workers.stop, 1.0)
        await self.probe.stop()
        await self.request_path.stop(0)
        await self.admin_runner.cleanup()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, flush telemetry. The other
        request-path processes drain at the same time as this one."""
        self.draining = True
        log.info("shutting down: draining in-flight requests (grace %gs)",
                 self.config.shutdown_grace)
        loop = asyncio.get_running_loop()
        children = None
        if self.children is not None:
            deadline = time.monotonic() + self.config.shutdown_grace + CHILD_STOP_MARGIN
            children = loop.run_in_executor(None, self.children.stop, deadline)
        await self.probe.stop()
        if self.data_plane is not None:
            await loop.run_in_executor(None, self.data_plane.stop, self.config.shutdown_grace)
        else:
            await self.request_path.stop(self.config.shutdown_grace)
        if children is not None:
            await children
        if self.data_plane is None:
            self._refusals.flush()
        await self._stop_analysis(PIPELINE_DRAIN_TIMEOUT)
        if self.chains is not None:
            await self.chains.stop(PIPELINE_DRAIN_TIMEOUT)
        await loop.run_in_executor(None, flush_spans, self.tracing)
        await self.admin_runner.cleanup()
        if self._store is not None:
            self._store.close()
        if self.data_plane is not None:
            shutil.rmtree(self._private, ignore_errors=True)
        log.info("shutdown complete")

    async def _stop_analysis(self, timeout: float) -> None:
        if self.pipeline is not None:
            await self.pipeline.stop(timeout)
        if self.workers is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, self.workers.stop, timeout + WORKER_STOP_TIMEOUT)


async def _bindable(address: Address) -> None:
    """Raises the OSError Envoy would meet binding `address`, so start-up can name it
    (Envoy binds it itself, a moment later)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address.host, address.port))


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sidecar = Sidecar(config)
    await sidecar.start()
    tune_runtime()
    await stop.wait()
    await sidecar.stop()


def run(config: Config) -> None:
    run_event_loop(config.event_loop, serve(config))
