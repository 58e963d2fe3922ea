"""The request path: stream the body (bounded) to the upstream, return the upstream's
response, record O(1) metrics, start and end the spans, hand off an Observation.

Nothing here parses, decodes or waits on analysis. Request bodies are forwarded byte
for byte with their Content-Encoding; a copy of at most `observe_max_bytes` is kept
for analysis. The sidecar's own error responses
carry an `X-Lookout-Error` header and a JSON body, and a `sidecar_`-prefixed `code`
label, so they are never mistaken for the upstream's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from multidict import CIMultiDict

from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.proxy.headers import add_forwarded, end_to_end, end_to_end_raw
from lookout.sidecar.proxy.messages import IncomingRequest, Refusal, ResponseWriter, error_body
from lookout.sidecar.proxy.routes import RouteTemplates
from lookout.sidecar.proxy.target import OriginTarget, parse_target
from lookout.sidecar.proxy.telemetry import Exchange, RequestTelemetry
from lookout.sidecar.proxy.tunnel import Tunnel
from lookout.sidecar.proxy.upstream_client import UpstreamError, UpstreamPool, UpstreamResponse
from lookout.sidecar.settings import RelaySettings
from lookout.slo.catalog import sidecar_code

log = logging.getLogger(__name__)

ERROR_HEADER = "X-Lookout-Error"
CLIENT_CLOSED = 499  # nginx's convention for "client went away before the response"
_NO_BODY_STATUSES = frozenset((204, 304))
_SWITCH_HEADERS = frozenset((b"connection", b"upgrade"))


class SidecarError(Exception):
    """A response the sidecar makes itself instead of forwarding one."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


class BodyCopy:
    """The first `cap` bytes of a body streaming past, for analysis, and its length."""

    __slots__ = ("_cap", "_captured", "seen")

    def __init__(self, cap: int, declared: int | None = None) -> None:
        """A body that declares more than `cap` bytes is not copied at all: only a whole
        body can be decoded, so a prefix would cost a copy and channel space for
        nothing. Its length is still counted and it is still marked truncated."""
        if declared is not None and declared > cap:
            cap = 0
        self._cap, self._captured, self.seen = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        if len(self._captured) < self._cap:
            self._captured += chunk[: self._cap - len(self._captured)]

    @property
    def data(self) -> bytes:
        return bytes(self._captured)

    @property
    def truncated(self) -> bool:
        return self.seen > len(self._captured)


class ProxyHandler:
    """Forwards every origin-form request to the configured upstream, and only there."""

    def __init__(
        self,
        config: RelaySettings,
        pool: UpstreamPool,
        telemetry: RequestTelemetry,
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._config = config
        self._on_refused = on_refused
        self._pool = pool
        self._telemetry = telemetry
        self._routes = RouteTemplates(config.routes)
        self._upstream_base = config.upstream
        parts = urlsplit(config.upstream)
        self._origin = f"{parts.scheme}://{pool.authority}"
        self._base_path = parts.path.rstrip("/")

    def upstream_target(self, target: OriginTarget) -> str:
        """The request target sent upstream: the configured base path joined with the
        parsed origin-form path and query. The host and port are the pool's, always the
        configuration's, whatever the client's target said."""
        if target.asterisk:
            return "*"
        return self._base_path + target.path_and_query

    async def handle(self, request: IncomingRequest, response: ResponseWriter) -> None:
        try:
            target = parse_target(request.method, request.target, request.headers.get("Host"))
        except Refusal as refused:
            target, refusal = OriginTarget("/", ""), refused
        else:
            refusal = None
        tunnel: Tunnel | None = None
        exchange = Exchange(request.method, target.path, self._routes.label(target.path),
                            RawHeaders(request.raw_headers))
        self._telemetry.begin(exchange, request.headers, scheme="http",
                              protocol_version=request.version,
                              client_address=request.remote)
        try:
            if refusal is not None:
                response.close_after = True
                self._on_refused(refusal.reason)
                raise refusal
            tunnel = await self._forward(request, response, target, exchange)
        except (SidecarError, Refusal) as error:
            await self._send_error(request, response, exchange, error)
        except ConnectionResetError:
            exchange.status, exchange.code = CLIENT_CLOSED, sidecar_code(CLIENT_CLOSED)
        except BaseException:
            if not exchange.code:  # a bug escaped: the connection closes, we count it
                exchange.status, exchange.code = 500, sidecar_code(500)
            raise
        finally:
            self._telemetry.finish(exchange)  # a tunnel's exchange ends with its 101
        if tunnel is not None:
            await tunnel.wait()

    def _keep_request_copy(self, exchange: Exchange, body: bytes) -> None:
        exchange.request_bytes = len(body)
        exchange.request_body = body[: self._config.observe_max_bytes]
        exchange.request_truncated = len(body) > len(exchange.request_body)

    async def _request_body(self, request: IncomingRequest,
                            exchange: Exchange) -> AsyncIterator[bytes]:
        """The client's body as it arrives, copying the first observe_max_bytes."""
        copy = BodyCopy(self._config.observe_max_bytes, request.content_length)
        async for chunk in request.body.chunks():
            copy.add(chunk)
            exchange.request_bytes = copy.seen
            yield chunk
        exchange.request_body, exchange.request_truncated = copy.data, copy.truncated

    async def _forward(
        self, request: IncomingRequest, response: ResponseWriter, target: OriginTarget,
        exchange: Exchange,
    ) -> Tunnel | None:
        """Relay one exchange; returns the tunnel when the upstream switched protocols."""
        headers = end_to_end(request.headers)
        if request.upgrade:  # hop-by-hop, asked of the next hop again
            headers["Connection"], headers["Upgrade"] = "Upgrade", request.upgrade
        headers.popall("Expect", None)  # answered here; the upstream must not wait for it
        add_forwarded(headers, request.remote, "http", request.headers.get("Host"))
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        path = self.upstream_target(target)
        call = self._telemetry.upstream_call(exchange, self._origin + path,
                                             self._pool.host, self._pool.port, headers)
        response.continue_if_expected()
        if request.body.complete:  # small bodies arrive whole: one write, no generator
            body: bytes | AsyncIterator[bytes] | None = request.body.take_all() or None
            self._keep_request_copy(exchange, body or b"")
            if body is not None:  # a chunked body that arrived whole goes with its length
                headers["Content-Length"] = str(len(body))
        else:
            body = self._request_body(request, exchange)
        sent = time.perf_counter()
        upstream: UpstreamResponse | None = None
        try:
            upstream = await self._pool.request(request.method, path, headers.items(), body,
                                                request.content_length,
                                                upgrade=bool(request.upgrade))
            self._telemetry.upstream_status(call, upstream.status)
            exchange.status, exchange.code = upstream.status, str(upstream.status)
            exchange.response_headers = RawHeaders(upstream.raw_headers)
            if upstream.status == 101:
                return self._switch(response, upstream, exchange, sent)
            if request.upgrade:
                response.close_after = True  # declined: this connection ends with it
            if self._buffered(request, upstream):
                await self._relay_buffered(request, response, upstream, exchange, sent)
            else:
                self._start_relay(request, response, upstream, upstream.content_length)
                await self._pump(upstream, response, exchange, sent)
        except ConnectionResetError:
            raise  # the client went away while we wrote to it: not the upstream's fault
        except UpstreamError as failure:
            if request.body.failure is not None:  # the client's body, not the upstream
                self._body_failed(request.body.failure, response)  # raises
            self._telemetry.upstream_failure(call, failure.kind, failure.detail)
            if response.started:
                self._abort_midstream(response, exchange, failure)
                return None
            raise SidecarError(failure.status, failure.kind, failure.detail) from None
        except Refusal as error:
            self._body_failed(error, response)
        finally:
            if upstream is not None:
                upstream.release()
            if exchange.upstream_duration is None:
                exchange.upstream_duration = time.perf_counter() - sent
            self._telemetry.end_call(call)
        return None

    def _switch(self, response: ResponseWriter, upstream: UpstreamResponse,
                exchange: Exchange, sent: float) -> Tunnel:
        """The upstream accepted the upgrade: its 101 goes to the client as written and
        the two connections become one tunnel."""
        exchange.upstream_duration = time.perf_counter() - sent
        client = response.switch_protocols(
            upstream.reason, end_to_end_raw(upstream.raw_headers, _SWITCH_HEADERS))
        server = upstream.detach()
        tunnel = Tunnel(client, server, self._pool.settings.read_timeout)
        client.attach_tunnel(tunnel)
        server.attach_tunnel(tunnel)
        return tunnel

    def _body_failed(self, error: Refusal, response: ResponseWriter) -> None:
        """The client's body broke the exchange: too large, too slow or gone."""
        response.close_after = True
        self._on_refused(error.reason)
        if error.status == 0 or response.started:
            raise ConnectionResetError(error.detail)
        raise error

    def _buffered(self, request: IncomingRequest, upstream: UpstreamResponse) -> bool:
        if request.method == "HEAD" or upstream.status in _NO_BODY_STATUSES:
            return True
        length = upstream.content_length
        return length is not None and length <= self._config.stream_threshold_bytes

    async def _relay_buffered(
        self, request: IncomingRequest, response: ResponseWriter,
        upstream: UpstreamResponse, exchange: Exchange, sent: float,
    ) -> None:
        body = await upstream.read() if request.method != "HEAD" else b""
        exchange.upstream_duration = time.perf_counter() - sent
        exchange.response_body = body
        exchange.response_bytes = len(body)
        length = upstream.content_length if request.method == "HEAD" else (
            None if upstream.status in _NO_BODY_STATUSES else len(body))
        self._start_relay(request, response, upstream, length)
        await response.write(body)
        await response.end()

    @staticmethod
    def _start_relay(request: IncomingRequest, response: ResponseWriter,
                     upstream: UpstreamResponse, length: int | None) -> None:
        """The upstream's status and end-to-end headers as it wrote them (names in their
        case, their order, repeats), and nothing of lookout's."""
        body_allowed = request.method != "HEAD" and upstream.status not in _NO_BODY_STATUSES
        response.start(upstream.status, upstream.reason,
                       end_to_end_raw(upstream.raw_headers), length, body_allowed=body_allowed)

    async def _pump(
        self, upstream: UpstreamResponse, response: ResponseWriter,
        exchange: Exchange, sent: float,
    ) -> None:
        """Relay the body chunk by chunk, keeping the first observe_max_bytes."""
        copy = BodyCopy(self._config.observe_max_bytes, upstream.content_length)
        async for chunk in upstream.chunks():
            copy.add(chunk)
            exchange.response_bytes = copy.seen
            await response.write(chunk)
        exchange.upstream_duration = time.perf_counter() - sent
        exchange.response_body, exchange.truncated = copy.data, copy.truncated
        await response.end()

    @staticmethod
    def _abort_midstream(response: ResponseWriter, exchange: Exchange,
                         failure: UpstreamError) -> None:
        """The status line is gone already; closing the connection is the only honest
        signal left to the client (it sees a short chunked body or length)."""
        log.warning("upstream failed mid-response (%s): %s", failure.kind, failure.detail)
        exchange.code = sidecar_code(failure.status)
        response.abort()

    async def _send_error(
        self, request: IncomingRequest, response: ResponseWriter, exchange: Exchange,
        error: SidecarError | Refusal,
    ) -> None:
        exchange.status, exchange.code = error.status, sidecar_code(error.status)
        exchange.error_kind = error.kind
        traced = {"trace_id": exchange.trace_id_hex} if exchange.trace_id else {}
        body = error_body(error, upstream=self._upstream_base, **traced)
        exchange.response_body = body
        exchange.response_bytes = len(body)
        headers = CIMultiDict({ERROR_HEADER: error.kind, "Content-Type": "application/json"})
        exchange.response_headers = headers
        if not request.body.complete:
            response.close_after = True  # the unread body must not be parsed as a request
        response.start(error.status, "", headers, len(body),
                       body_allowed=request.method != "HEAD")
        if request.method != "HEAD":
            await response.write(body)
        await response.end()
