"""Bodies as the application wrote them, under their `Content-Encoding`, for analysis.

The relay forwards the compressed bytes untouched; only the analysis workers inflate a
copy. Inflating is bounded by the decompressed size (`observe_max_bytes`, the most an
uncompressed body may bring): a few kilobytes of gzip can expand to gigabytes, so output
is produced in steps and the first step past the bound refuses the body (parse failure
`decompressed_too_large`) before anything more is expanded.

gzip, x-gzip and deflate (zlib-wrapped, or raw as some servers send it) are understood;
br when the optional `brotli` module is installed. Codings listed together
(`gzip, br`) were applied in order and are undone in reverse.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping

from multidict import CIMultiDict

from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason

try:
    import brotli
except ImportError:  # optional: br bodies are then counted as unsupported
    brotli = None

STEP = 256 * 1024  # bytes of input per step: bounds the overshoot past the limit
IDENTITY = frozenset(("", "identity"))
_ZLIB_WAYS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
              "deflate": zlib.MAX_WBITS}


def codings(headers: Mapping[str, str]) -> list[str]:
    """The codings in the order they were applied; identity left out."""
    value = headers.get("Content-Encoding", "") if headers is not None else ""
    return [c.strip().lower() for c in value.split(",") if c.strip().lower() not in IDENTITY]


def _too_large(coding: str, limit: int) -> ParseFailure:
    return ParseFailure(Reason.DECOMPRESSED_TOO_LARGE,
                        f"{coding} body inflates past {limit} bytes (observe_max_bytes); "
                        f"refused before expanding further")


def _inflate_zlib(body: bytes, coding: str, limit: int) -> bytes:
    way = _ZLIB_WAYS[coding]
    try:
        return _bounded_zlib(body, way, coding, limit)
    except zlib.error as error:
        if coding != "deflate":
            raise ParseFailure(Reason.BAD_ENCODING, f"{coding} body is corrupt: {error}") \
                from None
    try:  # "deflate" without the zlib wrapper, as some servers send it
        return _bounded_zlib(body, -zlib.MAX_WBITS, coding, limit)
    except zlib.error as error:
        raise ParseFailure(Reason.BAD_ENCODING, f"deflate body is corrupt: {error}") from None


def _bounded_zlib(body: bytes, way: int, coding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(way)
    output = bytearray()
    pending = memoryview(body)
    while pending and not inflater.eof:
        output += inflater.decompress(pending, limit + 1 - len(output))
        if len(output) > limit:
            raise _too_large(coding, limit)
        pending = memoryview(inflater.unconsumed_tail) if inflater.unconsumed_tail else \
            memoryview(b"")
    if not inflater.eof:
        raise ParseFailure(Reason.BAD_ENCODING, f"{coding} body ends before its stream does")
    return bytes(output)


def _inflate_brotli(body: bytes, limit: int) -> bytes:
    if brotli is None:
        raise ParseFailure(Reason.UNSUPPORTED_ENCODING,
                           "br body, and the optional brotli module is not installed")
    inflater = brotli.Decompressor()
    output = bytearray()
    try:
        for start in range(0, len(body), STEP):
            output += inflater.process(body[start:start + STEP],
                                       output_buffer_limit=limit + 1 - len(output))
            while len(output) <= limit and not inflater.can_accept_more_data():
                output += inflater.process(b"", output_buffer_limit=limit + 1 - len(output))
            if len(output) > limit:
                raise _too_large("br", limit)
        finished = inflater.is_finished()
    except brotli.error as error:
        raise ParseFailure(Reason.BAD_ENCODING, f"br body is corrupt: {error}") from None
    if not finished:
        raise ParseFailure(Reason.BAD_ENCODING, "br body ends before its stream does")
    return bytes(output)


def decoded(headers: Mapping[str, str], body: bytes, limit: int) -> bytes:
    """`body` with every content coding undone, at most `limit` bytes of it."""
    for coding in reversed(codings(headers)):
        if not body:
            return body
        if coding in _ZLIB_WAYS:
            body = _inflate_zlib(body, coding, limit)
        elif coding == "br":
            body = _inflate_brotli(body, limit)
        else:
            raise ParseFailure(Reason.UNSUPPORTED_ENCODING,
                               f"Content-Encoding {coding!r} is not one lookout inflates "
                               f"(gzip, deflate{', br' if brotli else ''})")
    return body


def _without_coding(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() != "content-encoding")


def inflate_observation(observation: Observation, limit: int
                        ) -> tuple[Observation, ParseFailure | None, ParseFailure | None]:
    """The observation with compressed bodies inflated (at most `limit` bytes each), and
    why either side could not be: a request that does not inflate still leaves the
    response's detections to count."""
    if not (codings(observation.request_headers) or codings(observation.response_headers)):
        return observation, None, None
    changes: dict[str, object] = {}
    failures: dict[str, ParseFailure | None] = {"request": None, "response": None}
    for side in failures:
        headers = getattr(observation, f"{side}_headers")
        if not codings(headers):
            continue
        try:
            changes[f"{side}_body"] = decoded(headers, getattr(observation, f"{side}_body"),
                                              limit)
        except ParseFailure as failure:
            failures[side], changes[f"{side}_body"] = failure, b""
        changes[f"{side}_headers"] = _without_coding(headers)
    return dataclasses.replace(observation, **changes), failures["request"], \
        failures["response"]
