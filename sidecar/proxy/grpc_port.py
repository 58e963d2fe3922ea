"""The gRPC data port: HTTP/2 relayed frame by frame, one upstream connection per client
connection, every method of the upstream's whatever its schema.

Each client connection gets its own connection to the upstream, so the connection's own
business (SETTINGS, PING, WINDOW_UPDATE, GOAWAY) and every stream's flow control stay
end to end, and each frame is relayed as the bytes it was, but one kind: header blocks,
which lookout decodes and encodes again with HPACK state of its own on each connection:
the client's, to put lookout's trace context in place of the caller's; the upstream's,
to read `:status`, `grpc-status` and the metadata, and so that a block it must not relay
(of a call it answered itself) leaves no decoder out of step. DATA is
relayed as it comes; the gRPC messages in it are measured (their 5-byte prefix says
their length before their bytes pass) and copied for analysis when the method is an
inference one. So a gRPC call through lookout costs one pass over its frames and three
small header blocks, where a gRPC library in between would end and restart each call.

Statuses lookout sends itself carry a `lookout-error` trailer naming the cause, details
starting with `lookout:` and a `sidecar_`-prefixed `code` label, as on HTTP:
UNAVAILABLE when the upstream cannot be reached (then lookout answers every call on the
connection itself) or goes away with calls open, RESOURCE_EXHAUSTED for a message over
`grpc_max_message_bytes`, which is refused before any of it is relayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio
from hpack import HPACKError

from lookout.sidecar.pipeline.protos import (
    INFER_METHOD,
    KNOWN_METHODS,
    SERVICE,
    STREAM_INFER_METHOD,
)
from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.proxy import h2_frames as h2
from lookout.sidecar.proxy.grpc_status import HTTP_EQUIVALENT, number
from lookout.sidecar.proxy.in_flight import InFlight
from lookout.sidecar.proxy.routes import OTHER_ROUTE
from lookout.sidecar.proxy.telemetry import GRPC, Exchange, RequestTelemetry, UpstreamCall
from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.settings import GrpcSettings
from lookout.slo.catalog import sidecar_code

log = logging.getLogger(__name__)

ERROR_KEY = "lookout-error"  # the trailer on a status lookout made, like X-Lookout-Error
BAD_HTTP2 = "bad_http2"  # the refusal reason of a client that does not speak HTTP/2
NAMED_MODEL_METHODS = frozenset(f"/{SERVICE}/{name}" for name in (
    "ModelInfer", "ModelStreamInfer", "ModelReady", "ModelMetadata", "ModelConfig",
    "ModelStatistics"))
OBSERVED_METHODS = frozenset((INFER_METHOD, STREAM_INFER_METHOD))
MAX_NAME_BYTES = 255
# a cancellation this close to the caller's deadline is that deadline passing (the
# caller's clock started before lookout saw the call)
DEADLINE_SLACK = 0.25
HIGH_WATER = 4 * 1024**2  # bytes waiting to be written before the other side is paused
MAX_ANSWERED = 4096  # streams lookout answered whose upstream frames are still dropped
MAX_PENDING = 1024**2  # client bytes held while the upstream connection is being made
_STATUS_BY_NUMBER = {number(code): code for code in grpc.StatusCode}
# gRPC's mapping of an HTTP status that came without grpc-status (doc/http-grpc-status-mapping)
_FROM_HTTP = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
              429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
              503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}
_RST_STATUS = {h2.NO_ERROR: grpc.StatusCode.INTERNAL, h2.CANCEL: grpc.StatusCode.CANCELLED,
               0xb: grpc.StatusCode.UNAVAILABLE,  # ENHANCE_YOUR_CALM
               0x7: grpc.StatusCode.UNAVAILABLE}  # REFUSED_STREAM


class LookoutStatus(Exception):
    """A status lookout sends itself instead of relaying the upstream's."""

    def __init__(self, code: grpc.StatusCode, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.kind, self.detail = code, kind, f"lookout: {detail}"


def named_model(method: str, message: bytes) -> str | None:
    """The model a request names, read from its first field the way it is serialised
    (field order by number, as every protobuf encoder writes it): a bounded peek at most
    MAX_NAME_BYTES long, not a parse. None when the method or the bytes name none."""
    if method not in NAMED_MODEL_METHODS or len(message) < 2 or message[0] != 0x0A:
        return None
    length, start = message[1], 2
    if length & 0x80:  # a two-byte varint: names up to 16 KiB, of which we take 255
        if len(message) < 3:
            return None
        length, start = (length & 0x7F) | (message[2] << 7), 3
    if length == 0 or length > MAX_NAME_BYTES or start + length > len(message):
        return None
    try:
        return message[start:start + length].decode("utf-8")
    except UnicodeDecodeError:
        return None


_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3,
                  ord("u"): 1e-6, ord("n"): 1e-9}


