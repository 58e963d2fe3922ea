"""Every parser that touches user input, with the inputs to throw at it and the one
thing it may do besides succeed: raise its own, declared error. Anything else — another
exception, a hang, memory out of proportion to the input — is a finding.

Used by tests/fuzz/test_fuzz.py (a few hundred inputs each, in every test run) and by
tools/fuzz.py (hundreds of thousands, with a per-input time limit and peak memory).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from lookout.k8s.inject import InjectOptions
from lookout.k8s.webhook import review
from lookout.sidecar.pipeline import kserve
from lookout.sidecar.pipeline.images import decode_rgb
from lookout.sidecar.pipeline.inputs import extract_image
from lookout.sidecar.pipeline.outputs import OutputSettings, extract_detections
from lookout.sidecar.pipeline.parse_errors import ParseFailure
from lookout.sidecar.pipeline.protos import INFER_METHOD, STREAM_INFER_METHOD, message_class
from lookout.sidecar.pipeline.raw_headers import RawHeaders
from lookout.sidecar.samples.policy import PolicyError, parse_policy
from lookout.sidecar.samples.query import KNOWN, QueryError, SampleQuery
from lookout.sidecar.samples.thumbnails import ThumbnailSettings, make_thumbnail
from lookout.slo.spec import SpecError, parse_spec

# -- building blocks -------------------------------------------------------------------


def _encoded(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (90, 140, 200) if mode == "RGB" else 128).save(buffer, fmt)
    return buffer.getvalue()


SEED_IMAGES = [_encoded("JPEG", (64, 48)), _encoded("PNG", (33, 17)),
               _encoded("WEBP", (40, 40)), _encoded("PNG", (5, 5), "L"),
               _encoded("JPEG", (1, 1))]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid small image, then bit flips, overwrites, truncation or junk appended."""
    data = bytearray(draw(st.sampled_from(SEED_IMAGES)))
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "overwrite", "truncate", "append"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(chunk)] = chunk
        elif action == "truncate":
            del data[at:]
        else:
            data += draw(st.binary(max_size=32))
    return bytes(data)


image_bytes = st.one_of(mutated_images(), st.binary(max_size=256))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64),
                         st.floats(allow_nan=True, allow_infinity=True),
                         st.text(max_size=20))
json_values = st.recursive(
    json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                          st.dictionaries(st.text(max_size=8), inner,
                                                          max_size=6)),
    max_leaves=30)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def base64_json_bodies(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    image = draw(image_bytes)
    text = base64.b64encode(image).decode()
    if draw(st.booleans()):
        text = "data:image/jpeg;base64," + text
    if draw(st.booleans()):  # corrupt the base64 itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(alphabet=string.printable, max_size=4)) + text[cut:]
    field = draw(st.sampled_from(["image", "img", "data", "inputs", "other"]))
    document: Any = {field: [text] if field == "inputs" else text}
    if draw(st.booleans()):
        document = {"payload": document, "extra": draw(json_values)}
    return {"Content-Type": "application/json"}, _json_bytes(document)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    boundary = draw(st.sampled_from(["b0undary", "x" * 70, "a-b_c", ""]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["file", "image", "meta"]))
        headers = f'Content-Disposition: form-data; name="{name}"; filename="f.jpg"\r\n'
        if draw(st.booleans()):
            headers += "Content-Type: image/jpeg\r\n"
        parts.append(f"--{boundary}\r\n{headers}\r\n".encode() + draw(image_bytes) + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body)))]
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


DATATYPES = ["BYTES", "UINT8", "INT8", "FP16", "FP32", "FP64", "INT32", "INT64", "BOOL",
             "BF16", "NOPE"]


