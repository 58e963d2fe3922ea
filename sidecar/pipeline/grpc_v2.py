"""KServe V2 / Open Inference Protocol messages from the gRPC port, as tensors.

The request path hands over each message as the bytes it relayed; here, in the analysis
workers, `ModelInferRequest`, `ModelInferResponse` and the stream's
`ModelStreamInferResponse` become the same `Tensor`s a REST body gives, so images,
detections, shadow, drift and samples work alike for both ports. Tensor data comes from
`raw_input_contents`/`raw_output_contents` (little-endian, BYTES elements each a 4-byte
length and its bytes, as in the REST binary extension) or from the typed `contents`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from lookout.sidecar.pipeline import kserve
from lookout.sidecar.pipeline.kserve import KServeFormatError, Tensor
from lookout.sidecar.pipeline.protos import INFER_METHOD, STREAM_INFER_METHOD, message_class

GRPC_CONTENT_TYPE = "application/grpc"
INFER_METHODS = frozenset((INFER_METHOD, STREAM_INFER_METHOD))
_REQUEST = message_class("inference.ModelInferRequest")
_RESPONSE = message_class("inference.ModelInferResponse")
_STREAM_RESPONSE = message_class("inference.ModelStreamInferResponse")
# which field of InferTensorContents holds each datatype (FP16 travels only as raw bytes)
_CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def is_grpc(headers: Mapping[str, str]) -> bool:
    """Whether an observation's body is a gRPC message (its headers are the metadata)."""
    return headers.get("content-type", "").startswith(GRPC_CONTENT_TYPE)


def _parse(kind: Any, body: bytes) -> Any:
    try:
        return kind.FromString(body)
    except (DecodeError, RecursionError, ValueError) as error:
        raise KServeFormatError(f"not a {kind.DESCRIPTOR.name}: {error or 'bad wire data'}"
                                ) from None


def _typed(contents: Any, datatype: str, name: str) -> np.ndarray | list[bytes]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise KServeFormatError(f"tensor {name!r}: {datatype} must be sent as raw contents")
    values = getattr(contents, field)
    if datatype == "BYTES":
        return list(values)
    try:
        with np.errstate(over="raise", invalid="raise"):
            return np.asarray(values, dtype=kserve.NUMPY_TYPES[datatype])
    except (ValueError, OverflowError, FloatingPointError) as error:
        raise KServeFormatError(f"tensor {name!r}: contents are not {datatype}: {error}"
                                ) from None


def _tensors(entries: Sequence[Any], raw: Sequence[bytes], section: str) -> list[Tensor]:
    if raw and len(raw) != len(entries):
        raise KServeFormatError(f"{len(raw)} raw contents for {len(entries)} {section}")
    tensors = []
    for index, entry in enumerate(entries):
        name = entry.name or str(index)
        datatype = entry.datatype
        if datatype != "BYTES" and datatype not in kserve.NUMPY_TYPES:
            raise KServeFormatError(f"tensor {name!r}: unknown datatype {datatype!r}")
        shape = tuple(entry.shape)
        if any(dimension < 0 for dimension in shape):
            raise KServeFormatError(f"tensor {name!r}: shape {list(shape)} has a negative size")
        data = kserve.binary_data(raw[index], datatype, name) if raw else \
            _typed(entry.contents, datatype, name)
        tensors.append(Tensor(name, datatype, shape, data))
    return tensors


def request_tensors(body: bytes) -> list[Tensor]:
    """The inputs of a `ModelInferRequest` (unary or one message of a stream)."""
    request = _parse(_REQUEST, body)
    return _tensors(request.inputs, request.raw_input_contents, "inputs")


def response_tensors(path: str, body: bytes,
                     served: dict[str, str] | None = None) -> list[Tensor]:
    """The outputs of a `ModelInferResponse`, or of the one a stream's
    `ModelStreamInferResponse` carries; the model and version that answered go into
    `served`."""
    if path == STREAM_INFER_METHOD:
        message = _parse(_STREAM_RESPONSE, body)
        if message.error_message:
            raise KServeFormatError(f"the stream answered an error: {message.error_message!r}")
        response = message.infer_response
    else:
        response = _parse(_RESPONSE, body)
    if served is not None:
        served.update({key: value for key, value in (("model_name", response.model_name),
                                                     ("model_version", response.model_version))
                       if value})
    return _tensors(response.outputs, response.raw_output_contents, "outputs")
