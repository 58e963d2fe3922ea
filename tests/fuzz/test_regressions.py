"""Each input the fuzzers found that broke a parser's contract, kept as a test."""

from __future__ import annotations

import copy
import json
import tracemalloc

import pytest

from lookout.k8s.inject import InjectOptions
from lookout.k8s.webhook import review
from lookout.sidecar.pipeline import kserve
from lookout.sidecar.pipeline.inputs import extract_image
from lookout.sidecar.pipeline.outputs import OutputSettings, extract_detections
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason
from lookout.sidecar.samples.policy import PolicyError, parse_policy
from lookout.slo.spec import SpecError, parse_spec
from tests.fuzz.targets import POD, VALID_SPEC

INFER = "/v2/models/yolo/infer"


def _infer_json(entry: dict) -> bytes:
    return json.dumps({"inputs": [{"name": "t0", "shape": [1], **entry}]}).encode()


@pytest.mark.parametrize("entry", [
    {"datatype": "BYTES", "data": [0.0]},  # hypothesis: TypeError from bytes(float)
    {"datatype": "BYTES", "data": [[["x"], 7]]},  # nested, not all strings
    {"datatype": "UINT8", "data": [256.0]},  # hypothesis: OverflowError
    {"datatype": "FP16", "data": [1e300]},  # overflow in the cast
    {"datatype": [1, 6], "data": [1, 2]},  # atheris: unhashable datatype
    {"datatype": "FP32", "data": [1.0], "parameters": [1]},  # parameters not an object
])
def test_malformed_kserve_tensors_are_bad_kserve(entry: dict) -> None:
    with pytest.raises(ParseFailure) as failure:
        extract_image(INFER, {"Content-Type": "application/json"}, _infer_json(entry))
    assert failure.value.reason is Reason.BAD_KSERVE


def test_a_bytes_element_given_as_a_number_allocates_nothing() -> None:
    """`bytes(10**9)` would have allocated a gigabyte from a 60-byte body."""
    tracemalloc.start()
    try:
        with pytest.raises(kserve.KServeFormatError, match="must be strings"):
            kserve.parse_request(_infer_json({"datatype": "BYTES", "data": [10**9]}), {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024**2


def test_an_empty_header_length_on_a_response_is_bad_kserve() -> None:
    with pytest.raises(ParseFailure) as failure:
        extract_detections({kserve.HEADER_LENGTH: ""}, b"{}", None, OutputSettings())
    assert failure.value.reason is Reason.BAD_KSERVE


def test_a_spec_with_a_null_api_version_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="service"):
        parse_spec({**VALID_SPEC, "apiVersion": None, "service": None})


@pytest.mark.parametrize("text", ["\\", '"', "random share='0.1"])
def test_unbalanced_quotes_in_a_policy_are_a_policy_error(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(("where", "key", "value"), [
    ("metadata", "annotations", "inject"),  # 'str' object has no attribute 'get'
    ("metadata", "annotations", {"lookout.io/inject": "true", "lookout.io/port": True}),
    ("spec", "containers", True),
    ("spec", "containers", [None]),
    ("pod", "metadata", False),  # 'bool' object has no attribute 'items'
])
def test_malformed_pods_are_admitted_with_a_warning(where: str, key: str, value) -> None:
    pod = copy.deepcopy(POD)
    {"pod": pod, "metadata": pod["metadata"], "spec": pod["spec"]}[where][key] = value
    answer = review({"request": {"uid": "u1", "kind": {"kind": "Pod"}, "namespace": "vision",
                                 "object": pod}}, "annotation", InjectOptions(), "lookout-system")
    assert answer["response"]["allowed"] is True
    assert answer["response"]["uid"] == "u1"
    json.dumps(answer)


@pytest.mark.parametrize("class_id", [9.223372036854776e18, 1e309, -2, 2**40])
def test_a_class_id_out_of_range_is_a_bad_detection(class_id) -> None:
    """hypothesis: OverflowError from a class id of 9.2e18 reaching numpy's int64."""
    body = json.dumps([{"box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}, "class": class_id,
                        "confidence": 0.5}]).encode()
    with pytest.raises(ParseFailure) as failure:
        extract_detections({"Content-Type": "application/json"}, body, None, OutputSettings())
    assert failure.value.reason is Reason.BAD_DETECTION


def test_coordinates_beyond_float32_are_a_bad_detection() -> None:
    body = json.dumps([{"box": {"x1": 0, "y1": 0, "x2": 1e39, "y2": 1}, "class": 0,
                        "confidence": 0.5}]).encode()
    with pytest.raises(ParseFailure, match="non-finite") as failure:
        extract_detections({"Content-Type": "application/json"}, body, None, OutputSettings())
    assert failure.value.reason is Reason.BAD_DETECTION
