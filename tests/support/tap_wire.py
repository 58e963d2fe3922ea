"""The tap's layouts written from Python (`tap/PROTOCOL.md`), for tests of the readers:
records as the C filter puts them in a ring, counter slots as it fills them."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from lookout.sidecar.dataplane.tap_counters import (
    AREA_HEAD_BYTES,
    BUCKETS,
    HEADER_BYTES,
    SLOT_BYTES,
    TapCounters,
)

Headers = Sequence[tuple[bytes, bytes]]


def headers(pairs: Headers) -> bytes:
    return b"".join(struct.pack("<II", len(name), len(value)) + name + value
                    for name, value in pairs)


def record(*, request_headers: Headers = (), request_body: bytes = b"",
           request_trailers: Headers = (), response_headers: Headers = (),
           response_body: bytes = b"", response_trailers: Headers = (), flags: int = 0,
           start_unix_ns: int = 1_700_000_000_000_000_000, duration_ns: int = 5_000_000,
           upstream_ns: int = 4_000_000, status: int = 200, grpc_status: int = -1,
           magic: int = 0x3154504C, stream: int = 0, request_bytes: int | None = None,
           response_bytes: int | None = None, trace: str = "", span: str = "",
           parent: str = "") -> bytes:
    """`request_bytes`, `response_bytes`: the sizes passed, when the bodies went ahead
    in pieces (else the bodies' lengths); `trace`, `span`, `parent`: the trace context
    in hex (the caller sets flags 128, 256 and 512 to match)."""
    sections = [headers(request_headers), request_body, headers(request_trailers),
                headers(response_headers), response_body, headers(response_trailers)]
    head = struct.pack("<IIQQQIiQQQ16s8s8s6I", magic, flags, start_unix_ns, duration_ns,
                       upstream_ns, status, grpc_status,
                       len(request_body) if request_bytes is None else request_bytes,
                       len(response_body) if response_bytes is None else response_bytes,
                       stream, bytes.fromhex(trace), bytes.fromhex(span),
                       bytes.fromhex(parent), *(len(section) for section in sections))
    return head + b"".join(sections)


def piece(stream: int, side: int, data: bytes) -> bytes:
    """A body's bytes sent ahead of its record (side 0 the request, 1 the response)."""
    return struct.pack("<IIQ", 0x3150504C, side, stream) + data


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(message)) + message


def write_slot(counters: TapCounters, thread: int, index: int, *, model: bytes, route: int,
               code: int, flags: int = 0, count: int = 1, duration_ns: Sequence[int] = (),
               request_bytes: int = 0, response_bytes: int = 0,
               exemplar: tuple[bytes, int, int] | None = None) -> None:
    """One slot as the tap leaves it after `count` exchanges of `duration_ns` each."""
    durations = list(duration_ns) or [1_000_000] * count
    latency = [round(bound * 1e9) for bound in counters.latency_bounds]
    sizes = [int(bound) for bound in counters.byte_bounds]

    def bucket(value: int, bounds: list[int]) -> int:
        return next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))

    arrays = [[0] * BUCKETS for _ in range(4)]
    for value in durations:
        arrays[0][bucket(value, latency)] += 1
        arrays[1][bucket(value, latency)] += 1
        arrays[2][bucket(request_bytes, sizes)] += 1
        arrays[3][bucket(response_bytes, sizes)] += 1
    start = HEADER_BYTES + thread * (AREA_HEAD_BYTES + counters.slots * SLOT_BYTES) \
        + AREA_HEAD_BYTES + index * SLOT_BYTES
    memory = counters._map
    struct.pack_into("<QQ64sIII4x6Q", memory, start, 0, 0, model, route, code, flags,
                     count, sum(durations), count, sum(durations), request_bytes * count,
                     response_bytes * count)
    struct.pack_into(f"<{4 * BUCKETS}Q", memory, start + 144, *(v for a in arrays for v in a))
    if exemplar is not None:
        struct.pack_into("<16sQQQ", memory, start + 1168, *exemplar, 1)
    struct.pack_into("<Q", memory, start, 1)
