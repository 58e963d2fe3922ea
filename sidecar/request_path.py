"""What every request-path process runs: the data port's server, its upstream pool and
the request telemetry, and the observation hand-off to the analysis workers' rings.
The main process (`server.py`) and each extra request-path process build it alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from lookout.sidecar.config import Config
from lookout.sidecar.pipeline import wire
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.pipeline.observation import OBSERVATION_QUEUE, Observation
from lookout.sidecar.proxy.handler import ProxyHandler
from lookout.sidecar.proxy.http1 import DataPortServer
from lookout.sidecar.proxy.messages import ClientLimits
from lookout.sidecar.proxy.telemetry import RequestTelemetry
from lookout.sidecar.proxy.upstream_client import UpstreamPool
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.tracing import Tracing
from lookout.sidecar.served_models import ModelLabels
from lookout.sidecar.settings import (
    GrpcSettings,
    ModelIdentity,
    RelaySettings,
    UpstreamSettings,
    of,
)


def client_limits(config: Config) -> ClientLimits:
    return ClientLimits(
        head_timeout=config.client_head_timeout, body_timeout=config.client_body_timeout,
        keepalive_timeout=config.client_keepalive_timeout,
        max_connections=config.max_client_connections,
        max_head_bytes=config.max_head_bytes, max_body_bytes=config.max_body_bytes,
    )


def model_labels(config: Config) -> ModelLabels:
    """The `model`/`version` labels the path names: the configured models, and with
    `discover_models` the ones the server answers for."""
    return ModelLabels.of(config)


class ObservationRings:
    """This process's ring to each analysis worker. `offer` is the request path's whole
    hand-off: encode the exchange's facts, copy the bodies into the next ring with room,
    return; when none has room the observation is dropped and counted in
    lookout_queue_dropped_total{queue="observations"}. It never waits."""

    def __init__(self, rings: Sequence[Ring], metrics: SidecarMetrics) -> None:
        self.rings = list(rings)
        self._metrics = metrics
        self._next = 0

    def offer(self, observation: Observation) -> bool:
        parts = wire.encode(observation)
        rings = self.rings
        for step in range(len(rings)):
            index = (self._next + step) % len(rings)
            if rings[index].put(parts):
                self._next = index + 1
                return True
        self._metrics.queue_dropped(OBSERVATION_QUEUE)
        return False


class RequestPath:
    """The data ports of one process, from the client's connection to the upstream's:
    HTTP, and gRPC when `grpc_listen` is set."""

    def __init__(self, config: Config, metrics: SidecarMetrics, tracing: Tracing,
                 observations: ObservationRings | None,
                 on_refused: Callable[[str], None] | None = None,
                 pool: UpstreamPool | None = None) -> None:
        self.config = config
        self.pool = pool or UpstreamPool(of(UpstreamSettings, config))
        refused = on_refused or metrics.client_refused
        self.telemetry = RequestTelemetry(of(ModelIdentity, config), metrics, tracing,
                                          observations, model_labels(config))
        handler = ProxyHandler(of(RelaySettings, config), self.pool, self.telemetry, refused)
        self.server = DataPortServer(handler.handle, client_limits(config), refused)
        self.grpc = None
        if config.grpc_listen is not None:  # imported only then: grpcio costs ~12 MB
            from lookout.sidecar.proxy.grpc_port import GrpcDataPort
            self.grpc = GrpcDataPort(of(GrpcSettings, config), self.telemetry, refused)

    async def start(self, *, reuse_port: bool) -> None:
        await self.server.start(self.config.listen.host, self.config.listen.port,
                                reuse_port=reuse_port)

    async def start_grpc(self, *, reuse_port: bool) -> None:
        if self.grpc is not None:
            address = self.config.grpc_listen
            await self.grpc.start(address.host, address.port, reuse_port=reuse_port)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish within `grace`, close the pool."""
        if self.grpc is None:
            await self.server.stop(grace)
        else:
            await asyncio.gather(self.server.stop(grace), self.grpc.stop(grace))
        await self.pool.close()
