"""One tap record (`tap/PROTOCOL.md`, "A record's payload") as the analysis's
`Observation`s, in the analysis worker.

The C filter copied bytes and counted; everything that reads them is here: the header
blocks, the route and model labels, the exchange's span (`exchange_spans.py`), and for
gRPC the length-prefixed messages (a unary call is one observation; a `ModelStreamInfer`
stream is one per answered request, paired in order, as the Python port handed them).
A compressed gRPC message is not analysed (its bytes stay as they came), a cut body is
flagged, never decoded as a prefix. A large body comes ahead of its record, in pieces
(`BodyPieces`), which the record claims by its stream id.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from opentelemetry.util.types import AttributeValue

from lookout.sidecar.dataplane.exchange_spans import (
    GRPC_SERVER_ERRORS,
    ExchangeFacts,
    ExchangeSpans,
)
from lookout.sidecar.dataplane.grpc_status import HTTP_EQUIVALENT
from lookout.sidecar.dataplane.routes import OTHER_ROUTE, RouteTemplates
from lookout.sidecar.dataplane.tap_counters import code_label
from lookout.sidecar.pipeline.grpc_v2 import GRPC_CONTENT_TYPE
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.protos import KNOWN_METHODS, STREAM_INFER_METHOD
from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.served_models import OTHER_MODEL, ModelLabels, path_model

MAGIC = 0x3154504C  # "LPT1"
PIECE_MAGIC = 0x3150504C  # "LPP1"
FLAG_REQUEST_CUT, FLAG_RESPONSE_CUT, FLAG_GRPC, FLAG_LOCAL, FLAG_NO_RESPONSE = \
    1, 2, 4, 8, 16
FLAG_REQUEST_PIECES, FLAG_RESPONSE_PIECES = 32, 64
FLAG_TRACED, FLAG_SAMPLED, FLAG_PARENT = 128, 256, 512
FLAG_SPAN_ONLY = 1024  # the ring had no room for the record: its head and request headers
# pieces waiting for their record, per ring: the in-flight large bodies of one Envoy worker
# (a worker's decoders hold at most what its rings do: see TapDecoder)
PENDING_BYTES = 64 * 1024**2
PENDING_STREAMS = 4096
_HEAD = struct.Struct("<IIQQQIiQQQ16s8s8s6I")
_PIECE = struct.Struct("<IIQ")
_PAIR = struct.Struct("<II")
_GRPC_PREFIX = struct.Struct(">BI")
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class TapRecordError(ValueError):
    """A record that does not follow the layout: counted, never analysed."""


class BodyPieces:
    """The bodies the tap sent ahead of their records, from one ring (one Envoy worker
    writes it, in order: a stream's pieces, then its record). A stream whose record the
    tap dropped leaves pieces nobody claims: past the bounds the oldest stream's go, and
    a record that finds none of its pieces has its body cut."""

    def __init__(self, max_bytes: int = PENDING_BYTES,
                 max_streams: int = PENDING_STREAMS) -> None:
        self._pending: dict[int, tuple[list[bytes], list[bytes]]] = {}
        self._max_bytes, self._max_streams = max_bytes, max_streams
        self.bytes = 0
        self.unclaimed = 0  # streams whose pieces were let go without their record

    def add(self, view: memoryview) -> None:
        if len(view) < _PIECE.size:
            raise TapRecordError(f"a piece of {len(view)} bytes is shorter than its head")
        _, side, stream = _PIECE.unpack_from(view)
        if side not in (0, 1) or not stream:
            raise TapRecordError(f"a piece for side {side} of stream {stream}")
        if stream not in self._pending:
            self._pending[stream] = ([], [])
        piece = bytes(view[_PIECE.size:])
        self._pending[stream][side].append(piece)
        self.bytes += len(piece)
        while len(self._pending) > 1 and (self.bytes > self._max_bytes or
                                          len(self._pending) > self._max_streams):
            self._drop(next(iter(self._pending)))
            self.unclaimed += 1

    def claim(self, stream: int) -> tuple[bytes, bytes] | None:
        """A stream's request and response bodies, None when nothing of it is here."""
        if stream not in self._pending:
            return None
        request, response = self._drop(stream)
        return b"".join(request), b"".join(response)

    def _drop(self, stream: int) -> tuple[list[bytes], list[bytes]]:
        request, response = self._pending.pop(stream)
        self.bytes -= sum(map(len, request)) + sum(map(len, response))
        return request, response


@dataclass(frozen=True, slots=True)
class TapExchange:
    """A record's fixed facts and its six sections, still bytes."""

    flags: int
    start_unix_ns: int
    duration_ns: int
    upstream_ns: int
    status: int
    grpc_status: int
    request_bytes: int
    response_bytes: int
    trace_id: bytes  # the W3C context the upstream was sent (flag 128: the tap made one)
    span_id: bytes
    parent_span_id: bytes  # the caller's span; zeros when the trace began here
    request_headers: list[tuple[bytes, bytes]]
    request_body: bytes
    request_trailers: list[tuple[bytes, bytes]]
    response_headers: list[tuple[bytes, bytes]]
    response_body: bytes
    response_trailers: list[tuple[bytes, bytes]]


def header_pairs(section: memoryview) -> list[tuple[bytes, bytes]]:
    pairs, at, end = [], 0, len(section)
    while at < end:
        if at + _PAIR.size > end:
            raise TapRecordError("a header entry is cut")
        name_length, value_length = _PAIR.unpack_from(section, at)
        at += _PAIR.size
        if at + name_length + value_length > end:
            raise TapRecordError("a header entry runs past its section")
        pairs.append((bytes(section[at:at + name_length]),
                      bytes(section[at + name_length:at + name_length + value_length])))
        at += name_length + value_length
    return pairs


def parse(record: memoryview | bytes, pieces: BodyPieces | None = None) -> TapExchange:
    """`pieces`: where the bodies sent ahead of this record wait (a record that says it
    has some and finds none has those bodies cut)."""
    view = memoryview(record)
    if len(view) < _HEAD.size:
        raise TapRecordError(f"a record of {len(view)} bytes is shorter than its head")
    (magic, flags, started, duration, upstream, status, grpc_status, request_bytes,
     response_bytes, stream, trace_id, span_id, parent_span_id, *lengths) = \
        _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise TapRecordError(f"bad magic {magic:#x}: the tap's layout is not this one")
    if _HEAD.size + sum(lengths) != len(view):
        raise TapRecordError("the sections do not add up to the record")
    sections, at = [], _HEAD.size
    for length in lengths:
        sections.append(view[at:at + length])
        at += length
    request_body, response_body = bytes(sections[1]), bytes(sections[4])
    if flags & (FLAG_REQUEST_PIECES | FLAG_RESPONSE_PIECES):
        claimed = pieces.claim(stream) if pieces is not None else None
        request_pieces, response_pieces = claimed or (b"", b"")
        for has, cut, body, size in (
                (FLAG_REQUEST_PIECES, FLAG_REQUEST_CUT, request_pieces, request_bytes),
                (FLAG_RESPONSE_PIECES, FLAG_RESPONSE_CUT, response_pieces, response_bytes)):
            if flags & has and len(body) != size:
                flags |= cut  # a piece was let go here: what is left is not the body
        if flags & FLAG_REQUEST_PIECES:
            request_body = request_pieces
        if flags & FLAG_RESPONSE_PIECES:
            response_body = response_pieces
    return TapExchange(
        flags, started, duration, upstream, status, grpc_status, request_bytes,
        response_bytes, trace_id, span_id, parent_span_id, header_pairs(sections[0]),
        request_body,
        header_pairs(sections[2]), header_pairs(sections[3]), response_body,
        header_pairs(sections[5]))


def grpc_messages(body: bytes) -> tuple[list[bytes], bool]:
    """The length-prefixed messages of a gRPC body, and whether any was compressed (or
    the body ends inside one)."""
    messages, at, spoiled = [], 0, False
    while at + _GRPC_PREFIX.size <= len(body):
        compressed, length = _GRPC_PREFIX.unpack_from(body, at)
        at += _GRPC_PREFIX.size
        if at + length > len(body):
            return messages, True
        spoiled |= bool(compressed)
        messages.append(body[at:at + length])
        at += length
    return messages, spoiled or at != len(body)


class TapDecoder:
    """Turns one ring's records into observations with the labels the request path gave
    before (one decoder per ring: the bodies sent ahead wait in it)."""

    def __init__(self, routes: tuple[str, ...], models: ModelLabels,
                 pending_bytes: int = PENDING_BYTES, spans: ExchangeSpans | None = None
                 ) -> None:
        """`pending_bytes`: the pieces kept waiting, at most (the ring's capacity: a
        worker then holds no more than its rings do, and one body of `max_body` fits,
        as the channel's check makes every ring hold two)."""
        self._routes = RouteTemplates(routes)
        self._models = models
        self.pieces = BodyPieces(pending_bytes)
        self._spans = spans

    def decode(self, record: memoryview | bytes) -> list[Observation]:
        view = memoryview(record)
        if len(view) >= 4 and int.from_bytes(view[:4], "little") == PIECE_MAGIC:
            self.pieces.add(view)
            return []
        exchange = parse(view, self.pieces)
        request_headers = RawHeaders(exchange.request_headers)
        response_headers = RawHeaders(exchange.response_headers
                                      + exchange.response_trailers)
        method = request_headers.get(":method", "")
        path = request_headers.get(":path", "").partition("?")[0]
        grpc_call = bool(exchange.flags & FLAG_GRPC) or \
            request_headers.get("content-type", "").startswith(GRPC_CONTENT_TYPE)
        status, code = self._status(exchange, grpc_call)
        route = (path if path in KNOWN_METHODS else OTHER_ROUTE) if grpc_call \
            else self._routes.label(path)
        traced = bool(exchange.flags & FLAG_TRACED)
        if traced and self._spans is not None:
            failed = _grpc_number(exchange) in GRPC_SERVER_ERRORS and \
                not exchange.flags & FLAG_NO_RESPONSE if grpc_call else exchange.status >= 500
            if failed or exchange.flags & FLAG_SAMPLED:  # errors are always traced
                self._spans.add(self._facts(exchange, request_headers, response_headers,
                                            method, path, route, grpc_call, code, failed))
        if exchange.flags & FLAG_SPAN_ONLY:
            return []  # nothing to analyse: the exchange's observation was dropped
        base = dict(
            started_at=exchange.start_unix_ns / 1e9, method=method, path=path,
            route=route, status=status, code=code,
            request_headers=request_headers, response_headers=response_headers,
            duration=exchange.duration_ns / 1e9,
            upstream_duration=exchange.upstream_ns / 1e9 if exchange.upstream_ns else None,
            trace_id=exchange.trace_id.hex() if traced else None,
            span_id=exchange.span_id.hex() if traced else None,
            trace_sampled=bool(exchange.flags & FLAG_SAMPLED))
        if not grpc_call:
            model, version = self._labels(None if self._models.single else
                                          path_model(path), status)
            return [Observation(
                request_body=exchange.request_body, response_body=exchange.response_body,
                request_truncated=bool(exchange.flags & FLAG_REQUEST_CUT),
                response_truncated=bool(exchange.flags & FLAG_RESPONSE_CUT),
                model=model, version=version, **base)]
        return list(self._grpc(exchange, base, path))

    def _facts(self, exchange: TapExchange, request_headers: RawHeaders,
               response_headers: RawHeaders, method: str, path: str, route: str,
               grpc_call: bool, code: str, failed: bool) -> ExchangeFacts:
        """The span's name, attributes and outcome, under OpenTelemetry's HTTP and RPC
        conventions; the model as the request named it (a span is not a metric: no label
        bound applies)."""
        if grpc_call:
            model = _first_model(grpc_messages(exchange.request_body)[0])
            service, _, rpc_method = path[1:].partition("/")
            name = route[1:] if route == path else route
            attributes: dict[str, AttributeValue] = {
                "rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method,
                "rpc.grpc.status_code": _grpc_number(exchange)}
            error = response_headers.get("grpc-message", "")
        else:
            model = path_model(path)
            name = f"{method} {route}"
            attributes = {"http.request.method": method, "url.path": path,
                          "http.route": route}
            if exchange.status:
                attributes["http.response.status_code"] = exchange.status
            error = response_headers.get("x-lookout-error", "")
        label, version = self._models.label_name(model)
        attributes.update({
            "lookout.model.name": model or label, "lookout.model.version": version,
            "http.request.body.size": exchange.request_bytes,
            "http.response.body.size": exchange.response_bytes})
        if exchange.upstream_ns:
            attributes["lookout.upstream.duration"] = exchange.upstream_ns / 1e9
        if agent := request_headers.get("user-agent", ""):
            attributes["user_agent.original"] = agent
        if failed:
            attributes["error.type"] = code
        return ExchangeFacts(
            trace_id=int.from_bytes(exchange.trace_id, "big"),
            span_id=int.from_bytes(exchange.span_id, "big"),
            parent_span_id=int.from_bytes(exchange.parent_span_id, "big")
            if exchange.flags & FLAG_PARENT else 0,
            sampled=bool(exchange.flags & FLAG_SAMPLED), name=name,
            start_ns=exchange.start_unix_ns,
            end_ns=exchange.start_unix_ns + exchange.duration_ns,
            attributes=attributes, failed=failed, error=error)

    def _labels(self, name: str | None, status: int = 0) -> tuple[str, str]:
        """As the counters label it: a discovered model once the server answered it."""
        model, version = self._models.label_name(name)
        if model == OTHER_MODEL and name is not None:
            return self._models.answered(name, status) or (model, version)
        return model, version

    def _status(self, exchange: TapExchange, grpc_call: bool) -> tuple[int, str]:
        flags = exchange.flags & FLAG_LOCAL and 2
        if not grpc_call:
            return exchange.status, code_label(exchange.status, flags)
        number = _grpc_number(exchange)
        code = _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
        return HTTP_EQUIVALENT[code], code_label(number, flags | 1)

    def _grpc(self, exchange: TapExchange, base: dict, path: str) -> Iterator[Observation]:
        requests, request_spoiled = grpc_messages(exchange.request_body)
        responses, response_spoiled = grpc_messages(exchange.response_body)
        request_cut = bool(exchange.flags & FLAG_REQUEST_CUT) or request_spoiled
        response_cut = bool(exchange.flags & FLAG_RESPONSE_CUT) or response_spoiled
        model, version = self._labels(_first_model(requests), base["status"])
        if path == STREAM_INFER_METHOD:
            if request_cut or response_cut:
                return
            for request, response in zip(requests, responses, strict=False):
                yield Observation(request_body=request, response_body=response,
                                  response_truncated=False, model=model, version=version,
                                  **{**base, "status": 200, "code": "OK"})
            return
        yield Observation(
            request_body=requests[0] if len(requests) == 1 and not request_cut else b"",
            response_body=responses[0] if len(responses) == 1 and not response_cut else b"",
            request_truncated=request_cut or len(requests) != 1,
            response_truncated=response_cut or len(responses) != 1,
            model=model, version=version, **base)


def _grpc_number(exchange: TapExchange) -> int:
    """The call's grpc-status; an answer without one is OK on a 200, else UNKNOWN."""
    if exchange.grpc_status >= 0:
        return exchange.grpc_status
    return 0 if exchange.status == 200 else 2


def _first_model(messages: list[bytes]) -> str | None:
    """Field 1 (`model_name`) of the call's first message: a tag byte, a varint length."""
    if not messages:
        return None
    message = messages[0]
    if len(message) < 2 or message[0] != 0x0A or message[1] >= 0x80:
        return None
    name = message[2:2 + message[1]]
    return name.decode("utf-8", "replace") if len(name) == message[1] else None
