"""The same data plane as an ASGI app, to compare server stacks in bench/proxy.py.

It reuses lookout's telemetry (metrics catalog, tracer set-up, observation queue,
route templates, header rules) and its upstream pool, so the only difference from
`lookout serve` is the HTTP server: uvicorn+httptools or granian.
Buffered bodies only: enough for the benchmark's fixed-size exchanges.

uvicorn bench.asgi_proxy:app --loop uvloop --http httptools
granian --interface asgi --loop uvloop bench.asgi_proxy:app
"""

from __future__ import annotations

import time

from multidict import CIMultiDict

from lookout.sidecar.config import load_config
from lookout.sidecar.pipeline.analysis import TrafficAnalyzer
from lookout.sidecar.pipeline.observation import ObservationPipeline, ObservationQueue
from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.proxy.headers import add_forwarded, end_to_end, end_to_end_raw
from lookout.sidecar.proxy.routes import RouteTemplates
from lookout.sidecar.proxy.telemetry import Exchange, RequestTelemetry
from lookout.sidecar.proxy.upstream_client import UpstreamError, UpstreamPool
from lookout.sidecar.runtime.event_loop import tune_runtime
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.tracing import build_tracing
from lookout.sidecar.settings import AnalysisSettings, ModelIdentity, UpstreamSettings, of
from lookout.slo.catalog import SIDECAR_CODE_PREFIX


class AsgiProxy:
    def __init__(self) -> None:
        self.config = load_config()
        self.upstream = of(UpstreamSettings, self.config)
        self.metrics = SidecarMetrics(self.config.model_name, self.config.model_version)
        self.tracing = build_tracing()
        self.routes = RouteTemplates(self.config.routes)
        self.pool: UpstreamPool | None = None

    async def _startup(self) -> None:
        self.pool = UpstreamPool(self.upstream)
        self.queue = ObservationQueue(self.config.observation_queue_size, self.metrics)
        analyzer = TrafficAnalyzer(of(AnalysisSettings, self.config), self.metrics)
        self.pipeline = ObservationPipeline(self.queue, [analyzer], self.metrics,
                                            self.tracing)
        self.pipeline.start()
        self.telemetry = RequestTelemetry(of(ModelIdentity, self.config), self.metrics,
                                          self.tracing, self.queue)
        tune_runtime()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self._startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.pool is not None:
                        await self.pool.close()
                    self.tracing.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.pool is None:  # servers that skip lifespan
            await self._startup()
        await self._proxy(scope, receive, send)

    async def _proxy(self, scope, receive, send) -> None:
        headers = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
        )
        path = scope["path"]
        exchange = Exchange(scope["method"], path, self.routes.label(path), headers)
        client = scope.get("client")
        self.telemetry.begin(
            exchange, headers, scheme=scope["scheme"],
            protocol_version=scope.get("http_version", "1.1"),
            client_address=client[0] if client else None,
        )
        try:
            await self._exchange(scope, receive, send, headers, exchange)
        finally:
            self.telemetry.finish(exchange)

    async def _exchange(self, scope, receive, send, headers: CIMultiDict[str],
                        exchange: Exchange) -> None:
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        exchange.request_body = b"".join(chunks)
        exchange.request_bytes = len(exchange.request_body)

        forward = end_to_end(headers)
        client = scope.get("client")
        add_forwarded(forward, client[0] if client else None, scope["scheme"],
                      headers.get("Host"))
        target = scope.get("raw_path", exchange.path.encode()).decode()
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        if exchange.request_body:
            forward["Content-Length"] = str(len(exchange.request_body))
        call = self.telemetry.upstream_call(
            exchange, self.config.upstream + target, self.pool.host, self.pool.port, forward
        )
        sent = time.perf_counter()
        try:
            upstream = await self.pool.request(exchange.method, target, forward.items(),
                                               exchange.request_body or None,
                                               len(exchange.request_body))
            try:
                self.telemetry.upstream_status(call, upstream.status)
                exchange.response_body = await upstream.read()
                exchange.status, exchange.code = upstream.status, str(upstream.status)
                exchange.response_headers = RawHeaders(upstream.raw_headers)
                response_headers = CIMultiDict(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in end_to_end_raw(upstream.raw_headers))
            finally:
                upstream.release()
        except UpstreamError as failure:
            self.telemetry.upstream_failure(call, failure.kind, failure.detail)
            exchange.error_kind = failure.kind
            exchange.status = failure.status
            exchange.code = f"{SIDECAR_CODE_PREFIX}{failure.status}"
            exchange.response_body = failure.detail.encode()
            response_headers = CIMultiDict({"X-Lookout-Error": failure.kind})
        finally:
            exchange.upstream_duration = time.perf_counter() - sent
            self.telemetry.end_call(call)

        exchange.response_bytes = len(exchange.response_body)
        response_headers["Content-Length"] = str(exchange.response_bytes)
        await send({"type": "http.response.start", "status": exchange.status, "headers": [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers.items()
        ]})
        await send({"type": "http.response.body", "body": exchange.response_body})


app = AsgiProxy()
