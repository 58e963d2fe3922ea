"""An observation as a channel record: a small head (the exchange's facts and its two
header blocks as the wire carried them, never its bodies) followed by the two bodies'
bytes as they are. A body that was cut at observe_max_bytes cannot be decoded, so its
prefix does not cross: the flag alone says what analysis needs to know.

The head is `marshal`led: both ends are the same interpreter, it is plain tuples of
str, bytes and numbers, and unlike pickle it cannot build an arbitrary object on load.
Header blocks cross as byte pairs; the worker builds the multidict when it reads one.
"""

from __future__ import annotations

import marshal
import struct
from dataclasses import fields

from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.raw_headers import RawHeaders

_HEAD_LENGTH = struct.Struct("<I")
_BODIES = ("request_body", "response_body")
_HEADERS = ("request_headers", "response_headers")
_FACTS = tuple(f.name for f in fields(Observation) if f.name not in _BODIES + _HEADERS)


def encode(observation: Observation) -> tuple[bytes, bytes, bytes | memoryview,
                                              bytes | memoryview]:
    request = b"" if observation.request_truncated else observation.request_body
    response = b"" if observation.response_truncated else observation.response_body
    head = marshal.dumps((
        tuple(getattr(observation, name) for name in _FACTS),
        list(RawHeaders.of(observation.request_headers).raw),
        list(RawHeaders.of(observation.response_headers).raw),
        len(request), len(response),
    ))
    return _HEAD_LENGTH.pack(len(head)), head, request, response


def decode(record: memoryview | bytes) -> Observation:
    """The observation in `record`, its bodies copied out (once) into bytes."""
    (head_length,) = _HEAD_LENGTH.unpack_from(record)
    start = _HEAD_LENGTH.size
    facts, request_headers, response_headers, request_length, response_length = \
        marshal.loads(record[start:start + head_length])
    start += head_length
    view = memoryview(record)
    request = bytes(view[start:start + request_length])
    start += request_length
    response = bytes(view[start:start + response_length])
    return Observation(request_headers=RawHeaders(request_headers),
                       response_headers=RawHeaders(response_headers),
                       request_body=request, response_body=response,
                       **dict(zip(_FACTS, facts, strict=True)))
