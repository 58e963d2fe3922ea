"""Process lifecycle: Envoy serves both data ports, the analysis workers read the tap's
rings, this process keeps the admin port; SIGTERM drains Envoy, then the workers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from lookout.sidecar.admin import AdminApp
from lookout.sidecar.admin_connections import (
    CLOSE_REASONS,
    AdminLimits,
    ConnectionGate,
    GatedSite,
)
from lookout.sidecar.composition import served_models, worker_settings
from lookout.sidecar.config import Address, Config
from lookout.sidecar.dataplane.abi import AbiError
from lookout.sidecar.dataplane.data_plane import COMPONENT, EnvoyDataPlane, TapSettings
from lookout.sidecar.dataplane.envoy_config import DataPlaneSettings
from lookout.sidecar.dataplane.trace_settings import TracingConfigError
from lookout.sidecar.dataplane.upstream_probe import GrpcUpstream, UpstreamProbe
from lookout.sidecar.fd_budget import BudgetError, BudgetSettings, check_budget, raise_file_limit
from lookout.sidecar.pipeline.observation import OBSERVATION_QUEUE
from lookout.sidecar.processes.analysis_pool import (
    AnalysisPool,
    ChannelSettings,
    WorkerStartError,
    worker_count,
)
from lookout.sidecar.processes.envoy import EnvoyStartError
from lookout.sidecar.processes.label_file import LABELS_FILE
from lookout.sidecar.processes.margin_file import MARGINS_FILE, write_margins
from lookout.sidecar.processes.shm_segments import SegmentOwner
from lookout.sidecar.runtime.event_loop import run_event_loop
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.admin_token import AdminToken
from lookout.sidecar.samples.api import SampleApi
from lookout.sidecar.samples.audit_metrics import AUDIT_REFRESH_SECONDS, AuditGauges
from lookout.sidecar.samples.audit_metrics import COMPONENT as AUDIT_COMPONENT
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.audit_trust import margin_factors
from lookout.sidecar.samples.door import API, GALLERY, LIMITED, WRONG, Door
from lookout.sidecar.samples.guesses import GuessLimiter, GuessSettings
from lookout.sidecar.samples.store import SampleStore, StoreError
from lookout.sidecar.samples.ui import SampleUi
from lookout.sidecar.served_models import LabelSettings, ModelLabels
from lookout.sidecar.settings import SampleSettings, UpstreamSettings, of
from lookout.slo import catalog

if TYPE_CHECKING:  # loaded only with `sample_gallery: fleet`
    from lookout.sidecar.samples.fleet_store import FleetStore

log = logging.getLogger(__name__)

PIPELINE_DRAIN_TIMEOUT = 2.0
WORKER_STOP_TIMEOUT = 20.0  # the lead drains the reference model and the sample writer
LABEL_REFRESH_SECONDS = 1.0


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

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = SidecarMetrics(config.model_name, config.model_version)
        self.models = served_models(config)
        for model in self.models:
            self.metrics.labelled(model.name, model.version).set_model_info(
                model.model_sha256, role="primary", served_name=Path(
                    model.analysis.model_path).name if model.analysis.model_path else "")
        self.draining = False
        self.admin_token = read_admin_token(config)
        self.workers: AnalysisPool | None = None
        self.data_plane: EnvoyDataPlane | None = None
        self.probe: UpstreamProbe | None = None
        self.admin_runner: web.AppRunner | None = None
        self.admin_gate: ConnectionGate | None = None
        self.door: Door | None = None
        self._labels_task: asyncio.Task[None] | None = None
        self._audits_task: asyncio.Task[None] | None = None
        self._store: SampleStore | None = None
        self._fleet: FleetStore | None = None
        self._private = ""
        self._segments: SegmentOwner | None = None
        self._published_margins: dict[str, float] | None = None

    async def start(self) -> None:
        """Envoy serves both data ports; the tap hands exchanges to the analysis
        workers' rings and counts RED; this process keeps the admin port."""
        config = self.config
        channel = of(ChannelSettings, config)
        try:
            check_budget(of(BudgetSettings, config), worker_count(channel), raise_file_limit())
        except BudgetError as error:
            raise StartupError(str(error)) from None
        for role, address in (("listen", config.listen), ("grpc-listen", config.grpc_listen)):
            if address is not None:
                await self._bind(role, address, _bindable(address))
        self._private = tempfile.mkdtemp(prefix="lookout-")
        count = worker_count(channel)
        labels_path = os.path.join(self._private, LABELS_FILE)
        try:
            self._segments = SegmentOwner()
            self.workers = AnalysisPool(channel, worker_settings(config, self.models),
                                        self.metrics, count, wake_dir=self._private,
                                        labels_path=labels_path, margins_path=self._margins,
                                        segments=self._segments)
            self.model_labels = ModelLabels.of(
                of(LabelSettings, config),
                turned_away=self.metrics[catalog.MODEL_LABELS_REFUSED].inc)
            self.data_plane = EnvoyDataPlane(
                of(DataPlaneSettings, config), of(TapSettings, config), self.metrics,
                self.workers.inboxes, count, self._private, self.model_labels, labels_path,
                self._segments)
        except WorkerStartError as error:
            await self._abandon()
            raise StartupError(str(error)) from None
        except (TracingConfigError, ValueError, OSError) as error:
            await self._abandon()
            raise StartupError(f"the Envoy data plane: {error}") from None
        self.workers.start()
        self.metrics.initialise(queues=[OBSERVATION_QUEUE],
                                components=[UpstreamProbe.name, AnalysisPool.name,
                                            COMPONENT, "tap"])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.data_plane.start)
        except (AbiError, EnvoyStartError) as error:
            await self._abandon()
            raise StartupError(str(error)) from None
        if config.discover_models:
            self._labels_task = loop.create_task(self._refresh_labels(self.data_plane))
        if config.sample_dir or config.sample_url:
            self._audits_task = loop.create_task(self._refresh_audits(self._audit_gauges()))
        self.probe = UpstreamProbe(of(UpstreamSettings, config), self.metrics,
                                   GrpcUpstream(config.grpc_upstream)
                                   if config.grpc_listen is not None else None)
        self.probe.start()
        await self._bind("admin", config.admin, self._admin_site())
        log.info("lookout: Envoy (pid %s) serving %s%s -> %s (admin %s, model %s version "
                 "%s)", self.data_plane.process.pid, config.listen,
                 f" and gRPC {config.grpc_listen}" if config.grpc_listen else "",
                 config.upstream, config.admin, config.model_name, config.model_version)

    async def _admin_site(self) -> None:
        config = self.config
        refused = self.metrics[catalog.ADMIN_TOKEN_REFUSED]
        for door, reason in itertools.product((API, GALLERY), (WRONG, LIMITED)):
            refused.labels(door, reason)
        self.door = Door(AdminToken(self.admin_token, config.admin_token_file),
                         GuessLimiter(of(GuessSettings, config)),
                         lambda door, reason: refused.labels(door, reason).inc())
        sample_api = SampleApi(self.door, lambda: self._open_store(), bool(config.sample_dir))
        gallery = SampleUi(self.door, lambda: self._open_store(),
                           bool(config.sample_dir), config.trace_url_template,
                           config.drift_baseline_path)
        assert self.probe is not None
        admin_app = AdminApp(self.metrics, self.probe, lambda: self.analysis_running,
                             lambda: self.draining, sample_api, gallery,
                             self._data_plane_running).build()
        closed = self.metrics[catalog.ADMIN_CONNECTIONS_CLOSED]
        for reason in CLOSE_REASONS:
            closed.labels(reason)
        self.admin_gate = ConnectionGate(of(AdminLimits, config),
                                         lambda reason: closed.labels(reason).inc())
        admin_app.middlewares.insert(0, self.admin_gate.middleware)
        self.admin_runner = web.AppRunner(admin_app, access_log=None, handle_signals=False,
                                          keepalive_timeout=config.admin_idle_timeout)
        await self.admin_runner.setup()
        await GatedSite(self.admin_runner, config.admin.host, config.admin.port,
                        self.admin_gate).start()

    @staticmethod
    async def _refresh_labels(data_plane: EnvoyDataPlane) -> None:
        """Discovered labels admitted and released between scrapes too: the analysis
        workers label by them."""
        while True:
            await asyncio.sleep(LABEL_REFRESH_SECONDS)
            data_plane.labels.refresh()

    def _audit_gauges(self) -> AuditGauges:
        """The store's newest audits on /metrics (`samples/audit_metrics.py`)."""
        gauges = AuditGauges(
            {m.name: m.analysis.class_names for m in self.models},
            lambda: self.metrics.component_error(AUDIT_COMPONENT))
        self.metrics.initialise(components=[AUDIT_COMPONENT])
        self.metrics.add_source(gauges)
        return gauges

    async def _refresh_audits(self, gauges: AuditGauges) -> None:
        """Off the request path: the records are read in a thread, once a minute."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                store = self._audit_store()
            except Exception as error:  # a fleet store that cannot be opened: fail-open
                self.metrics.component_error(AUDIT_COMPONENT)
                log.warning("audit gauges: cannot open the sample store: %s", error)
            else:
                if store is not None:
                    records = AuditRecords(store)
                    await loop.run_in_executor(None, self._read_audits, gauges, records)
            await asyncio.sleep(AUDIT_REFRESH_SECONDS)

    @property
    def _margins(self) -> str:
        """Where the trust bands' margin factors are published for the lead worker."""
        return os.path.join(self._private, MARGINS_FILE)

    def _read_audits(self, gauges: AuditGauges, records: AuditRecords) -> None:
        """One read of the records: the audit gauges, then what each model's newest
        audit teaches its trust band (`samples/audit_trust.py`), published when it
        changed."""
        found = gauges.refresh_from(records.all)
        if found is None:
            return
        factors = margin_factors(found, [model.name for model in self.models])
        if factors != self._published_margins:
            try:
                write_margins(self._margins, factors)
            except OSError as error:
                self.metrics.component_error(AUDIT_COMPONENT)
                log.warning("trust margins: cannot publish them: %s", error)
                return
            self._published_margins = factors

    def _audit_store(self) -> SampleStore | FleetStore | None:
        """Where the audit records are: the fleet's store with `sample_url`, else the
        local one once the lead worker has made it."""
        if self.config.sample_url:
            if self._fleet is None:
                from lookout.sidecar.samples.fleet_store import open_fleet

                self._fleet = open_fleet(of(SampleSettings, self.config))
            return self._fleet
        if not os.path.isdir(self.config.sample_dir):
            return None
        return self._open_store()

    def _data_plane_running(self) -> bool:
        return self.data_plane is not None and self.data_plane.running

    async def _bind(self, role: str, address: Address, listening: Awaitable[None]) -> None:
        try:
            await listening
        except OSError as error:
            await self._abandon()
            raise StartupError(
                f"cannot listen on {address} (the {role} address): "
                f"{error.strerror or error}; choose another with --{role}"
            ) from None

    async def _abandon(self) -> None:
        """Undo a start-up that failed part way."""
        await self._teardown(0.0, 1.0)

    async def _teardown(self, grace: float, worker_timeout: float) -> None:
        """Everything this process started, in order: the probe, Envoy (drained within
        `grace`), the workers (what the rings hold analysed), then the admin port."""
        loop = asyncio.get_running_loop()
        if self.probe is not None:
            await self.probe.stop()
        for task in (self._labels_task, self._audits_task):
            if task is not None:
                task.cancel()
        if self.data_plane is not None:
            await loop.run_in_executor(None, self.data_plane.stop, grace)
        if self.workers is not None:
            await loop.run_in_executor(None, self.workers.stop, worker_timeout)
        if self.admin_gate is not None:
            await self.admin_gate.stop()
        if self.door is not None:
            self.door.flush()
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        if self._store is not None:
            self._store.close()
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)
        if self._segments is not None:
            self._segments.close()

    @property
    def analysis_running(self) -> bool:
        return self.workers is not None and self.workers.running

    def _open_store(self) -> SampleStore | None:
        """The sample store, for reading; written only by the lead analysis worker. With
        `sample_gallery: fleet`, the fleet's store instead (read-only, like the other)."""
        if self.config.sample_gallery == "fleet":
            if self._fleet is None:
                from lookout.sidecar.samples.fleet_store import open_fleet

                self._fleet = open_fleet(of(SampleSettings, self.config))
            return self._fleet  # type: ignore[return-value]  # the same read interface
        if self._store is None and self.config.sample_dir:
            try:
                self._store = SampleStore(self.config.sample_dir, repair=False)
            except StoreError as error:
                log.warning("sample API: %s", error)
        return self._store

    async def stop(self) -> None:
        """Envoy drains (no new connections, in-flight requests finish within the
        grace), then the workers analyse what the rings hold and exit."""
        self.draining = True
        log.info("shutting down: draining in-flight requests (grace %gs)",
                 self.config.shutdown_grace)
        await self._teardown(self.config.shutdown_grace,
                             PIPELINE_DRAIN_TIMEOUT + WORKER_STOP_TIMEOUT)
        log.info("shutdown complete")


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
    await stop.wait()
    await sidecar.stop()


def run(config: Config) -> None:
    run_event_loop(config.event_loop, serve(config))
