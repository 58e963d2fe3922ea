"""The worker's reading of tap records: labels, trace context and spans, bodies, gRPC
messages, and records that do not follow the layout."""

from __future__ import annotations

import struct

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lookout.sidecar.config import DEFAULT_ROUTES
from lookout.sidecar.dataplane.exchange_spans import ExchangeSpans
from lookout.sidecar.dataplane.tap_record import (
    FLAG_GRPC,
    FLAG_LOCAL,
    FLAG_PARENT,
    FLAG_REQUEST_PIECES,
    FLAG_RESPONSE_CUT,
    FLAG_RESPONSE_PIECES,
    FLAG_SAMPLED,
    FLAG_SPAN_ONLY,
    FLAG_TRACED,
    BodyPieces,
    TapDecoder,
    TapRecordError,
    parse,
)
from lookout.sidecar.served_models import ModelLabels
from tests.support.tap_wire import grpc_frame, piece, record

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
CALLER = "00f067aa0ba902b7"
SAMPLED = FLAG_TRACED | FLAG_SAMPLED


def decoder(models: dict[str, str] | None = None,
            spans: ExchangeSpans | None = None) -> TapDecoder:
    return TapDecoder(DEFAULT_ROUTES, ModelLabels("yolo", "v1", models or {},
                                                  discover=False, max_models=16),
                      spans=spans)


def infer_request(path: bytes = b"/v2/models/yolo/infer", **extra: bytes) -> list:
    return [(b":method", b"POST"), (b":path", path), (b":authority", b"pod"),
            (b"content-type", b"application/json"),
            *((name.encode(), value) for name, value in extra.items())]


def test_an_http_exchange_becomes_one_observation_with_the_labels_and_trace() -> None:
    [observation] = decoder().decode(record(
        request_headers=infer_request(b"/v2/models/yolo/infer?x=1"), request_body=b'{"a":1}',
        response_headers=[(b":status", b"200"), (b"content-type", b"application/json")],
        response_body=b'{"outputs":[]}', status=200, duration_ns=7_000_000,
        upstream_ns=6_000_000, flags=SAMPLED, trace=TRACE, span=SPAN))
    assert (observation.method, observation.path, observation.route) == \
        ("POST", "/v2/models/yolo/infer", "/v2/models/{model}/infer")
    assert (observation.status, observation.code) == (200, "200")
    assert observation.request_body == b'{"a":1}'
    assert observation.response_body == b'{"outputs":[]}'
    assert observation.request_headers["Content-Type"] == "application/json"
    assert (observation.trace_id, observation.span_id, observation.trace_sampled) == \
        (TRACE, SPAN, True)
    assert observation.duration == pytest.approx(0.007)
    assert observation.upstream_duration == pytest.approx(0.006)
    assert (observation.model, observation.version) == ("yolo", "v1")


def test_a_local_reply_is_a_sidecar_code_and_a_cut_body_is_flagged() -> None:
    [observation] = decoder().decode(record(
        request_headers=infer_request(), response_headers=[(b":status", b"502"),
                                                           (b"x-lookout-error", b"x")],
        status=502, flags=FLAG_LOCAL | FLAG_RESPONSE_CUT, upstream_ns=0))
    assert observation.code == "sidecar_502"
    assert observation.response_truncated and not observation.request_truncated
    assert observation.upstream_duration is None


def test_in_a_multi_model_pod_the_path_names_the_model() -> None:
    decode = decoder({"detr": "2"}).decode
    [known] = decode(record(request_headers=infer_request(b"/v2/models/detr/infer")))
    [unknown] = decode(record(request_headers=infer_request(b"/v2/models/nope/infer")))
    assert (known.model, known.version) == ("detr", "2")
    assert unknown.model == "other"


def grpc_request(method: bytes = b"/inference.GRPCInferenceService/ModelInfer") -> list:
    return [(b":method", b"POST"), (b":path", method),
            (b"content-type", b"application/grpc")]


def model_infer(name: bytes, rest: bytes = b"") -> bytes:
    return b"\x0a" + bytes([len(name)]) + name + rest


def test_a_unary_grpc_call_is_its_two_messages_labelled_by_field_one() -> None:
    request, response = model_infer(b"detr", b"\x12\x011"), b"\x0a\x04detr"
    [observation] = decoder({"detr": "2"}).decode(record(
        request_headers=grpc_request(), request_body=grpc_frame(request),
        response_headers=[(b":status", b"200"), (b"content-type", b"application/grpc")],
        response_body=grpc_frame(response), response_trailers=[(b"grpc-status", b"0")],
        status=200, grpc_status=0, flags=FLAG_GRPC))
    assert (observation.request_body, observation.response_body) == (request, response)
    assert (observation.status, observation.code) == (200, "OK")
    assert (observation.model, observation.version) == ("detr", "2")


