"""The admin port: metrics, liveness and readiness, the sample API and the gallery,
away from user traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from lookout.sidecar.dataplane.upstream_probe import UpstreamProbe
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.api import SampleApi
from lookout.sidecar.samples.ui import SampleUi


class AdminApp:
    """/metrics (Prometheus text or OpenMetrics by Accept), /healthz, /readyz."""

    def __init__(
        self,
        metrics: SidecarMetrics,
        probe: UpstreamProbe,
        pipeline_running: Callable[[], bool],
        draining: Callable[[], bool],
        samples: SampleApi | None = None,
        gallery: SampleUi | None = None,
        data_plane_running: Callable[[], bool] = lambda: True,
    ) -> None:
        self._metrics = metrics
        self._probe = probe
        self._pipeline_running = pipeline_running
        self._draining = draining
        self._samples = samples
        self._gallery = gallery
        self._data_plane_running = data_plane_running

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self._samples is not None:
            self._samples.add_routes(app)
        if self._gallery is not None:
            self._gallery.add_routes(app)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # lookout's registry, the workers' metric files, the tap's counters and Envoy's
        # stats: read off the event loop, which keeps serving this process's requests
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, self._metrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready only when user traffic would work and be observed."""
        upstream_ok, upstream_detail = await self._probe.check()
        checks = {
            "upstream": {"ok": upstream_ok, "detail": upstream_detail},
            "pipeline": {"ok": self._pipeline_running(),
                         "detail": "running" if self._pipeline_running() else "stopped"},
            "data_plane": {"ok": self._data_plane_running(),
                           "detail": "running" if self._data_plane_running() else "down"},
            "shutdown": {"ok": not self._draining(),
                         "detail": "draining" if self._draining() else "serving"},
        }
        ready = all(check["ok"] for check in checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )
