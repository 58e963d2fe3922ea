"""The request path: read the body (bounded), forward it, return the upstream's
response, record O(1) metrics, start and end the spans, hand off an Observation.

Nothing here parses, decodes or waits on analysis. The sidecar's own error responses
carry an `X-Lookout-Error` header and a JSON body, and a `sidecar_`-prefixed `code`
label, so they are never mistaken for the upstream's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from yarl import URL

from sidecar.catalog import SIDECAR_CODE_PREFIX
from sidecar.config import Config
from sidecar.headers import add_forwarded, end_to_end
from sidecar.metrics import SidecarMetrics
from sidecar.observation import Observation, ObservationQueue
from sidecar.routes import OTHER_ROUTE, RouteTemplates
from sidecar.upstream import UpstreamFailure, classify_failure

log = logging.getLogger(__name__)

ERROR_HEADER = "X-Lookout-Error"
CLIENT_CLOSED = 499  # nginx's convention for "client went away before the response"
_NO_BODY_STATUSES = frozenset((204, 304))


@dataclass(slots=True)
class _Exchange:
    """What one request accumulates on its way through; turned into telemetry at the end."""

    status: int = 0
    code: str = ""
    request_body: bytes = b""
    response_body: bytes = b""
    response_bytes: int = 0
    response_content_type: str = ""
    truncated: bool = False
    upstream_duration: float | None = None
    headers_sent: bool = False  # past this point a failure can only cut the response


class SidecarError(Exception):
    """A response the sidecar makes itself instead of forwarding one."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