def test_grpc_errors_and_lookouts_own_are_named_as_the_python_port_named_them() -> None:
    [upstream] = decoder().decode(record(
        request_headers=grpc_request(), status=200, grpc_status=14, flags=FLAG_GRPC))
    [local] = decoder().decode(record(
        request_headers=grpc_request(), status=200, grpc_status=14,
        flags=FLAG_GRPC | FLAG_LOCAL))
    assert (upstream.status, upstream.code) == (503, "UNAVAILABLE")
    assert local.code == "sidecar_UNAVAILABLE"


def test_a_compressed_grpc_message_is_not_analysed() -> None:
    [observation] = decoder().decode(record(
        request_headers=grpc_request(), request_body=grpc_frame(b"\x1f\x8b..", True),
        response_body=grpc_frame(b"x"), grpc_status=0, flags=FLAG_GRPC))
    assert observation.request_truncated and observation.request_body == b""


def test_a_stream_is_one_observation_per_answered_request_in_order() -> None:
    requests = [model_infer(b"yolo", bytes([n])) for n in range(3)]
    responses = [b"answer-%d" % n for n in range(2)]
    observations = decoder().decode(record(
        request_headers=grpc_request(b"/inference.GRPCInferenceService/ModelStreamInfer"),
        request_body=b"".join(map(grpc_frame, requests)),
        response_body=b"".join(map(grpc_frame, responses)), grpc_status=0,
        flags=FLAG_GRPC))
    assert [(o.request_body, o.response_body) for o in observations] == \
        list(zip(requests, responses, strict=False))
    assert all(o.code == "OK" for o in observations)


@pytest.mark.parametrize("broken", [
    b"short",
    record(magic=0x12345678),
    record(request_body=b"abc")[:-1],
    record() + b"x",
    record(request_headers=[(b"a", b"b")])[:-1] + b"",
])
def test_a_record_off_the_layout_is_refused_with_a_reason(broken: bytes) -> None:
    with pytest.raises(TapRecordError):
        parse(broken)


def test_a_header_entry_that_runs_past_its_section_is_refused() -> None:
    good = record(request_headers=[(b"name", b"value")])
    head = bytearray(good)
    struct.pack_into("<I", head, 120, 999)  # the first entry's name length
    with pytest.raises(TapRecordError, match="runs past"):
        parse(bytes(head))


PIECES = FLAG_REQUEST_PIECES | FLAG_RESPONSE_PIECES


def test_bodies_sent_ahead_in_pieces_are_joined_into_their_record() -> None:
    reader = decoder().decode
    image, detections = b"\xff\xd8" + bytes(range(256)) * 80, b'{"outputs": []}' * 900
    interleaved = [piece(7, 0, image[:9000]), piece(8, 0, b"other"), piece(7, 0, image[9000:]),
                   piece(7, 1, detections)]
    assert all(reader(each) == [] for each in interleaved)
    [observation] = reader(record(
        request_headers=infer_request(), response_headers=[(b":status", b"200")],
        flags=PIECES, stream=7, request_bytes=len(image), response_bytes=len(detections)))
    assert (observation.request_body, observation.response_body) == (image, detections)
    assert not observation.request_truncated and not observation.response_truncated


def test_a_record_whose_pieces_are_missing_or_short_has_those_bodies_cut() -> None:
    reader = decoder().decode
    [missing] = reader(record(request_headers=infer_request(), flags=FLAG_REQUEST_PIECES,
                              stream=9, request_bytes=20_000, response_body=b"{}"))
    assert missing.request_truncated and missing.request_body == b""
    assert not missing.response_truncated and missing.response_body == b"{}"
    reader(piece(10, 1, b"x" * 100))
    [short] = reader(record(request_headers=infer_request(), flags=FLAG_RESPONSE_PIECES,
                            stream=10, response_bytes=200))
    assert short.response_truncated


def test_pieces_no_record_claims_are_let_go_oldest_first_within_the_bounds() -> None:
    pieces = BodyPieces(max_bytes=10_000, max_streams=3)
    for stream in range(1, 6):  # five streams of 3,000 bytes: the records were dropped
        pieces.add(memoryview(piece(stream, 0, b"a" * 3000)))
    assert pieces.bytes == 9000 and pieces.unclaimed == 2
    assert pieces.claim(1) is None and pieces.claim(2) is None
    assert pieces.claim(5) == (b"a" * 3000, b"")
    assert pieces.bytes == 6000
    pieces.add(memoryview(piece(6, 1, b"b" * 50_000)))  # one body past the bound: kept alone
    assert pieces.claim(6) == (b"", b"b" * 50_000) and pieces.bytes == 0


@pytest.mark.parametrize("broken", [piece(0, 0, b"x"), piece(3, 2, b"x"), piece(3, 0, b"")[:10]])
def test_a_piece_off_the_layout_is_refused(broken: bytes) -> None:
    with pytest.raises(TapRecordError):
        decoder().decode(broken)


def test_a_record_without_trace_context_has_none() -> None:
    [observation] = decoder().decode(record(request_headers=infer_request()))
    assert (observation.trace_id, observation.span_id, observation.trace_sampled) == \
        (None, None, False)


