"""KServe V2 / Open Inference Protocol REST bodies, JSON and binary tensor extension.

With the binary extension the body is a JSON header of `Inference-Header-Content-Length`
bytes followed by the raw data of every tensor whose `parameters.binary_data_size` is
set, in the order the tensors are listed. Raw data is little-endian, row-major; BYTES
elements are each a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookout.sidecar.pipeline import json_body

INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer/?$")
HEADER_LENGTH = "Inference-Header-Content-Length"

NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES: dict[np.dtype, str] = {dtype: name for name, dtype in NUMPY_TYPES.items()}


class KServeFormatError(ValueError):
    """The body does not follow the protocol; the message says where."""


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]  # list for BYTES

    def __post_init__(self) -> None:
        expected = math.prod(self.shape)  # exact: a crafted shape cannot overflow
        actual = len(self.data) if isinstance(self.data, list) else int(self.data.size)
        if actual != expected:
            raise KServeFormatError(
                f"tensor {self.name!r}: shape {list(self.shape)} needs {expected} elements, "
                f"got {actual}"
            )


def is_infer_path(path: str) -> bool:
    return INFER_PATH.match(path) is not None


def header_length(headers: Any) -> int | None:
    """The binary extension's header length, or None for a plain JSON body."""
    value = headers.get(HEADER_LENGTH) if headers is not None else None
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise KServeFormatError(f"{HEADER_LENGTH} is not a number: {value!r}") from None
    if length < 0:
        raise KServeFormatError(f"{HEADER_LENGTH} is negative: {length}")
    return length


def _split_bytes_elements(raw: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise KServeFormatError(f"tensor {name!r}: BYTES element length cut short")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise KServeFormatError(
                f"tensor {name!r}: BYTES element of {size} bytes runs past the data"
            )
        elements.append(raw[offset:offset + size])
        offset += size
    return elements


def _leaves(data: Any) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _leaves(item)
    else:
        yield data


def _json_data(entry: dict[str, Any], datatype: str, name: str) -> np.ndarray | list[bytes]:
    data = entry.get("data")
    if data is None:
        raise KServeFormatError(f"tensor {name!r} has neither 'data' nor binary_data_size")
    if datatype == "BYTES":  # JSON carries BYTES elements as strings, nested by shape
        flat = list(_leaves(data))
        if not all(isinstance(item, str) for item in flat):
            raise KServeFormatError(f"tensor {name!r}: BYTES data must be strings")
        return [item.encode("utf-8") for item in flat]
    try:  # values the datatype cannot hold (256 as UINT8, 1e300 as FP16) are errors
        with np.errstate(over="raise", invalid="raise"):
            return np.asarray(data, dtype=NUMPY_TYPES[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as error:
        raise KServeFormatError(f"tensor {name!r}: data is not {datatype}: {error}") from None


def parse_header(body: bytes, length: int | None) -> dict[str, Any]:
    """The JSON header of a V2 body (the whole body without the binary extension)."""
    if length is not None and length > len(body):
        raise KServeFormatError(
            f"{HEADER_LENGTH} says {length} bytes but the body has only {len(body)}"
        )
    try:
        header = json_body.loads(body if length is None else memoryview(body)[:length])
    except json_body.JsonBodyError as error:
        raise KServeFormatError(f"inference header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise KServeFormatError("inference header is not a JSON object")
    return header


def binary_data(raw: bytes, datatype: str, name: str) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        return _split_bytes_elements(raw, name)
    dtype = NUMPY_TYPES[datatype]
    if len(raw) % dtype.itemsize:
        raise KServeFormatError(
            f"tensor {name!r}: {len(raw)} bytes is not a whole number of {datatype}"
        )
    return np.frombuffer(raw, dtype=dtype)


def tensors_from_header(header: dict[str, Any], body: bytes, length: int | None,
                        section: str) -> list[Tensor]:
    """The `inputs` (requests) or `outputs` (responses) named in a parsed header, with
    their data taken from the header or from the binary part of `body`."""
    entries = header.get(section)
    if not isinstance(entries, list):
        raise KServeFormatError(f"inference header has no '{section}' list")
    offset = length if length is not None else len(body)
    tensors = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KServeFormatError(f"{section}[{index}] is not an object")
        name = str(entry.get("name", index))
        datatype = entry.get("datatype")
        if not isinstance(datatype, str) or (datatype != "BYTES"
                                             and datatype not in NUMPY_TYPES):
            raise KServeFormatError(f"tensor {name!r}: unknown datatype {datatype!r}")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and d >= 0 for d in shape
        ):
            raise KServeFormatError(f"tensor {name!r}: shape must be a list of sizes")
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise KServeFormatError(f"tensor {name!r}: parameters is not an object")
        size = parameters.get("binary_data_size")
        if size is None:
            data = _json_data(entry, datatype, name)
        elif length is None:
            raise KServeFormatError(
                f"tensor {name!r} has binary data but the {HEADER_LENGTH} header is missing"
            )
        elif not isinstance(size, int) or size < 0 or offset + size > len(body):
            raise KServeFormatError(
                f"tensor {name!r}: binary_data_size {size} runs past the body"
            )
        else:
            data = binary_data(body[offset:offset + size], datatype, name)
            offset += size
        tensors.append(Tensor(name, datatype, tuple(shape), data))
    return tensors


def parse_tensors(body: bytes, length: int | None, section: str) -> list[Tensor]:
    """The `inputs` (requests) or `outputs` (responses) of a V2 inference body."""
    return tensors_from_header(parse_header(body, length), body, length, section)


def as_array(tensor: Tensor) -> np.ndarray:
    if isinstance(tensor.data, list):
        raise KServeFormatError(f"tensor {tensor.name!r} is BYTES, not numeric")
    return tensor.data.reshape(tensor.shape)


def parse_request(body: bytes, headers: Any) -> tuple[dict[str, Any], list[Tensor]]:
    """A V2 inference request as a server sees it: its JSON header and its inputs."""
    length = header_length(headers)
    header = parse_header(body, length)
    return header, tensors_from_header(header, body, length, "inputs")


def wants_binary_output(header: dict[str, Any]) -> bool:
    """Whether a request's JSON header asks for outputs in the binary extension."""
    requested = header.get("outputs") or [{}]
    first = requested[0] if isinstance(requested[0], dict) else {}
    return bool((first.get("parameters") or {}).get("binary_data")) or bool(
        (header.get("parameters") or {}).get("binary_data_output"))


def response_headers(length: int | None) -> dict[str, str]:
    """Content type, and the header length for a binary-extension body."""
    if length is None:
        return {"Content-Type": "application/json"}
    return {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(length)}


def encode_infer_body(section: str, tensors: list[tuple[str, np.ndarray | list[bytes]]],
                      binary: bool, extra: dict[str, Any] | None = None
                      ) -> tuple[bytes, int | None]:
    """Build a V2 body (the remote reference's requests, the demo server's and the test
    upstreams' answers); returns the body and, for the binary extension, the header
    length to send."""
    entries, blobs = [], []
    for name, value in tensors:
        if isinstance(value, list):
            datatype, shape = "BYTES", [len(value)]
        else:
            value = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
            datatype, shape = DATATYPES[value.dtype], list(value.shape)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            raw = b"".join(struct.pack("<I", len(v)) + v for v in value) \
                if isinstance(value, list) else value.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = [v.decode("latin-1") for v in value] if isinstance(value, list) \
                else value.reshape(-1).tolist()
        entries.append(entry)
    header = json.dumps({**(extra or {}), section: entries}).encode()
    if not binary:
        return header, None
    return header + b"".join(blobs), len(header)