def grpc_timeout_seconds(value: bytes) -> float | None:
    """A `grpc-timeout` header (`999848u`, `5S`) in seconds; None when malformed."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or not unit:
        return None
    scale = _TIMEOUT_UNITS.get(unit[0])
    return int(digits) * scale if scale is not None else None


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


@dataclass(slots=True)
class Stream:
    """One call on its way through."""

    exchange: Exchange
    call: UpstreamCall
    requests: h2.Messages
    responses: h2.Messages
    trace_context: dict[str, str] = field(default_factory=dict)  # for the upstream
    started: float = field(default_factory=time.perf_counter)
    response_headers: RawHeaders | None = None
    http_status: int = 0
    labelled: bool = False
    paired: int = 0  # stream messages handed over so far
    deadline: float | None = None  # perf_counter time the caller's grpc-timeout ends


class GrpcConnection(asyncio.Protocol):
    """One client's HTTP/2 connection and the upstream connection made for it."""

    def __init__(self, port: GrpcDataPort) -> None:
        self._port = port
        self._client: asyncio.Transport | None = None
        self._upstream: asyncio.Transport | None = None
        self._connecting: asyncio.Task[None] | None = None  # held: the loop holds tasks weakly
        self._pending: list[bytes] = []  # client bytes before the upstream is there
        self._preface = bytearray()
        self._preface_seen = False
        self._from_client_frames = h2.FrameSplitter()
        self._from_upstream_frames = h2.FrameSplitter()
        self._client_block = h2.HeaderBlock()  # decodes what the client encodes
        self._upstream_encoder = h2.CachingEncoder()
        self._upstream_block = h2.HeaderBlock()
        self._client_encoder = h2.CachingEncoder()
        self.streams: dict[int, Stream] = {}
        self._answered: set[int] = set()  # streams lookout answered: the upstream's rest
        self.last_stream = 0
        self._local = False  # the upstream could not be reached: lookout answers
        self._unreachable_reason = ""
        self._peer: str | None = None
        self._closed = False

    # the client's side ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client = transport  # type: ignore[assignment]
        if len(self._port.connections) >= self._port.settings.max_client_connections:
            self._closed = True
            self._port.refused("connection_limit")
            transport.close()
            return
        self._client.set_write_buffer_limits(high=HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else None  # once, for every call's span
        self._port.connections.add(self)
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, side = await asyncio.wait_for(loop.create_connection(
                lambda: UpstreamSide(self), self._port.host, self._port.upstream_port),
                self._port.settings.connect_timeout)
        except (OSError, TimeoutError) as error:
            self._unreachable(str(error) or type(error).__name__)
            return
        if self._closed:
            side.transport.close()
            return
        self._upstream = side.transport
        pending, self._pending = self._pending, []
        for data in pending:
            self._from_client(data)
        self._client.resume_reading()

    def _unreachable(self, reason: str) -> None:
        self._local = True
        self._unreachable_reason = reason
        if not self._closed and self._client is not None:
            # lookout is the server on this connection now: its SETTINGS, then answers
            self._client.write(h2.frame(h2.SETTINGS, 0, 0))
            pending, self._pending = self._pending, []
            for data in pending:
                self._from_client(data)
            self._client.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._upstream is None and not self._local:
            self._pending.append(data)
            if sum(map(len, self._pending)) > MAX_PENDING:
                self._client.pause_reading()  # until the upstream is there
            return
        self._from_client(data)

    def _from_client(self, data: bytes) -> None:
        try:
            self._client_frames(data)
        except (HPACKError, ValueError, IndexError) as error:
            log.debug("gRPC port: a client sent what is not HTTP/2 (%s)", error)
            self._port.refused(BAD_HTTP2)
            self._close_both(h2.goaway(self.last_stream, h2.PROTOCOL_ERROR))
        except Exception:
            self._port.bug("relaying a client's frames")
            self._close_both(h2.goaway(self.last_stream, h2.PROTOCOL_ERROR))

    def _client_frames(self, data: bytes) -> None:
        if not self._preface_seen:
            self._preface += data
            if len(self._preface) < len(h2.PREFACE):
                return
            if bytes(self._preface[:len(h2.PREFACE)]) != h2.PREFACE:
                raise ValueError("no HTTP/2 connection preface")
            self._preface_seen = True
            data = bytes(self._preface[len(h2.PREFACE):])
            self._preface.clear()
            if not self._local:
                self._upstream.write(h2.PREFACE)
        out: list[Any] = []
        for whole, kind, flags, stream, payload in self._from_client_frames.split(data):
            if kind in (h2.HEADERS, h2.CONTINUATION):
                self._client_headers(kind, flags, stream, payload, out)
            elif self._local:
                self._answer_locally(kind, flags, stream, payload)
            elif kind == h2.DATA:
                if self._client_data(flags, stream, payload):
                    out.append(whole)
                else:  # refused, never relayed: the client's window is given back here
                    self._client.write(h2.window_update(0, len(payload)))
            else:
                if kind == h2.SETTINGS and not flags & h2.ACK:
                    table = h2.settings_of(payload).get(h2.SETTINGS_HEADER_TABLE_SIZE)
                    if table is not None:  # what the upstream and lookout may use for it
                        self._upstream_block.decoder.max_allowed_table_size = table
                        self._client_encoder.header_table_size = min(table, 4096)
                elif kind == h2.RST_STREAM:
                    self._client_reset(stream)
                out.append(whole)
        if out and not self._local:
            self._upstream.writelines(out)

    def _client_headers(self, kind: int, flags: int, stream: int, payload: memoryview,
                        out: list[bytes]) -> None:
        """A client header block, gathered across CONTINUATION frames, then decoded
        and encoded again for the upstream (or answered, when lookout is the server)."""
        block = self._client_block.gather(kind, flags, stream, payload)
        if block is None:
            return
        stream, first_flags, headers = block
        end_stream = bool(first_flags & h2.END_STREAM)
        known = self.streams.get(stream)
        if known is None and stream <= self.last_stream:  # a call already ended: relayed
            if not self._local and stream not in self._answered:
                out.extend(h2.header_frames(stream, self._upstream_encoder.encode(headers),
                                            end_stream))
            return
        if known is None:  # a new call
            known = self._begin(stream, headers)
            if self._local:
                self._answer(stream, known, grpc.StatusCode.UNAVAILABLE, "upstream_unavailable",
                             f"the upstream {self._port.settings.grpc_upstream} is "
                             f"unavailable: {self._unreachable_reason}")
                return
            if known.trace_context:
                out.extend(h2.header_frames(stream, self._with_trace_context(known, headers),
                                            end_stream))
                return
        if self._local:
            return
        out.extend(h2.header_frames(stream, self._upstream_encoder.encode(headers),
                                    end_stream))

    def _begin(self, stream: int, headers: list[tuple[bytes, bytes]]) -> Stream:
        self.last_stream = max(self.last_stream, stream)
        method = next((_text(v) for k, v in headers if k == b":path"), "")
        route = method if method in KNOWN_METHODS else OTHER_ROUTE
        raw = [(k, v) for k, v in headers if not k.startswith(b":")]
        # what telemetry reads: trace context and user-agent (gRPC's names are lowercase)
        text = {_text(k): _text(v) for k, v in raw if not k.endswith(b"-bin")}
        exchange = Exchange("POST", method, route, RawHeaders(raw), protocol=GRPC)
        telemetry = self._port.telemetry
        telemetry.begin(exchange, text, scheme="http", protocol_version="2",
                        client_address=self._peer)
        context: dict[str, str] = {}
        call = telemetry.upstream_call(exchange, method, self._port.host,
                                       self._port.upstream_port, context)
        observed = method in OBSERVED_METHODS
        keep = self._port.settings.observe_max_bytes if observed else 0
        state = Stream(exchange, call, h2.Messages(keep), h2.Messages(keep), context)
        timeout = next((v for k, v in headers if k == b"grpc-timeout"), None)
        seconds = grpc_timeout_seconds(timeout) if timeout else None
        if seconds is not None:
            state.deadline = state.started + seconds
        self.streams[stream] = state
        self._port.in_flight.started()
        return state

    def _with_trace_context(self, state: Stream, headers: list[tuple[bytes, bytes]]
                            ) -> bytes:
        """The block of the caller's headers with lookout's trace context in place of its
        own. lookout's comes last, never indexed (a new value every call would only churn
        the upstream's table), so the rest is the same block call after call."""
        dropped = self._port.propagation_fields
        return self._upstream_encoder.encode(
            [pair for pair in headers if pair[0] not in dropped]) + h2.never_indexed(
            [(k.encode(), v.encode()) for k, v in state.trace_context.items()])

    def _client_data(self, flags: int, stream: int, payload: memoryview) -> bool:
        """Whether this DATA frame is relayed: a message over the limit is refused."""
        state = self.streams.get(stream)
        if state is None:  # ended: the upstream knows its fate, unless lookout answered it
            return stream not in self._answered
        announced = state.requests.feed(h2.unpadded(flags, payload, False))
        state.exchange.request_bytes += len(payload)
        if not state.labelled and state.requests.first_head:
            state.labelled = True
            self._port.telemetry.relabel(state.exchange, named_model(
                state.exchange.path, state.requests.first_head))
        if announced is not None and announced > self._port.limit:
            self._upstream.write(h2.rst_stream(stream))
            self._answer(stream, state, grpc.StatusCode.RESOURCE_EXHAUSTED, "request_too_large",
                         f"request message of {announced} bytes is larger than "
                         f"grpc_max_message_bytes ({self._port.limit})")
            return False
        return True

    def _client_reset(self, stream: int) -> None:
        """The caller cancelled, or its deadline passed while the upstream worked: that
        is the upstream's DEADLINE_EXCEEDED, as the caller sees it."""
        state = self.streams.pop(stream, None)
        if state is None:
            return
        if state.deadline is not None and time.perf_counter() >= state.deadline - DEADLINE_SLACK:
            self._finish(state, grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
        else:
            self._finish(state, grpc.StatusCode.CANCELLED, sidecar_code("CANCELLED"))

    def _answer_locally(self, kind: int, flags: int, stream: int,
                        payload: memoryview) -> None:
        """The connection's business when lookout is its server (no upstream)."""
        if kind == h2.SETTINGS and not flags & h2.ACK:
            self._client.write(h2.frame(h2.SETTINGS, h2.ACK, 0))
        elif kind == h2.PING and not flags & h2.ACK:
            self._client.write(h2.frame(h2.PING, h2.ACK, 0, bytes(payload)))
        elif kind == h2.DATA and len(payload):
            self._client.write(h2.window_update(0, len(payload)))
        elif kind == h2.GOAWAY:
            self._close_both()

    def _answer(self, stream: int, state: Stream, code: grpc.StatusCode, kind: str,
                detail: str) -> None:
        """lookout's own status for a call, to the client: headers too, unless the
        upstream's were relayed already. What the upstream still sends for it is not."""
        self._answered.add(stream)
        if len(self._answered) > MAX_ANSWERED:  # stream ids only grow: the oldest go
            for old in sorted(self._answered)[:MAX_ANSWERED // 2]:
                self._answered.discard(old)
        headers = [] if state.response_headers is not None else [
            (b":status", b"200"), (b"content-type", b"application/grpc")]
        message = f"lookout: {detail}" if not detail.startswith("lookout:") else detail
        headers += [(b"grpc-status", str(number(code)).encode()),
                    (b"grpc-message", _percent_encoded(message)),
                    (ERROR_KEY.encode(), kind.encode())]
        self._client.writelines(h2.header_frames(stream, h2.never_indexed(headers),
                                                 end_stream=True))
        state.exchange.error_kind = kind
        if kind.startswith("upstream"):
            self._port.telemetry.upstream_failure(state.call, kind, message)
        self._finish(state, code, sidecar_code(code.name))
        self.streams.pop(stream, None)

    # the upstream's side -------------------------------------------------------------
    def from_upstream(self, data: bytes) -> None:
        """Relay everything; read the header blocks and count the messages going by."""
        out: list[Any] = []
        for whole, kind, flags, stream, payload in self._from_upstream_frames.split(data):
            relay = True
            if kind in (h2.HEADERS, h2.CONTINUATION):
                self._upstream_headers(kind, flags, stream, payload, out)
                relay = False  # encoded again, by the block
            elif kind == h2.DATA:
                relay = self._upstream_data(flags, stream, payload, out)
                if not relay:  # never reaches the client: its window is ours to give
                    self._upstream.write(h2.window_update(0, len(payload)))
            elif kind == h2.RST_STREAM:
                relay = self._upstream_reset(stream, int.from_bytes(payload[:4], "big"))
            elif kind == h2.PUSH_PROMISE:  # gRPC never pushes; its block would be HPACK
                raise ValueError("the upstream pushed a stream")  # state unaccounted for
            elif kind == h2.SETTINGS and not flags & h2.ACK:
                table = h2.settings_of(payload).get(h2.SETTINGS_HEADER_TABLE_SIZE)
                if table is not None:
                    self._client_block.decoder.max_allowed_table_size = table
                    self._upstream_encoder.header_table_size = min(table, 4096)
            if relay:
                out.append(whole)
        if out and not self._closed:
            self._client.writelines(out)

    def _upstream_headers(self, kind: int, flags: int, stream: int, payload: memoryview,
                          out: list[Any]) -> None:
        """An upstream header block, decoded (what it says is the call's status and
        metadata) and encoded again for the client with lookout's own HPACK state, so
        that a block lookout does not relay (of a call it answered) leaves the client's
        decoder in step."""
        block = self._upstream_block.gather(kind, flags, stream, payload)
        if block is None:
            return
        stream, first_flags, headers = block
        end_stream = bool(first_flags & h2.END_STREAM)
        if stream not in self._answered:
            out.extend(h2.header_frames(stream, self._client_encoder.encode(headers),
                                        end_stream))
        state = self.streams.get(stream)
        if state is None:
            return
        if state.response_headers is None:  # the first block: headers, or trailers-only
            state.response_headers = RawHeaders([(b"content-type", b"application/grpc"),
                                                 *((k, v) for k, v in headers
                                                   if not k.startswith(b":"))])
            status = next((v for k, v in headers if k == b":status"), b"200")
            state.http_status = int(status) if status.isdigit() else 0
            state.exchange.response_headers = state.response_headers
        if end_stream:  # trailers (or a trailers-only answer)
            self._trailers(stream, state, headers)

    def _trailers(self, stream: int, state: Stream, headers: list[tuple[bytes, bytes]]
                  ) -> None:
        found = next((v for k, v in headers if k == b"grpc-status"), None)
        if found is not None and found.isdigit():
            code = _STATUS_BY_NUMBER.get(int(found), grpc.StatusCode.UNKNOWN)
        else:
            code = _FROM_HTTP.get(state.http_status, grpc.StatusCode.UNKNOWN)
        self.streams.pop(stream, None)
        self._finish(state, code, code.name)

    def _upstream_data(self, flags: int, stream: int, payload: memoryview,
                       out: list[bytes]) -> bool:
        state = self.streams.get(stream)
        if state is None:
            return stream not in self._answered
        announced = state.responses.feed(h2.unpadded(flags, payload, False))
        state.exchange.response_bytes += len(payload)
        if announced is not None and announced > self._port.limit:
            self._upstream.write(h2.rst_stream(stream))
            self._client.writelines(out)  # what came before, then lookout's status
            out.clear()
            self._answer(stream, state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         "response_too_large", f"response message of {announced} bytes is "
                         f"larger than grpc_max_message_bytes ({self._port.limit})")
            return False
        if state.exchange.path == STREAM_INFER_METHOD:
            self._pair(state)
        return True

    def _pair(self, state: Stream) -> None:
        """A stream's requests and responses, in order, each pair an observation."""
        requests, responses = state.requests.copies, state.responses.copies
        while state.paired < min(len(requests), len(responses)):
            request, response = requests[state.paired], responses[state.paired]
            requests[state.paired] = responses[state.paired] = b""
            state.paired += 1
            if request and response:
                self._port.telemetry.observe_message(state.exchange, request, response)

    def _upstream_reset(self, stream: int, code: int) -> bool:
        state = self.streams.pop(stream, None)
        if state is None:
            return stream not in self._answered
        status = _RST_STATUS.get(code, grpc.StatusCode.INTERNAL)
        self._finish(state, status, status.name)
        return True

    def upstream_lost(self, reason: str) -> None:
        """The upstream closed or failed: the calls still open get lookout's
        UNAVAILABLE, then the client's connection ends."""
        if self._closed:
            return
        for stream, state in list(self.streams.items()):
            self._answer(stream, state, grpc.StatusCode.UNAVAILABLE, "upstream_unavailable",
                         f"the upstream {self._port.settings.grpc_upstream} went away: "
                         f"{reason}")
        self._close_both(h2.goaway(self.last_stream))

    # both ----------------------------------------------------------------------------
    def _finish(self, state: Stream, code: grpc.StatusCode, label: str) -> None:
        exchange = state.exchange
        exchange.grpc_status, exchange.status, exchange.code = \
            number(code), HTTP_EQUIVALENT[code], label
        exchange.upstream_duration = time.perf_counter() - state.started
        if not exchange.error_kind:
            state.call.grpc_status, state.call.status = exchange.grpc_status, exchange.status
        exchange.response_headers = state.response_headers or RawHeaders(
            [(b"content-type", b"application/grpc")])
        if exchange.path == INFER_METHOD and code is grpc.StatusCode.OK:
            self._unary_copies(state)
        self._port.telemetry.end_call(state.call)
        self._port.telemetry.finish(exchange)
        self._port.in_flight.ended()

    def _unary_copies(self, state: Stream) -> None:
        """A unary call's two messages for the analysis; a compressed one is not
        analysed (its bytes are relayed as they came)."""
        if state.requests.compressed or state.responses.compressed:
            return
        exchange = state.exchange
        requests, responses = state.requests.copies, state.responses.copies
        if len(requests) == 1 and requests[0]:
            exchange.request_body = requests[0]
        else:
            exchange.request_truncated = bool(state.requests.count)
        if len(responses) == 1 and responses[0]:
            exchange.response_body = responses[0]
        else:
            exchange.truncated = bool(state.responses.count)

    def pause_writing(self) -> None:  # the client reads slowly: so does the upstream side
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self._port.connections:  # refused at once
            return
        self._closed = True
        for state in list(self.streams.values()):
            self._finish(state, grpc.StatusCode.CANCELLED, sidecar_code("CANCELLED"))
        self.streams.clear()
        if self._upstream is not None:
            self._upstream.close()
        self._port.connections.discard(self)

    def _close_both(self, last_words: bytes | None = None) -> None:
        if self._client is not None and not self._closed:
            if last_words:
                self._client.write(last_words)
            self._client.close()
        if self._upstream is not None:
            self._upstream.close()

    def drain(self) -> None:
        """SIGTERM: no new calls (GOAWAY), the open ones go on."""
        if self._client is not None and not self._closed:
            self._client.write(h2.goaway(self.last_stream))

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    def close(self) -> None:
        self._close_both()


class UpstreamSide(asyncio.Protocol):
    """The connection to the upstream made for one client connection."""

    def __init__(self, connection: GrpcConnection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        try:
            self.connection.from_upstream(data)
        except (HPACKError, ValueError, IndexError) as error:
            self.connection.upstream_lost(f"it sent what is not HTTP/2 ({error})")
        except Exception:
            self.connection._port.bug("relaying the upstream's frames")
            self.connection.upstream_lost("lookout failed relaying it")

    def pause_writing(self) -> None:  # the upstream reads slowly: so does the client side
        client = self.connection._client
        if client is not None:
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self.connection._client
        if client is not None:
            client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.upstream_lost(str(exc) if exc else "it closed the connection")


def _percent_encoded(text: str) -> bytes:
    """grpc-message's encoding: UTF-8, with what is not printable ASCII (and %)
    percent-encoded."""
    out = bytearray()
    for byte in text.encode("utf-8"):
        out += b"%%%02X" % byte if byte < 0x20 or byte > 0x7E or byte == 0x25 \
            else bytes((byte,))
    return bytes(out)


class GrpcDataPort:
    """The gRPC port of one request-path process."""

    def __init__(self, settings: GrpcSettings, telemetry: RequestTelemetry,
                 refused: Callable[[str], None] = lambda reason: None) -> None:
        """`refused` counts a client connection closed for not speaking HTTP/2."""
        self.settings = settings
        self.telemetry = telemetry
        self.refused = refused
        self.limit = settings.grpc_max_message_bytes
        host, _, port = settings.grpc_upstream.rpartition(":")
        self.host, self.upstream_port = host.strip("[]"), int(port)
        self.address = settings.grpc_upstream
        self.propagation_fields = frozenset(name.encode() for name in
                                            telemetry.propagation_fields)
        self.connections: set[GrpcConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._channel: aio.Channel | None = None
        self.in_flight = InFlight()
        self.failures = FailureLog(log)
        self.port = 0

    @property
    def channel(self) -> aio.Channel:
        """A gRPC channel to the upstream, for the readiness probe alone."""
        if self._channel is None:
            self._channel = aio.insecure_channel(self.settings.grpc_upstream)
        return self._channel

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: GrpcConnection(self), host, port,
                                                reuse_address=True, reuse_port=reuse_port,
                                                backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float) -> None:
        """Refuse new calls (GOAWAY), let open ones finish within `grace`, then close."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.drain()
            if not connection.busy:
                connection.close()
        await self.in_flight.drained(grace)
        for connection in list(self.connections):
            connection.close()
        if self._channel is not None:
            await self._channel.close()

    def bug(self, what: str) -> None:
        """A failure of lookout's own, counted and logged: the connection it happened on
        is closed, the port goes on."""
        self.telemetry.component_failed()
        self.failures.exception("grpc_port", "gRPC port: %s failed", what)

