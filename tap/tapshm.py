"""Test helper (stdlib only): makes and reads the tap's shared memory as tap/PROTOCOL.md lays
it out. Not lookout's production reader (sidecar/dataplane/ owns that)."""

from __future__ import annotations

import contextlib
import mmap
import os
import struct

CNT_MAGIC = 0x31544E434B4F4F4C
REC_MAGIC = 0x3154504C
PIECE_MAGIC = 0x3150504C
REQUEST_PIECES, RESPONSE_PIECES = 32, 64
TRACED, SAMPLED, PARENT, SPAN_ONLY = 128, 256, 512, 1024
HEAD = 120
CNT_HEADER, AREA_HEADER, SLOT, RING_HEADER = 1024, 128, 1216, 64
WRAP = 2**64 - 1
AREA_WORDS = ("records", "ring_full", "truncated_budget", "truncated_body", "unrecorded",
              "exchanges", "slots_used", "spans_only")


def _create(name: str, size: int) -> mmap.mmap:
    path = "/dev/shm/" + name.lstrip("/")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _attach(name: str) -> mmap.mmap:
    fd = os.open("/dev/shm/" + name.lstrip("/"), os.O_RDWR)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def unlink(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink("/dev/shm/" + name.lstrip("/"))


def create_counters(name: str, threads: int, slots: int, latency_bounds: list[int],
                    byte_bounds: list[int]) -> None:
    memory = _create(name, CNT_HEADER + threads * (AREA_HEADER + slots * SLOT))
    struct.pack_into("<8Q", memory, 0, CNT_MAGIC, 1, threads, slots, len(latency_bounds),
                     len(byte_bounds), 0, 0)
    struct.pack_into(f"<{len(latency_bounds)}Q", memory, 64, *latency_bounds)
    struct.pack_into(f"<{len(byte_bounds)}Q", memory, 320, *byte_bounds)
    memory.close()


def create_ring(name: str, fifo: str, capacity: int, sleeping: bool = False) -> None:
    """`sleeping`: the consumer says it blocks on the FIFO (the header's word 6), so each
    record put must write a wake-up byte; an awake consumer gets none."""
    memory = _create(name, RING_HEADER + capacity)
    struct.pack_into("<Q", memory, 48, int(sleeping))
    memory.close()
    os.mkfifo(fifo, 0o600)


def pending_bytes(fd: int) -> int:
    """Bytes waiting in a FIFO opened non-blocking (the wake-ups the tap wrote)."""
    count = 0
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            count += len(chunk)
    return count


def read_counters(name: str) -> dict:
    memory = _attach(name)
    try:
        magic, layout, threads, slots, nlat, nbytes, untapped, claims = \
            struct.unpack_from("<8Q", memory, 0)
        areas = []
        for t in range(threads):
            base = CNT_HEADER + t * (AREA_HEADER + slots * SLOT)
            words = struct.unpack_from("<16Q", memory, base)
            area = dict(zip(AREA_WORDS, words, strict=False))
            area["slots"] = []
            for i in range(slots):
                at = base + AREA_HEADER + i * SLOT
                if struct.unpack_from("<Q", memory, at)[0] != 1:
                    continue
                h, = struct.unpack_from("<Q", memory, at + 8)
                model = bytes(memory[at + 16:at + 80]).rstrip(b"\0")
                route, code, flags = struct.unpack_from("<3I", memory, at + 80)
                w = struct.unpack_from("<6Q", memory, at + 96)
                area["slots"].append(dict(
                    hash=h, model=model, route=route, code=code, flags=flags, count=w[0],
                    duration_sum_ns=w[1], upstream_count=w[2], upstream_sum_ns=w[3],
                    request_bytes_sum=w[4], response_bytes_sum=w[5],
                    duration_buckets=struct.unpack_from("<32Q", memory, at + 144),
                    exemplar_trace_id=bytes(memory[at + 1168:at + 1184]).hex(),
                    exemplar_seq=struct.unpack_from("<Q", memory, at + 1200)[0]))
            areas.append(area)
        return dict(magic=magic, layout=layout, threads=threads, slots=slots, untapped=untapped,
                    thread_claims=claims, latency_buckets=nlat, byte_buckets=nbytes, areas=areas)
    finally:
        memory.close()


class RingReader:
    """channel.py's Ring.take(), as a consumer of a ring the tap fills."""

    def __init__(self, name: str) -> None:
        self.memory = _attach(name)
        self.capacity = len(self.memory) - RING_HEADER

    def _get(self, offset: int) -> int:
        return struct.unpack_from("<Q", self.memory, offset)[0]

    def _set(self, offset: int, value: int) -> None:
        struct.pack_into("<Q", self.memory, offset, value)

    def take(self) -> bytes | None:
        read = self._get(8)
        if read == self._get(0):
            return None
        offset = read % self.capacity
        size = self._get(RING_HEADER + offset)
        if size == WRAP:
            read += self.capacity - offset
            offset = 0
            size = self._get(RING_HEADER)
        start = RING_HEADER + offset + 8
        record = bytes(self.memory[start:start + size])
        self._set(24, self._get(24) + 1)
        self._set(8, read + 8 + (size + 7) // 8 * 8)
        return record

    def close(self) -> None:
        self.memory.close()


def parse_headers(section: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 0
    while i < len(section):
        name_len, value_len = struct.unpack_from("<II", section, i)
        i += 8
        out.append((section[i:i + name_len], section[i + name_len:i + name_len + value_len]))
        i += name_len + value_len
    if i != len(section):
        raise ValueError("a header section runs past its length")
    return out


def parse_record(payload: bytes) -> dict:
    magic, flags, start, duration, upstream, status, grpc_status, req_bytes, resp_bytes, \
        stream = struct.unpack_from("<IIQQQIiQQQ", payload, 0)
    if magic != REC_MAGIC:
        raise ValueError(f"bad record magic {magic:#x}")
    trace, span, parent = struct.unpack_from("<16s8s8s", payload, 64)
    lengths = struct.unpack_from("<6I", payload, 96)
    if HEAD + sum(lengths) != len(payload):
        raise ValueError("section lengths do not add up to the record")
    sections, at = [], HEAD
    for length in lengths:
        sections.append(payload[at:at + length])
        at += length
    return dict(flags=flags, stream=stream, start_unix_ns=start, duration_ns=duration,
                trace_id=trace.hex(), span_id=span.hex(), parent_span_id=parent.hex(),
                upstream_ns=upstream,
                status=status, grpc_status=grpc_status, request_bytes=req_bytes,
                response_bytes=resp_bytes,
                request_headers=parse_headers(sections[0]), request_body=sections[1],
                request_trailers=parse_headers(sections[2]),
                response_headers=parse_headers(sections[3]), response_body=sections[4],
                response_trailers=parse_headers(sections[5]))


def read_exchanges(reader: RingReader) -> tuple[list[dict], dict[int, list[bytes]]]:
    """A ring's exchange records, each body sent by pieces joined back into its record
    (the pieces' sizes in `request_pieces`, `response_pieces`); and the pieces no record
    claimed (its record was dropped), by stream id."""
    records, pending = [], {}
    while (payload := reader.take()) is not None:
        magic = struct.unpack_from("<I", payload)[0]
        if magic == PIECE_MAGIC:
            side, stream = struct.unpack_from("<IQ", payload, 4)
            if side not in (0, 1) or not stream:
                raise ValueError(f"a piece of side {side}, stream {stream}")
            pending.setdefault(stream, [b"", b"", [], []])[side] += payload[16:]
            pending[stream][2 + side].append(len(payload) - 16)
            continue
        record = parse_record(payload)
        if record["flags"] & (REQUEST_PIECES | RESPONSE_PIECES):
            request, response, record["request_pieces"], record["response_pieces"] = \
                pending.pop(record["stream"], [b"", b"", [], []])
            if record["flags"] & REQUEST_PIECES:
                assert not record["request_body"], "a body both in pieces and in its record"
                record["request_body"] = request
            if record["flags"] & RESPONSE_PIECES:
                assert not record["response_body"], "a body both in pieces and in its record"
                record["response_body"] = response
        records.append(record)
    return records, pending


def config_text(counters: str, rings: list[tuple[str, str, int]], ring_workers: int,
                max_body: int, max_buffered: int, routes: list[str],
                trace_sampling_ppm: int | None = None) -> str:
    lines = ["layout=4", f"counters={counters}", f"ring_workers={ring_workers}",
             f"max_body={max_body}", f"max_buffered={max_buffered}"]
    if trace_sampling_ppm is not None:
        lines.append(f"trace_sampling_ppm={trace_sampling_ppm}")
    lines += [f"ring={name},{fifo},{records}" for name, fifo, records in rings]
    lines += [f"route={route}" for route in routes]
    return "\n".join(lines) + "\n"