@pytest.fixture
def exported() -> tuple[ExchangeSpans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return ExchangeSpans([SimpleSpanProcessor(exporter)],
                         Resource.create({"service.name": "lookout-test"})), exporter


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = exporter.get_finished_spans()
    return span


def test_a_sampled_exchange_is_one_server_span_under_the_callers(exported) -> None:
    spans, exporter = exported
    decoder(spans=spans).decode(record(
        request_headers=infer_request(b"/v2/models/yolo11n/infer?x=1",
                                      **{"user-agent": b"curl/8"}),
        request_body=b"{}", response_body=b'{"outputs": []}', status=200,
        start_unix_ns=1_700_000_000_000_000_000, duration_ns=7_000_000,
        upstream_ns=6_000_000, flags=SAMPLED | FLAG_PARENT, trace=TRACE, span=SPAN,
        parent=CALLER))
    span = only_span(exporter)
    assert (span.name, span.kind) == ("POST /v2/models/{model}/infer", SpanKind.SERVER)
    assert (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}") == (TRACE, SPAN)
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CALLER
    assert span.parent.is_remote and span.context.trace_flags.sampled
    assert (span.start_time, span.end_time) == (1_700_000_000_000_000_000,
                                                1_700_000_000_007_000_000)
    assert span.status.status_code == StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST", "url.path": "/v2/models/yolo11n/infer",
        "http.route": "/v2/models/{model}/infer", "http.response.status_code": 200,
        # the model the request names: a span is not a metric, no label bound applies
        "lookout.model.name": "yolo11n", "lookout.model.version": "v1",
        "http.request.body.size": 2, "http.response.body.size": 15,
        "lookout.upstream.duration": 0.006, "user_agent.original": "curl/8"}
    assert span.resource.attributes["service.name"] == "lookout-test"


def test_unsampled_exchanges_make_no_span_unless_they_failed(exported) -> None:
    """Errors are always traced: the ids are those the upstream was sent."""
    spans, exporter = exported
    decode = decoder(spans=spans).decode
    decode(record(request_headers=infer_request(), status=200, flags=FLAG_TRACED,
                  trace=TRACE, span=SPAN))
    decode(record(request_headers=infer_request(), status=404, flags=FLAG_TRACED,
                  trace=TRACE, span=SPAN))
    assert exporter.get_finished_spans() == ()
    decode(record(request_headers=infer_request(),
                  response_headers=[(b":status", b"502"),
                                    (b"x-lookout-error", b"upstream unreachable")],
                  status=502, upstream_ns=0, flags=FLAG_TRACED | FLAG_LOCAL,
                  trace=TRACE, span=SPAN))
    span = only_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "upstream unreachable"
    assert span.attributes is not None and span.attributes["error.type"] == "sidecar_502"
    assert span.parent is None  # the trace began here


def test_an_untraced_record_makes_no_span(exported) -> None:
    spans, exporter = exported
    decoder(spans=spans).decode(record(request_headers=infer_request(), status=503,
                                       flags=FLAG_SAMPLED))
    assert exporter.get_finished_spans() == ()


def test_a_grpc_call_is_named_by_its_method_with_the_model_its_message_names(
        exported) -> None:
    spans, exporter = exported
    decode = decoder(spans=spans).decode
    decode(record(request_headers=grpc_request(), request_body=grpc_frame(
        model_infer(b"detr")), status=200, grpc_status=0, flags=FLAG_GRPC | SAMPLED,
        trace=TRACE, span=SPAN))
    ok = only_span(exporter)
    assert ok.name == "inference.GRPCInferenceService/ModelInfer"
    assert ok.attributes is not None and {key: ok.attributes[key] for key in (
        "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code",
        "lookout.model.name")} == {
        "rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer", "rpc.grpc.status_code": 0, "lookout.model.name": "detr"}
    exporter.clear()
    decode(record(request_headers=grpc_request(), status=200, grpc_status=3,
                  flags=FLAG_GRPC | FLAG_TRACED, trace=TRACE, span=SPAN))
    assert exporter.get_finished_spans() == ()  # INVALID_ARGUMENT: the client's error
    decode(record(request_headers=grpc_request(),
                  response_trailers=[(b"grpc-message", b"no route")], status=200,
                  grpc_status=14, flags=FLAG_GRPC | FLAG_TRACED, trace=TRACE, span=SPAN))
    failed = only_span(exporter)
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "no route"
    assert failed.attributes is not None and failed.attributes["error.type"] == "UNAVAILABLE"


def test_a_span_only_record_is_a_span_and_no_observation(exported) -> None:
    """The ring had no room for the record: the tap put its head and request headers
    in the span reserve, so the span survives a worker that is behind."""
    spans, exporter = exported
    observations = decoder(spans=spans).decode(record(
        request_headers=infer_request(), status=200, request_bytes=5000,
        flags=SAMPLED | FLAG_SPAN_ONLY, trace=TRACE, span=SPAN))
    assert observations == []
    span = only_span(exporter)
    assert span.name == "POST /v2/models/{model}/infer"
    assert span.attributes is not None and span.attributes["http.request.body.size"] == 5000
