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

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.trace import Span
from yarl import URL

from sidecar.catalog import sidecar_code
from sidecar.config import Config
from sidecar.headers import add_forwarded, end_to_end
from sidecar.routes import RouteTemplates
from sidecar.telemetry import Exchange, RequestTelemetry
from sidecar.upstream import UpstreamFailure, classify_failure

log = logging.getLogger(__name__)

ERROR_HEADER = "X-Lookout-Error"
CLIENT_CLOSED = 499  # nginx's convention for "client went away before the response"
_NO_BODY_STATUSES = frozenset((204, 304))


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
        telemetry: RequestTelemetry,
    ) -> None:
        self._config = config
        self._session = session
        self._telemetry = telemetry
        self._routes = RouteTemplates(config.routes)
        self._upstream_base = config.upstream
        upstream_url = URL(config.upstream)
        self._upstream_host = upstream_url.host or ""
        self._upstream_port = upstream_url.port or 80

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request.method, request.path, self._routes.label(request.path),
                            request.headers)
        server_span = self._telemetry.start_server_span(
            exchange, request.headers, scheme=request.scheme,
            protocol_version=f"{request.version.major}.{request.version.minor}",
            client_address=request.remote,
        )
        try:
            return await self._exchange(request, server_span, exchange)
        except BaseException:
            if not exchange.code:  # a bug escaped: aiohttp answers 500, we count it
                exchange.status, exchange.code = 500, sidecar_code(500)
            raise
        finally:
            self._telemetry.finish(exchange, server_span)

    async def _exchange(
        self, request: web.BaseRequest, server_span: Span, exchange: Exchange
    ) -> web.StreamResponse:
        try:
            exchange.request_body = await self._read_body(request)
            return await self._forward(request, server_span, exchange)
        except SidecarError as error:
            return await self._send_error(request, server_span, exchange, error)
        except ConnectionResetError:
            exchange.status, exchange.code = CLIENT_CLOSED, sidecar_code(CLIENT_CLOSED)
            return web.Response(status=CLIENT_CLOSED)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
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
        self, request: web.BaseRequest, server_span: Span, exchange: Exchange
    ) -> web.StreamResponse:
        headers = end_to_end(request.headers)
        add_forwarded(headers, request.remote, request.scheme, request.host)
        url = self._upstream_base + request.raw_path
        call = self._telemetry.start_client_span(
            exchange, server_span, url, self._upstream_host, self._upstream_port, headers
        )
        sent = time.perf_counter()
        streamed: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method, URL(url, encoded=True), data=exchange.request_body or None,
                headers=headers, allow_redirects=False,
            ) as upstream:
                self._telemetry.upstream_status(call, upstream.status)
                exchange.status, exchange.code = upstream.status, str(upstream.status)
                exchange.response_headers = upstream.headers
                if self._buffered(request, upstream):
                    return await self._relay_buffered(request, upstream, exchange, sent)
                streamed = self._relayed_response(request, upstream, upstream.content_length,
                                                  chunked=True)
                await streamed.prepare(request)
                await self._pump(upstream, streamed, exchange, sent)
                return streamed
        except ConnectionResetError:
            raise  # the client went away while we wrote to it: not the upstream's fault
        except (aiohttp.ClientError, TimeoutError) as error:
            failure = classify_failure(error, self._config)
            self._telemetry.upstream_failure(call, failure.kind, failure.detail)
            if streamed is not None and streamed.prepared:
                return self._abort_midstream(request, streamed, exchange, failure)
            raise SidecarError(failure.status, failure.kind, failure.detail) from None
        finally:
            if exchange.upstream_duration is None:
                exchange.upstream_duration = time.perf_counter() - sent
            self._telemetry.end_client_span(call)

    def _buffered(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse) -> bool:
        if request.method == "HEAD" or upstream.status in _NO_BODY_STATUSES:
            return True
        length = upstream.content_length
        return length is not None and length <= self._config.stream_threshold_bytes

    async def _relay_buffered(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse,
        exchange: Exchange, sent: float,
    ) -> web.StreamResponse:
        body = await upstream.read()
        exchange.upstream_duration = time.perf_counter() - sent
        exchange.response_body = body
        exchange.response_bytes = len(body)
        length = upstream.content_length if request.method == "HEAD" else (
            None if upstream.status in _NO_BODY_STATUSES else len(body))
        response = self._relayed_response(request, upstream, length, chunked=False)
        await response.prepare(request)
        if body:
            await response.write(body)
        await response.write_eof()
        return response

    @staticmethod
    def _relayed_response(
        request: web.BaseRequest, upstream: aiohttp.ClientResponse, length: int | None,
        chunked: bool,
    ) -> web.StreamResponse:
        """The upstream's status and end-to-end headers, with a known length or (for an
        HTTP/1.1 stream of unknown length) chunked encoding."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=end_to_end(upstream.headers))
        if length is not None:
            response.content_length = length
        elif chunked and request.version >= (1, 1):
            response.enable_chunked_encoding()
        return response

    async def _pump(
        self, upstream: aiohttp.ClientResponse, response: web.StreamResponse,
        exchange: Exchange, sent: float,
    ) -> None:
        """Relay the body chunk by chunk, keeping the first observe_max_bytes."""
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

    @staticmethod
    def _abort_midstream(
        request: web.BaseRequest, response: web.StreamResponse, exchange: Exchange,
        failure: UpstreamFailure,
    ) -> web.StreamResponse:
        """The status line is gone already; closing the connection is the only honest
        signal left to the client (it sees a short chunked body or length)."""
        log.warning("upstream failed mid-response (%s): %s", failure.kind, failure.detail)
        exchange.code = sidecar_code(failure.status)
        if request.transport is not None:
            request.transport.close()
        return response

    async def _send_error(
        self, request: web.BaseRequest, server_span: Span, exchange: Exchange,
        error: SidecarError,
    ) -> web.StreamResponse:
        exchange.status, exchange.code = error.status, sidecar_code(error.status)
        exchange.error_kind = error.kind
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
        headers = CIMultiDict({ERROR_HEADER: error.kind, "Content-Type": "application/json"})
        exchange.response_headers = headers
        if error.status == 413:
            headers["Connection"] = "close"  # the unread body must not be parsed as a request
        response = web.Response(status=error.status, body=body, headers=headers)
        await response.prepare(request)
        await response.write_eof()
        return response