class ProxyHandler:
    """aiohttp handler forwarding every method and path to the upstream."""

    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        metrics: SidecarMetrics,
        tracer: trace.Tracer,
        observations: ObservationQueue | None,
    ) -> None:
        self._config = config
        self._session = session
        self._metrics = metrics
        self._tracer = tracer
        self._observations = observations
        self._routes = RouteTemplates(config.routes)
        self._propagator = get_global_textmap()
        self._upstream_base = config.upstream
        upstream_url = URL(config.upstream)
        self._upstream_host = upstream_url.host or ""
        self._upstream_port = upstream_url.port or 80
        self._model_attributes = {
            "lookout.model.name": config.model_name,
            "lookout.model.version": config.model_version,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        started_at = time.time()
        route = self._routes.label(request.path)
        method = request.method
        server_span = self._tracer.start_span(
            f"{method} {route}" if route != OTHER_ROUTE else method,
            context=self._propagator.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=self._server_attributes(request, route),
        )
        exchange = _Exchange()
        try:
            response = await self._exchange(request, server_span, exchange)
        finally:
            self._finish(request, route, server_span, exchange, started, started_at)
        return response

    async def _exchange(
        self, request: web.Request, server_span: Span, exchange: _Exchange
    ) -> web.StreamResponse:
        try:
            exchange.request_body = await self._read_body(request)
            return await self._forward(request, server_span, exchange)
        except SidecarError as error:
            return await self._send_error(request, server_span, exchange, error)
        except ConnectionResetError:
            exchange.status, exchange.code = CLIENT_CLOSED, f"{SIDECAR_CODE_PREFIX}{CLIENT_CLOSED}"
            return web.Response(status=CLIENT_CLOSED)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise SidecarError(
                413, "body-too-large",
                f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                "(max_body_bytes)",
            )
        if not request.body_exists:
            return b""
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise SidecarError(
                413, "body-too-large",
                f"request body exceeds the limit of {limit} bytes (max_body_bytes)",
            ) from None
        except aiohttp.http_exceptions.HttpProcessingError as error:
            raise SidecarError(400, "bad-request-body", f"malformed request body: {error}") \
                from None

    async def _forward(
        self, request: web.Request, server_span: Span, exchange: _Exchange
    ) -> web.StreamResponse:
        headers = end_to_end(request.headers)
        add_forwarded(headers, request.remote, request.scheme, request.host)
        url = self._upstream_base + request.raw_path
        client_span = self._tracer.start_span(
            request.method,
            context=trace.set_span_in_context(server_span),
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": request.method,
                "url.full": url,
                "server.address": self._upstream_host,
                "server.port": self._upstream_port,
                **self._model_attributes,
            },
        )
        self._propagator.inject(headers, context=trace.set_span_in_context(client_span))
        sent = time.perf_counter()
        try:
            async with self._session.request(
                request.method, URL(url, encoded=True), data=exchange.request_body or None,
                headers=headers, allow_redirects=False,
            ) as upstream:
                client_span.set_attribute("http.response.status_code", upstream.status)
                if upstream.status >= 400:
                    client_span.set_status(Status(StatusCode.ERROR))
                    client_span.set_attribute("error.type", str(upstream.status))
                exchange.status, exchange.code = upstream.status, str(upstream.status)
                exchange.response_content_type = upstream.headers.get("Content-Type", "")
                if self._buffered(request, upstream):
                    return await self._relay_buffered(request, upstream, exchange, sent)
                return await self._relay_streamed(request, upstream, exchange, sent)
        except ConnectionResetError:
            raise  # the client went away while we wrote to it: not the upstream's fault
        except (aiohttp.ClientError, TimeoutError) as error:
            failure = classify_failure(error, self._config)
            client_span.set_status(Status(StatusCode.ERROR, failure.detail))
            client_span.set_attribute("error.type", failure.kind)
            if exchange.headers_sent:
                return self._abort_midstream(request, exchange, failure)
            raise SidecarError(failure.status, failure.kind, failure.detail) from None
        finally:
            if exchange.upstream_duration is None:
                exchange.upstream_duration = time.perf_counter() - sent
            client_span.end()

    def _buffered(self, request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
        if request.method == "HEAD" or upstream.status in _NO_BODY_STATUSES:
            return True
        length = upstream.content_length
        return length is not None and length <= self._config.stream_threshold_bytes

    async def _relay_buffered(
        self, request: web.Request, upstream: aiohttp.ClientResponse,
        exchange: _Exchange, sent: float,
    ) -> web.StreamResponse:
        body = await upstream.read()
        exchange.upstream_duration = time.perf_counter() - sent
        exchange.response_body = body
        exchange.response_bytes = len(body)
        headers = end_to_end(upstream.headers)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=headers)
        if request.method == "HEAD" and upstream.content_length is not None:
            response.content_length = upstream.content_length
        elif upstream.status not in _NO_BODY_STATUSES:
            response.content_length = len(body)
        await response.prepare(request)
        if body:
            await response.write(body)
        await response.write_eof()
        return response

    async def _relay_streamed(
        self, request: web.Request, upstream: aiohttp.ClientResponse,
        exchange: _Exchange, sent: float,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=end_to_end(upstream.headers))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        elif request.version >= (1, 1):
            response.enable_chunked_encoding()
        await response.prepare(request)
        exchange.headers_sent = True
        captured = bytearray()
        cap = self._config.observe_max_bytes
        async for chunk in upstream.content.iter_any():
            exchange.response_bytes += len(chunk)
            if len(captured) < cap:
                captured += chunk[: cap - len(captured)]
            await response.write(chunk)
        exchange.upstream_duration = time.perf_counter() - sent
        exchange.response_body = bytes(captured)
        exchange.truncated = exchange.response_bytes > len(captured)
        await response.write_eof()
        return response

    def _abort_midstream(
        self, request: web.Request, exchange: _Exchange, failure: UpstreamFailure
    ) -> web.StreamResponse:
        """The status line is gone already; closing the connection is the only honest
        signal left to the client (it sees a short chunked body or length)."""
        log.warning("upstream failed mid-response (%s): %s", failure.kind, failure.detail)
        exchange.code = f"{SIDECAR_CODE_PREFIX}{failure.status}"
        if request.transport is not None:
            request.transport.close()
        return web.StreamResponse(status=exchange.status)

    async def _send_error(
        self, request: web.Request, server_span: Span, exchange: _Exchange,
        error: SidecarError,
    ) -> web.StreamResponse:
        exchange.status, exchange.code = error.status, f"{SIDECAR_CODE_PREFIX}{error.status}"
        server_span.set_attribute("error.type", error.kind)
        trace_id = format(server_span.get_span_context().trace_id, "032x")
        body = json.dumps({
            "error": error.kind,
            "message": error.detail,
            "upstream": self._upstream_base,
            "origin": "lookout",
            "trace_id": trace_id,
        }).encode()
        exchange.response_body = body
        exchange.response_bytes = len(body)
        exchange.response_content_type = "application/json"
        headers = CIMultiDict({ERROR_HEADER: error.kind, "Content-Type": "application/json"})
        if error.status == 413:
            headers["Connection"] = "close"  # the unread body must not be parsed as a request
        response = web.Response(status=error.status, body=body, headers=headers)
        await response.prepare(request)
        await response.write_eof()
        return response

    def _server_attributes(self, request: web.Request, route: str) -> dict[str, object]:
        attributes: dict[str, object] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "network.protocol.version": f"{request.version.major}.{request.version.minor}",
            **self._model_attributes,
        }
        if route != OTHER_ROUTE:
            attributes["http.route"] = route
        if request.remote:
            attributes["client.address"] = request.remote
        user_agent = request.headers.get("User-Agent")
        if user_agent:
            attributes["user_agent.original"] = user_agent
        return attributes

    def _finish(
        self, request: web.Request, route: str, server_span: Span, exchange: _Exchange,
        started: float, started_at: float,
    ) -> None:
        """Telemetry for a finished request. Fail-open: a failure here is counted and
        logged, and the response the client already has is untouched."""
        try:
            duration = time.perf_counter() - started
            if not exchange.code:  # an unexpected exception escaped _exchange
                exchange.status, exchange.code = 500, f"{SIDECAR_CODE_PREFIX}500"
            span_context = server_span.get_span_context()
            trace_id = format(span_context.trace_id, "032x")
            if exchange.status:
                server_span.set_attribute("http.response.status_code", exchange.status)
            server_span.set_attribute("http.request.body.size", len(exchange.request_body))
            server_span.set_attribute("http.response.body.size", exchange.response_bytes)
            server_error = exchange.status >= 500
            if server_error:
                server_span.set_status(Status(StatusCode.ERROR))
            server_span.end()
            exported = span_context.trace_flags.sampled or server_error
            self._metrics.record_request(
                route, exchange.code, duration, exchange.upstream_duration,
                len(exchange.request_body), exchange.response_bytes,
                trace_id if exported else None,
            )
            if self._observations is not None:
                self._observations.offer(Observation(
                    started_at=started_at,
                    method=request.method,
                    path=request.path,
                    route=route,
                    status=exchange.status,
                    code=exchange.code,
                    request_content_type=request.headers.get("Content-Type", ""),
                    request_body=exchange.request_body,
                    response_content_type=exchange.response_content_type,
                    response_body=exchange.response_body,
                    response_truncated=exchange.truncated,
                    duration=duration,
                    upstream_duration=exchange.upstream_duration,
                    trace_id=trace_id,
                    span_id=format(span_context.span_id, "016x"),
                    trace_sampled=bool(span_context.trace_flags.sampled),
                    model=self._config.model_name,
                    version=self._config.model_version,
                ))
        except Exception:
            self._metrics.component_error("telemetry")
            log.exception("recording telemetry failed; the response was not affected")
