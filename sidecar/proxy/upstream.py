"""Is the inference container there: the readiness probe, through the request path's
own upstream pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from lookout.sidecar.proxy.upstream_client import UpstreamError, UpstreamPool
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import UpstreamSettings

log = logging.getLogger(__name__)


class UpstreamProbe:
    """Is the inference container reachable? A TCP connect, or a GET on `ready_path`.

    Runs every `probe_interval` seconds to keep lookout_upstream_up current and on
    demand for /readyz. Never touches the request path.
    """

    name = "upstream_probe"

    def __init__(self, config: UpstreamSettings, pool: UpstreamPool,
                 metrics: SidecarMetrics) -> None:
        self._config = config
        self._pool = pool
        self._metrics = metrics
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
        except (OSError, TimeoutError, UpstreamError) as error:
            reason = str(error) or type(error).__name__
            result = (False, f"{self._config.upstream} unreachable: {reason}")
        if result[0] != self.last_result[0]:
            log.log(logging.INFO if result[0] else logging.WARNING, "upstream probe: %s",
                    result[1])
        self.last_result = result
        self._metrics.set_upstream_up(result[0])
        return result

    async def _get(self, path: str) -> int:
        response = await self._pool.request("GET", path, [("Host", self._pool.authority)],
                                            None, None)
        try:
            await response.read()
            return response.status
        finally:
            response.release()

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
