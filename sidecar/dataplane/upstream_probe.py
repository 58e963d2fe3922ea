"""Is the inference container there: the readiness probe, over HTTP (a TCP connect or
a GET on `ready_path`) and, with a gRPC port, over one gRPC channel of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import UpstreamSettings

if TYPE_CHECKING:  # grpcio loads only with a gRPC port
    from grpc import aio

log = logging.getLogger(__name__)

SERVER_READY = "/inference.GRPCInferenceService/ServerReady"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# HealthCheckResponse{status: SERVING} on the wire: field 1, varint 1. The health proto
# is not in lookout's descriptor set, and this is all of it that readiness needs
SERVING = b"\x08\x01"


async def grpc_ready(channel: aio.Channel, timeout: float) -> tuple[bool, str]:
    """The V2 `ServerReady`, or the standard health check when the server has no V2
    service. Raises aio.AioRpcError when the server cannot be asked."""
    import grpc
    from grpc import aio

    from lookout.sidecar.pipeline.protos import message_class

    try:
        answer = await channel.unary_unary(SERVER_READY)(b"", timeout=timeout)
    except aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.UNIMPLEMENTED:
            raise
        answer = await channel.unary_unary(HEALTH_CHECK)(b"", timeout=timeout)
        return answer == SERVING, f"gRPC {HEALTH_CHECK} -> " + (
            "SERVING" if answer == SERVING else "not serving")
    ready = message_class("inference.ServerReadyResponse").FromString(answer).ready
    return ready, f"gRPC {SERVER_READY} -> ready={str(ready).lower()}"


class GrpcUpstream:
    """The gRPC upstream as the probe asks it where lookout has no gRPC port of its
    own (Envoy serves it): its address, and one channel for the probe alone."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: aio.Channel | None = None

    @property
    def channel(self) -> aio.Channel:
        from grpc import aio

        if self._channel is None:
            self._channel = aio.insecure_channel(self.address)
        return self._channel


class UpstreamProbe:
    """Is the inference container reachable? A TCP connect, or a GET on `ready_path`.

    Runs every `probe_interval` seconds to keep lookout_upstream_up current and on
    demand for /readyz. Never touches the request path.
    """

    name = "upstream_probe"

    def __init__(self, config: UpstreamSettings, metrics: SidecarMetrics,
                 grpc: GrpcUpstream | None = None) -> None:
        self._config = config
        self._grpc = grpc
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        parts = urlsplit(config.upstream)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._task: asyncio.Task[None] | None = None
        self.last_result: tuple[bool, str] = (False, "not probed yet")

    async def check(self) -> tuple[bool, str]:
        timeout = self._config.connect_timeout
        try:
            if self._config.ready_path:
                status = await asyncio.wait_for(self._get(self._config.ready_path),
                                                timeout + 1.0)
                result = (200 <= status < 300, f"GET {self._config.ready_path} -> {status}")
            else:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port), timeout
                )
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                result = (True, f"TCP connect to {self._host}:{self._port} ok")
        except (OSError, TimeoutError, aiohttp.ClientError) as error:
            reason = str(error) or type(error).__name__
            result = (False, f"{self._config.upstream} unreachable: {reason}")
        if result[0] and self._grpc is not None:
            ready, detail = await self._check_grpc(timeout)
            result = (ready, f"{result[1]}; {detail}")
        if result[0] != self.last_result[0]:
            log.log(logging.INFO if result[0] else logging.WARNING, "upstream probe: %s",
                    result[1])
        self.last_result = result
        self._metrics.set_upstream_up(result[0])
        return result

    async def _check_grpc(self, timeout: float) -> tuple[bool, str]:
        from grpc import aio

        address = self._grpc.address
        try:
            ready, detail = await grpc_ready(self._grpc.channel, timeout + 1.0)
        except aio.AioRpcError as error:
            return False, f"gRPC {address} unreachable: {error.code().name} {error.details()}"
        except Exception as error:  # an answer that is not a ServerReadyResponse
            return False, f"gRPC {address}: unexpected answer ({error})"
        return ready, f"{detail} ({address})"

    async def _get(self, path: str) -> int:
        if self._session is None:  # one keep-alive connection, the probe's own
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(connect=self._config.connect_timeout,
                                              total=self._config.connect_timeout + 1.0))
        async with self._session.get(self._config.upstream.rstrip("/") + path,
                                     allow_redirects=False) as response:
            await response.read()
            return response.status

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="upstream-probe")

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                self._metrics.component_error(self.name)
                log.exception("upstream probe failed unexpectedly")
            await asyncio.sleep(self._config.probe_interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