@st.composite
def kserve_tensor(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], bytes]:
    """A tensor entry of a V2 body, and its binary data (empty when it is JSON data)."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(st.lists(st.integers(-2, 700), max_size=5))
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if draw(st.booleans()):
        raw = draw(st.one_of(st.binary(max_size=512),
                             st.builds(lambda image: len(image).to_bytes(4, "little") + image,
                                       image_bytes)))
        entry["parameters"] = {"binary_data_size": draw(st.one_of(
            st.just(len(raw)), st.integers(-5, 10**9), st.text(max_size=3)))}
        return entry, raw
    entry["data"] = draw(st.one_of(json_values, st.lists(st.floats(), max_size=64),
                                   st.lists(st.builds(lambda b: base64.b64encode(b).decode(),
                                                      image_bytes), max_size=2)))
    return entry, b""


@st.composite
def kserve_bodies(draw: st.DrawFn, section: str) -> tuple[dict[str, str], bytes]:
    tensors = [draw(kserve_tensor(f"t{i}")) for i in range(draw(st.integers(0, 3)))]
    header = {section: [entry for entry, _ in tensors]}
    if draw(st.booleans()):
        header["parameters"] = draw(json_values)
    head = _json_bytes(header)
    binary = b"".join(raw for _, raw in tensors)
    headers = {"Content-Type": "application/octet-stream"}
    if binary or draw(st.booleans()):
        length = draw(st.one_of(st.just(len(head)), st.integers(-3, len(head) + 50),
                                st.text(max_size=4)))
        headers[kserve.HEADER_LENGTH] = str(length)
    else:
        headers["Content-Type"] = "application/json"
    return headers, head + binary


REQUEST_TYPES = ["image/jpeg", "image/png", "image/webp", "application/octet-stream",
                 "text/plain", "", "application/json"]
request_bodies = st.one_of(
    st.tuples(st.builds(lambda t: {"Content-Type": t} if t else {},
                        st.sampled_from(REQUEST_TYPES)), image_bytes),
    base64_json_bodies(), multipart_bodies(), kserve_bodies("inputs"),
    st.tuples(st.just({"Content-Type": "application/json"}), st.builds(_json_bytes,
                                                                       json_values)),
)

# -- V2 gRPC messages ----------------------------------------------------------------

GRPC_HEADERS = RawHeaders([(b"content-type", b"application/grpc")])
CONTENTS = {"FP32": "fp32_contents", "INT32": "int_contents", "UINT8": "uint_contents",
            "BYTES": "bytes_contents", "BOOL": "bool_contents", "FP64": "fp64_contents"}


@st.composite
def grpc_tensors(draw: st.DrawFn, message: Any, entries: Any, raw: Any) -> None:
    """Tensors added to a ModelInferRequest/Response: raw contents or typed ones."""
    use_raw = draw(st.booleans())
    for index in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from([*DATATYPES, "FP16", "NOPE", ""]))
        entry = entries.add(name=f"t{index}", datatype=datatype,
                            shape=draw(st.lists(st.integers(-2, 700), max_size=5)))
        if use_raw:
            raw.append(draw(st.one_of(st.binary(max_size=512), st.builds(
                lambda image: len(image).to_bytes(4, "little") + image, image_bytes))))
        elif datatype in CONTENTS:
            values = getattr(entry.contents, CONTENTS[datatype])
            if datatype == "BYTES":
                values.extend(draw(st.lists(image_bytes, max_size=2)))
            elif datatype in ("FP32", "FP64"):
                values.extend(draw(st.lists(st.floats(width=32), max_size=64)))
            elif datatype == "BOOL":
                values.extend(draw(st.lists(st.booleans(), max_size=64)))
            else:
                values.extend(draw(st.lists(st.integers(0, 2**31 - 1), max_size=64)))
    if use_raw and draw(st.booleans()):
        raw.append(b"")  # one more raw entry than tensors


@st.composite
def grpc_messages(draw: st.DrawFn, kind: str) -> tuple[str, bytes]:
    """A V2 gRPC message, well formed or not, then perhaps cut or corrupted on the wire:
    (method, bytes)."""
    method = draw(st.sampled_from([INFER_METHOD, STREAM_INFER_METHOD]))
    if kind == "request":
        message = message_class("inference.ModelInferRequest")(model_name="yolo")
        draw(grpc_tensors(message, message.inputs, message.raw_input_contents))
    else:
        message = message_class("inference.ModelInferResponse")(model_name="yolo",
                                                                model_version="1")
        draw(grpc_tensors(message, message.outputs, message.raw_output_contents))
    data = message.SerializeToString()
    if kind == "response" and method == STREAM_INFER_METHOD:
        stream = message_class("inference.ModelStreamInferResponse")()
        if draw(st.booleans()):
            stream.infer_response.CopyFrom(message)
        else:
            stream.error_message = draw(st.text(max_size=20))
        data = stream.SerializeToString()
    damage = draw(st.sampled_from(["none", "cut", "flip", "garbage"]))
    if damage == "cut" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    elif damage == "garbage":
        data = draw(st.binary(max_size=256))
    return method, data


def check_grpc_request(case: tuple[str, bytes]) -> None:
    method, body = case
    check_request((GRPC_HEADERS, body), method)


def check_grpc_response(case: tuple[str, bytes]) -> None:
    method, body = case
    try:
        detections = extract_detections(GRPC_HEADERS, body, None, OutputSettings(),
                                        path=method)
    except ParseFailure:
        return
    assert len(detections.boxes) == len(detections.scores) == len(detections.classes)


# -- detection responses ---------------------------------------------------------------

number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                   st.text(max_size=5), st.none())


@st.composite
def detection_items(draw: st.DrawFn) -> Any:
    style = draw(st.sampled_from(["ultralytics", "xyxy", "xywh", "roboflow", "junk"]))
    if style == "ultralytics":
        item: Any = {"box": {k: draw(number) for k in ("x1", "y1", "x2", "y2")},
                     "name": draw(st.text(max_size=8)), "class": draw(number),
                     "confidence": draw(number)}
    elif style in ("xyxy", "xywh"):
        item = {style: draw(st.lists(number, max_size=6)), "confidence": draw(number),
                "class": draw(number)}
    elif style == "roboflow":
        item = {k: draw(number) for k in ("x", "y", "width", "height", "confidence")}
        item["class"] = draw(st.text(max_size=6))
    else:
        item = draw(json_values)
    return item


@st.composite
def response_bodies(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    shape = draw(st.sampled_from(["list", "detections", "predictions", "nested", "kserve",
                                  "raw"]))
    if shape == "kserve":
        return draw(kserve_bodies("outputs"))
    if shape == "raw":
        return {"Content-Type": "application/json"}, draw(st.binary(max_size=200))
    items = draw(st.lists(detection_items(), max_size=8))
    document: Any = {"list": items, "detections": {"detections": items},
                     "predictions": {"predictions": items},
                     "nested": {"result": [{"objects": items}]}}[shape]
    return {"Content-Type": "application/json"}, _json_bytes(document)


# -- the rest --------------------------------------------------------------------------

VALID_SPEC = {"service": "s", "model": "m", "slos": [
    {"name": "availability", "kind": "availability", "objective": 0.999},
    {"name": "latency", "kind": "latency", "objective": 0.99, "threshold": "250ms"},
    {"name": "precision", "kind": "quality", "proxy": "precision", "objective": 0.8}]}


@st.composite
def spec_documents(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(json_values)
    document = json.loads(json.dumps(VALID_SPEC))
    places = [document, *document["slos"]]
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(places))
        key = draw(st.sampled_from([*target.keys(), "period", "labels", "window_scale",
                                    "low_traffic_min_events", "apiVersion", "extra"]))
        target[key] = draw(json_values)
    return document


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "p", "annotations": {"lookout.io/inject": "true"}},
       "spec": {"containers": [{"name": "app", "image": "yolo:1",
                                "ports": [{"name": "http", "containerPort": 8000}]}]}}


@st.composite
def admission_reviews(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(json_values)
    pod = json.loads(json.dumps(POD))
    places = [pod, pod["metadata"], pod["spec"], pod["spec"]["containers"][0],
              pod["metadata"]["annotations"]]
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(places))
        key = draw(st.sampled_from([*where.keys(), "initContainers", "lookout.io/port",
                                    "lookout.io/sample-rate", "hostNetwork", "volumes"]))
        where[key] = draw(json_values)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": draw(st.text(max_size=8)), "kind": {"kind": "Pod"},
                        "namespace": draw(st.sampled_from(["vision", "lookout-system"])),
                        "object": pod}}


query_params = st.dictionaries(
    st.one_of(st.sampled_from(KNOWN), st.text(max_size=6)),
    st.one_of(st.text(max_size=30), st.sampled_from(["90m", "2d", "1e308", "-1", "nan",
                                                    "2026-11-22T03:00Z", "0", "9" * 30])),
    max_size=5)
policy_texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(st.sampled_from(["random", "error", "slow", "classes", "drift", "x"]),
                       st.lists(st.tuples(st.sampled_from(["share", "per_minute", "seconds",
                                                           "per_day", "classes", "q"]),
                                          st.text(max_size=6)), max_size=3)),
             max_size=4).map(lambda rules: "; ".join(
                 name + "".join(f" {k}={v}" for k, v in keys) for name, keys in rules)))


# -- the contracts ---------------------------------------------------------------------

def check_request(case: tuple[dict[str, str], bytes], path: str) -> None:
    headers, body = case
    try:
        image = extract_image(path, headers, body)
    except ParseFailure:
        return
    if image is None:
        return
    try:  # what drift features and thumbnails do next with it
        decode_rgb(image, 64, 64)
        make_thumbnail(image, [*np.zeros((1, 4)), 0, 0, image.width, image.height],
                       ["x"], ThumbnailSettings(longest_side=32, pixelate_all=True))
    except (OSError, ValueError):
        pass  # the documented errors; callers count them


def check_response(case: tuple[dict[str, str], bytes]) -> None:
    headers, body = case
    try:
        detections = extract_detections(headers, body, None, OutputSettings())
    except ParseFailure:
        return
    assert len(detections.boxes) == len(detections.scores) == len(detections.classes)


def check_kserve(case: tuple[dict[str, str], bytes]) -> None:
    headers, body = case
    try:
        _, tensors = kserve.parse_request(body, headers)
        for tensor in tensors:
            kserve.as_array(tensor)
    except kserve.KServeFormatError:
        pass


def check_spec(document: Any) -> None:
    with contextlib.suppress(SpecError):
        parse_spec(document)


def check_review(body: Any) -> None:
    answer = review(body, "annotation", InjectOptions(), "lookout-system")
    assert answer["response"]["allowed"] is True
    json.dumps(answer)  # what the server writes back must serialise


def check_query(params: dict[str, str]) -> None:
    with contextlib.suppress(QueryError):
        SampleQuery.from_params(params, now=1.8e9)


def check_policy(text: str) -> None:
    with contextlib.suppress(PolicyError):
        parse_policy(text)


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy
    check: Callable[[Any], None]
    what: str


TARGETS: tuple[Target, ...] = (
    Target("http_request_bodies", request_bodies,
           lambda case: check_request(case, "/predict"),
           "raw images, base64 JSON, multipart, then decode and thumbnail"),
    Target("kserve_requests", kserve_bodies("inputs"),
           lambda case: check_request(case, "/v2/models/yolo/infer"),
           "KServe V2 JSON and binary requests through the input adapter"),
    Target("kserve_framing", kserve_bodies("inputs"), check_kserve,
           "KServe V2 header length, JSON and binary tensor framing"),
    Target("detection_responses", response_bodies(), check_response,
           "detection JSON shapes and KServe outputs"),
    Target("grpc_infer_requests", grpc_messages("request"), check_grpc_request,
           "V2 gRPC ModelInferRequest messages, whole, cut and corrupted"),
    Target("grpc_infer_responses", grpc_messages("response"), check_grpc_response,
           "V2 gRPC ModelInferResponse and ModelStreamInferResponse messages"),
    Target("image_decoding", st.tuples(st.just({"Content-Type": "image/jpeg"}),
                                       mutated_images()),
           lambda case: check_request(case, "/predict"),
           "mutated JPEG/PNG/WebP through decode and thumbnail"),
    Target("slo_spec", spec_documents(), check_spec, "slo.yaml documents"),
    Target("admission_review", admission_reviews(), check_review, "AdmissionReview bodies"),
    Target("sample_api_query", query_params, check_query, "sample API query parameters"),
    Target("sampling_policy", policy_texts, check_policy, "sample_strategies rules"),
)
