"""Run the tap through its fake Envoy (tap_harness, ASan+UBSan) on known and random cases.

    python3 tap/fuzz_cases.py [--harness tap/build/tap_harness] [-n 40] [--seed S]

Each case gets fresh shared memory (tapshm.py), runs the harness, fails on a non-zero exit
or any sanitizer report, then reads the memory back: every record parses, and the counters
agree with the streams run (exchanges = streams; records + ring_full = exchanges; slot
counts + unrecorded = exchanges). Stdlib only. Exit status 0 when every case passed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tapshm

ROUTES = ["/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer",
          "/v2/models/{model}", "/a{b/{c}.{d}/x"]


def h(data: bytes | str) -> str:
    data = data.encode() if isinstance(data, str) else data
    return data.hex() or "-"


class Case:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.streams = 0

    def new(self, sid: int) -> None:
        self.lines.append(f"{sid} new")
        self.streams += 1

    def hdr(self, sid: int, t: int, name: bytes | str, value: bytes | str) -> None:
        self.lines.append(f"{sid} hdr {t} {h(name)} {h(value)}")

    def do(self, sid: int, *words: object) -> None:
        self.lines.append(" ".join([str(sid), *map(str, words)]))

    def body(self, sid: int, d: int, eos: int, chunks: list[bytes | str]) -> None:
        words = [c if isinstance(c, str) else h(c) for c in chunks]
        self.lines.append(" ".join([str(sid), "body", str(d), str(eos), *words]))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def grpc_frame(message: bytes, compressed: bool = False, length: int | None = None) -> bytes:
    n = len(message) if length is None else length
    return bytes([1 if compressed else 0]) + n.to_bytes(4, "big") + message


def infer_request(model: bytes) -> bytes:
    return b"\x0a" + bytes([len(model)]) + model + b"\x12\x011" + b"\x22\x05abcde"


TRACE_FLAGS = tapshm.TRACED | tapshm.SAMPLED | tapshm.PARENT


def known_case() -> tuple[Case, dict]:
    """A few exchanges whose records and counters are checked field by field."""
    c = Case()
    trace = "0af7651916cd43dd8448eb211c80319c"
    c.new(0)
    for name, value in [(":method", "POST"), (":path", "/v2/models/resnet%2D50/infer?x=1"),
                        ("content-type", "application/json")]:
        c.hdr(0, 0, name, value)
    c.hdr(0, 0, "traceparent", f"00-{trace}-b7ad6b7169203331-01")  # the caller's, sampled
    c.do(0, "reqh", 0)
    c.body(0, 0, 0, [b'{"inputs"', b": []}"])
    c.hdr(0, 2, ":status", "200")
    c.do(0, "resph", 0)
    c.body(0, 2, 1, [b'{"outputs": []}'])
    c.do(0, "complete")
    c.do(0, "destroy")
    c.new(1)  # gRPC, gzip-compressed message, status in trailers
    for name, value in [(":path", "/inference.GRPCInferenceService/ModelInfer"),
                        ("content-type", "application/grpc"), ("grpc-encoding", "gzip")]:
        c.hdr(1, 0, name, value)
    c.do(1, "reqh", 0)
    frame = grpc_frame(gzip.compress(infer_request(b"yolo")), compressed=True)
    c.body(1, 0, 1, [frame[:3], frame[3:]])
    c.hdr(1, 2, ":status", "200")
    c.do(1, "resph", 0)
    c.body(1, 2, 0, [grpc_frame(b"")])
    c.hdr(1, 3, "grpc-status", "5")
    c.do(1, "respt")
    c.new(2)  # no response at all; an invalid trace context (upper case): a new trace
    c.hdr(2, 0, ":path", "/v2/models/m/versions/7/infer/")
    c.hdr(2, 0, "traceparent", f"00-{trace.upper()}-b7ad6b7169203331-01")
    c.do(2, "reqh", 1)
    c.new(3)  # large bodies of odd lengths: the ring's streaming copy, its ends unaligned
    c.hdr(3, 0, ":path", "/elsewhere")
    c.do(3, "reqh", 0)
    request, response = random.Random(3).randbytes(70_001), random.Random(4).randbytes(100_003)
    c.body(3, 0, 1, [request[:1], request[1:40_000], request[40_000:]])
    c.hdr(3, 2, ":status", "200")
    c.hdr(3, 2, "content-length", str(len(response)))
    c.do(3, "resph", 0)
    c.body(3, 2, 0, [response[:16_387]])
    c.body(3, 2, 0, [response[16_387:16_487]])  # small: gathered, then sent before the next
    c.body(3, 2, 1, [response[16_487:]])
    c.new(4)  # a body that starts small: kept, then sent ahead once it passes 8 KiB
    c.hdr(4, 0, ":path", "/elsewhere")
    for parent in ("b7ad6b7169203331", "c7ad6b7169203331"):  # two values: invalid
        c.hdr(4, 0, "traceparent", f"00-{trace}-{parent}-01")
    c.do(4, "reqh", 1)
    c.hdr(4, 2, ":status", "200")
    c.do(4, "resph", 0)
    growing = random.Random(7).randbytes(51_000)
    c.body(4, 2, 0, [growing[:1000]])
    c.body(4, 2, 1, [growing[1000:]])
    c.new(5)  # more headers than the tap lists on its stack: its own the last ones
    for i in range(60):
        c.hdr(5, 0, f"x-fill-{i}", "y")
    c.hdr(5, 0, ":path", "/v2/models/late/infer")
    c.hdr(5, 0, "traceparent", f"00-{trace}-d7ad6b7169203331-01")
    c.do(5, "reqh", 0)
    for i in range(60):
        c.hdr(5, 2, f"x-fill-{i}", "z")
    c.hdr(5, 2, ":status", "503")
    c.do(5, "resph", 1)
    expect = {"models": {b"resnet-50", b"yolo", b"m", b"late"}, "trace": trace, "ppm": 0,
              "large": (request, response), "growing": growing}
    return c, expect


def lying_prefix_case() -> tuple[Case, dict]:
    """A gRPC call whose first five bytes announce 250,000 and send nothing more while an
    honest exchange beside it, on the same thread, sends 20,000 bytes in 500-byte
    callbacks (gathered in the tap's budgeted buffer into pieces of 8 KiB). Under a
    255,000-byte budget the honest body is copied only if the announcement reserved
    nothing: a client's word must not hold the thread's budget."""
    c = Case()
    c.new(0)
    c.hdr(0, 0, ":path", "/inference.GRPCInferenceService/ModelInfer")
    c.hdr(0, 0, "content-type", "application/grpc")
    c.do(0, "reqh", 0)
    c.body(0, 0, 0, [grpc_frame(b"", length=250_000)])
    c.new(1)
    c.hdr(1, 0, ":path", "/v2/models/honest/infer")
    c.do(1, "reqh", 0)
    body = random.Random(5).randbytes(20_000)
    for at in range(0, len(body), 500):
        c.body(1, 0, int(at + 500 == len(body)), [body[at:at + 500]])
    c.hdr(1, 2, ":status", "200")
    c.do(1, "resph", 1)
    c.do(1, "complete")
    c.do(1, "destroy")
    c.body(0, 0, 1, [b"\x0a\x01m"])
    c.do(0, "complete")
    return c, {"budget": 255_000, "body": body, "check": check_lying_prefix}


def span_reserve_case() -> tuple[Case, dict]:
    """Rings of 8 records each (two, nobody reading) filled by 16 unsampled exchanges;
    then a sampled one, a failed one (503) and a second sampled one. The first two find
    no room for their records but leave their spans in the reserve (an eighth of each
    ring's records, one here); the third finds the reserve used and is dropped whole."""
    c = Case()
    for sid in range(19):
        whole_exchange(c, sid, f"/v2/models/m{sid}/infer", "503" if sid == 17 else "200",
                       f"00-{sid:032x}-{sid:016x}-01" if sid in (16, 18) else None)
    return c, {"max_records": 8, "ppm": 0, "check": check_span_reserve}


def whole_exchange(c: Case, sid: int, path: str, status: str = "200",
                   traceparent: str | None = None) -> None:
    """A bodiless exchange from its start to its end (complete, then destroy)."""
    c.new(sid)
    c.hdr(sid, 0, ":path", path)
    if traceparent is not None:
        c.hdr(sid, 0, "traceparent", traceparent)
    c.do(sid, "reqh", 1)
    c.hdr(sid, 2, ":status", status)
    c.do(sid, "resph", 1)
    c.do(sid, "complete")
    c.do(sid, "destroy")


def check_span_reserve(records: list[dict], counters: dict, expect: dict) -> None:
    area = counters["areas"][0]
    assert (area["records"], area["ring_full"], area["spans_only"]) == (16, 3, 2), \
        {key: value for key, value in area.items() if key != "slots"}
    spans = sorted((r for r in records if r["flags"] & tapshm.SPAN_ONLY),
                   key=lambda r: r["start_unix_ns"])
    assert [r["status"] for r in spans] == [200, 503], spans
    assert spans[0]["trace_id"] == f"{16:032x}" and spans[0]["flags"] & tapshm.SAMPLED
    assert (b":path", b"/v2/models/m17/infer") in spans[1]["request_headers"], spans[1]
    assert not spans[1]["flags"] & tapshm.SAMPLED


def full_ring_case() -> tuple[Case, dict]:
    """Rings of 8 records each filled by 16 exchanges; then a gRPC call begins that fails
    (UNAVAILABLE) after a 30 KB request. No ring had room when it began, so the tap copies
    nothing of it (no piece is tried, nothing counts as cut) yet counts it exactly: its
    model from the body, its bytes and status; and its span goes in the reserve."""
    c = Case()
    for sid in range(16):
        whole_exchange(c, sid, "/v2/models/m/infer")
    c.new(16)
    for name, value in [(":path", "/inference.GRPCInferenceService/ModelInfer"),
                        ("content-type", "application/grpc")]:
        c.hdr(16, 0, name, value)
    c.do(16, "reqh", 0)
    message = infer_request(b"late") + b"\x2a\xb0\xea\x01" + bytes(30_000)  # field 5, 30,000 B
    frame = grpc_frame(message)
    c.body(16, 0, 0, [frame[:9000]])
    c.body(16, 0, 1, [frame[9000:]])
    c.hdr(16, 2, ":status", "200")
    c.do(16, "resph", 0)
    c.body(16, 2, 0, [bytes(1000)])
    c.hdr(16, 3, "grpc-status", "14")
    c.do(16, "respt")
    return c, {"max_records": 8, "ppm": 0, "bytes": (len(frame), 1000),
               "check": check_full_ring}


def check_full_ring(records: list[dict], counters: dict, expect: dict) -> None:
    area = counters["areas"][0]
    assert (area["records"], area["ring_full"], area["spans_only"]) == (16, 1, 1), area
    assert (area["truncated_body"], area["truncated_budget"]) == (0, 0), \
        f"the skipped exchange's body was tried: {area}"
    [slot] = [s for s in area["slots"] if s["model"] == b"late"]
    assert (slot["code"], slot["flags"], slot["count"]) == (14, 1, 1), slot
    assert (slot["request_bytes_sum"], slot["response_bytes_sum"]) == expect["bytes"], slot
    [span] = [r for r in records if r["flags"] & tapshm.SPAN_ONLY]
    assert span["grpc_status"] == 14 and not span["request_body"], span
    assert (b"content-type", b"application/grpc") in span["request_headers"], span


def trickle_case() -> tuple[Case, dict]:
    """A body that starts large and goes on in 500-byte callbacks, into a ring that holds
    two records: the small callbacks go as pieces of at least 8 KiB (never one per
    callback), and the exchange counts as one record however many pieces it sent."""
    c = Case()
    c.new(0)
    c.hdr(0, 0, ":path", "/v2/models/m/infer")
    c.do(0, "reqh", 0)
    body = random.Random(6).randbytes(20_000 + 60 * 500)
    c.body(0, 0, 0, [body[:20_000]])
    for at in range(20_000, len(body), 500):
        c.body(0, 0, int(at + 500 == len(body)), [body[at:at + 500]])
    c.hdr(0, 2, ":status", "200")
    c.do(0, "resph", 1)
    return c, {"max_records": 2, "body": body, "check": check_trickle}


def check_trickle(records: list[dict], counters: dict, expect: dict) -> None:
    area = counters["areas"][0]
    assert (area["records"], area["ring_full"]) == (1, 0), area
    [record] = records
    assert record["flags"] == tapshm.REQUEST_PIECES, record["flags"]
    assert record["request_body"] == expect["body"]
    sizes = record["request_pieces"]
    assert sizes[0] == 20_000 and all(size >= 8192 for size in sizes[1:-1]) and \
        sum(sizes) == len(expect["body"]) and len(sizes) <= 5, sizes


def check_lying_prefix(records: list[dict], counters: dict, expect: dict) -> None:
    honest = next(r for r in records if r["status"] == 200)
    assert honest["flags"] == tapshm.REQUEST_PIECES and \
        honest["request_body"] == expect["body"], \
        f"the honest body was cut (flags {honest['flags']}): the lie held the budget"
    assert counters["areas"][0]["truncated_budget"] == 0, counters["areas"][0]


def trace_problem(record: dict) -> str | None:
    """A traced record's context is whole, and is what its upstream was sent."""
    flags = record["flags"]
    if not flags & tapshm.TRACED:
        return "untraced, yet sampled or with a parent" if flags & TRACE_FLAGS else None
    if record["trace_id"] == "0" * 32 or record["span_id"] == "0" * 16 or \
            (record["parent_span_id"] == "0" * 16) == bool(flags & tapshm.PARENT):
        return f"a trace context with a zero id: {record}"
    sent = [v for k, v in record["request_headers"] if k == b"traceparent"]
    want = f"00-{record['trace_id']}-{record['span_id']}-0{int(bool(flags & tapshm.SAMPLED))}"
    if sent and sent != [want.encode()]:
        return f"the upstream was sent {sent}, the record says {want}"
    return None


def check_known(records: list[dict], counters: dict, expect: dict) -> None:
    slots = counters["areas"][0]["slots"]
    got = {(s["model"], s["route"], s["code"], s["flags"]) for s in slots}
    want = {(b"resnet-50", 0, 200, 0), (b"yolo", 4, 5, 1), (b"m", 1, 0, 4),
            (b"", len(ROUTES), 200, 0), (b"late", 0, 503, 0)}
    assert got == want, f"slots {got} != {want}"
    resnet = next(s for s in slots if s["model"] == b"resnet-50")
    assert resnet["exemplar_trace_id"] == expect["trace"] and resnet["exemplar_seq"] == 1, resnet
    assert resnet["request_bytes_sum"] == 14 and resnet["response_bytes_sum"] == 15, resnet
    records = sorted(records, key=lambda r: r["start_unix_ns"])
    first = records[0]
    assert first["request_body"] == b'{"inputs": []}' and first["status"] == 200, first
    # the caller's sampled trace goes on; the upstream's parent is the tap's new span
    assert first["flags"] & TRACE_FLAGS == tapshm.TRACED | tapshm.SAMPLED | tapshm.PARENT
    assert (first["trace_id"], first["parent_span_id"]) == (expect["trace"], "b7ad6b7169203331")
    assert first["span_id"] != "b7ad6b7169203331", first
    grpc = records[1]
    assert grpc["flags"] & ~TRACE_FLAGS == 4 and grpc["grpc_status"] == 5, grpc
    assert grpc["response_trailers"] == [(b"grpc-status", b"5")], grpc
    # no caller context, no root kept (ppm 0): a new trace, not sampled
    assert grpc["flags"] & TRACE_FLAGS == tapshm.TRACED and grpc["parent_span_id"] == "0" * 16
    assert records[2]["flags"] & ~TRACE_FLAGS == 16 and records[2]["status"] == 0, records[2]
    # an upper-case caller context is invalid: a new trace, never the caller's id
    assert records[2]["flags"] & TRACE_FLAGS == tapshm.TRACED and \
        records[2]["trace_id"] not in (expect["trace"], "0" * 32), records[2]
    request, response = expect["large"]
    large = records[3]
    assert large["flags"] & ~TRACE_FLAGS == tapshm.REQUEST_PIECES | tapshm.RESPONSE_PIECES, \
        large["flags"]
    assert large["request_body"] == request and large["response_body"] == response, \
        "the large bodies were not copied byte-exact"
    assert large["request_pieces"] == [70_001], large["request_pieces"]
    assert large["response_pieces"] == [16_387, 100, 100_003 - 16_487], large["response_pieces"]
    grown = records[4]
    assert grown["flags"] & ~TRACE_FLAGS == tapshm.RESPONSE_PIECES, grown["flags"]
    assert grown["flags"] & TRACE_FLAGS == tapshm.TRACED and grown["trace_id"] != expect["trace"]
    assert [v for k, v in grown["request_headers"] if k == b"traceparent"] == \
        [f"00-{grown['trace_id']}-{grown['span_id']}-00".encode()]  # one value, the tap's
    assert grown["response_body"] == expect["growing"]
    assert grown["response_pieces"] == [1000, 50_000], grown["response_pieces"]
    late = records[5]
    assert (late["status"], late["trace_id"], late["parent_span_id"]) == \
        (503, expect["trace"], "d7ad6b7169203331"), late
    assert len(late["request_headers"]) == 62 and len(late["response_headers"]) == 61, late


def random_headers(rng: random.Random, c: Case, sid: int, t: int) -> None:
    for _ in range(rng.choice([0, 1, 3, 10, 200])):
        kind = rng.random()
        if kind < 0.1:
            c.do(sid, "big", t, h("x-huge"), "41", rng.choice([70000, 1 << 20]))
        elif kind < 0.2:
            c.hdr(sid, t, bytes(rng.randrange(256) for _ in range(rng.randrange(40))),
                  bytes(rng.randrange(256) for _ in range(rng.randrange(200))))
        else:
            c.hdr(sid, t, rng.choice(["a", "x-b", "", "\0\0", "grpc-status", "lookout-error",
                                      "content-length"]),
                  rng.choice(["", "1", "\0", "999999999999", "-3", "x" * 300, "300000"]))


def random_path(rng: random.Random) -> bytes:
    return rng.choice([
        b"/v2/models/" + b"m" * 200 + b"/infer", b"/" + b"{" * 1000, b"/v2/models//infer",
        b"/v2/models/%00x/infer", b"/v2/models/%zz/infer", b"/v2/models/%4", b"",
        b"/v2/models/a/infer/", b"/v2/models/a/infer//", b"/a{b/x.y/x", b"/a{b/.y/x",
        b"/v2/models/" + bytes(rng.randrange(1, 256) for _ in range(30)),
        b"/" + b"/" * 5000, b"?" * 10, b"/v2/models/x/versions/y/infer?q=/"])


def random_traceparent(rng: random.Random) -> str:
    good = "00-" + f"{rng.getrandbits(128):032x}" + "-" + f"{rng.getrandbits(64):016x}" + "-01"
    return rng.choice([good, good[:-1], good.replace("-", "_"), "00-" + "0" * 32 + "-" + "1" * 16
                       + "-01", good.upper(), "ff" + good[2:], good + "-extra", "", "zz" * 30])


def random_grpc_body(rng: random.Random) -> list[bytes | str]:
    msg = infer_request(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))))
    frame = rng.choice([
        grpc_frame(msg), grpc_frame(msg, length=2**32 - 1), grpc_frame(msg)[:rng.randrange(6)],
        grpc_frame(zlib.compress(msg), compressed=True), grpc_frame(b"\x1f\x8b" + os.urandom(50),
                                                                   compressed=True),
        grpc_frame(gzip.compress(msg)[:10], compressed=True), grpc_frame(b"\x0a\xff\xff\xff\xff"),
        grpc_frame(b"\x08" + b"\xff" * 20), grpc_frame(b"\x0b\x0a"), b""])
    cut = rng.randrange(len(frame) + 1)
    return [frame[:cut], frame[cut:]]


def random_case(rng: random.Random) -> Case:
    c = Case()
    for sid in range(rng.randrange(1, 40)):
        c.new(sid)
        if rng.random() < 0.05:
            c.do(sid, "nullhooks")
        grpc = rng.random() < 0.4
        c.hdr(sid, 0, ":path", random_path(rng))
        if grpc:
            c.hdr(sid, 0, "content-type",
                  rng.choice(["application/grpc", "application/grpc+proto"]))
            c.hdr(sid, 0, "grpc-encoding", rng.choice(["gzip", "deflate", "identity", "GZIP"]))
        random_headers(rng, c, sid, 0)
        for _ in range(rng.choice([0, 1, 1, 2])):
            c.hdr(sid, 0, "traceparent", random_traceparent(rng))
        c.do(sid, "reqh", rng.randrange(2))
        if grpc:
            c.body(sid, 0, 0, random_grpc_body(rng))
        for _ in range(rng.choice([0, 1, 2, 5])):
            chunks = rng.choice([[b""], ["rep:61:100000"] * 100, [os.urandom(100)] * 3,
                                 ["rep:00:1048576"] * 10, []])
            c.body(sid, 0, rng.randrange(2), chunks)  # eos: a body handed over whole
        if rng.random() < 0.3:
            random_headers(rng, c, sid, 1)
            c.do(sid, "reqt")
        end = rng.random()
        if end < 0.1:
            c.do(sid, "destroy")  # reset before any response, and no stream_complete
            continue
        if end < 0.2:
            c.do(sid, "skip")  # stream_complete never runs: destroy finishes it
        if rng.random() < 0.9:
            c.hdr(sid, 2, ":status", rng.choice(["200", "503", "", "abc", "99999999999"]))
            if rng.random() < 0.2:
                c.hdr(sid, 2, rng.choice(["x-lookout-error", "lookout-error"]), "1")
            random_headers(rng, c, sid, 2)
            c.do(sid, "resph", rng.randrange(2))
            for _ in range(rng.choice([0, 1, 3])):
                c.body(sid, 2, rng.randrange(2),
                       rng.choice([[os.urandom(1000)], ["rep:62:1048576"] * 10, [b""]]))
            if rng.random() < 0.5:
                c.hdr(sid, 3, "grpc-status", rng.choice(["0", "14", "", "x"]))
                random_headers(rng, c, sid, 3)
                c.do(sid, "respt")
        if rng.random() < 0.5:
            c.do(sid, "complete")
        if rng.random() < 0.5:
            c.do(sid, "destroy")
    return c


def run_case(harness: str, case: Case, rng: random.Random, tag: str,
             expect: dict | None = None) -> str | None:
    """None when the case passed, else why not."""
    with tempfile.TemporaryDirectory(prefix="lookout-tap-") as tmp:
        ident = f"lookout-tapfuzz-{os.getpid()}-{tag}"
        counters = f"/{ident}-cnt"
        rings = [(f"/{ident}-r{i}", os.path.join(tmp, f"fifo{i}"),
                  rng.choice([2, 1000]) if expect is None else expect.get("max_records", 1000))
                 for i in range(2)]
        wake_fds: list[int] = []
        try:
            tapshm.create_counters(counters, 1, rng.choice([4, 64]) if expect is None else 64,
                                   [10**6, 10**7, 10**8, 10**9], [100, 10**4, 10**6])
            # ring 0's consumer sleeps (every record wakes it), ring 1's is awake (none do);
            # the FIFOs stay open here so the wake-up bytes outlive the harness
            for index, (name, fifo, _) in enumerate(rings):
                tapshm.create_ring(name, fifo, rng.choice([4096, 8 << 20]) if expect is None
                                   else 8 << 20, sleeping=index == 0)
                wake_fds.append(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
            max_body = rng.choice([0, 100, 65536, 1 << 20]) if expect is None else 1 << 20
            budget = rng.choice([1, 200000, 64 << 20]) if expect is None \
                else expect.get("budget", 64 << 20)
            config_path, case_path = os.path.join(tmp, "config"), os.path.join(tmp, "case")
            with open(config_path, "w") as f:
                f.write(tapshm.config_text(counters, rings, 2, max_body, budget, ROUTES,
                                           rng.choice([None, 0, 500_000, 1_000_000])
                                           if expect is None else expect.get("ppm")))
            with open(case_path, "w") as f:
                f.write(case.text())
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
                       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
            done = subprocess.run([harness, config_path, case_path], capture_output=True,
                                  text=True, env=env, timeout=300)
            if done.returncode or "Sanitizer" in done.stderr or "runtime error" in done.stderr:
                keep = os.path.join(tempfile.gettempdir(), f"lookout-tap-failed-{tag}.case")
                with open(keep, "w") as f:
                    f.write(case.text())
                return f"exit {done.returncode}; case kept at {keep}\n{done.stderr[-4000:]}"
            if done.stdout.strip() != f"streams {case.streams}":
                return f"harness said {done.stdout!r}, expected {case.streams} streams"
            records, orphans = [], 0
            for index, (name, _, _) in enumerate(rings):
                reader = tapshm.RingReader(name)
                before = len(records)
                joined, unclaimed = tapshm.read_exchanges(reader)
                records += joined
                orphans += len(unclaimed)
                reader.close()
                woken = tapshm.pending_bytes(wake_fds[index])
                if (index == 0 and len(records) > before and not woken) or \
                        (index == 1 and woken):
                    return f"ring {index}: {len(records) - before} records, {woken} wake-ups " \
                           f"(its consumer {'sleeps' if index == 0 else 'is awake'})"
            state = tapshm.read_counters(counters)
            area = state["areas"][0]
            slot_total = sum(slot["count"] for slot in area["slots"])
            spans_only = [r for r in records if r["flags"] & tapshm.SPAN_ONLY]
            if area["exchanges"] != case.streams or \
                    area["records"] + area["ring_full"] != case.streams or \
                    slot_total + area["unrecorded"] != case.streams or \
                    len(records) - len(spans_only) != area["records"] or \
                    len(spans_only) != area["spans_only"] or \
                    len(spans_only) > area["ring_full"]:
                return f"counters disagree: {case.streams} streams, {len(records)} records, " \
                       f"area {dict((k, v) for k, v in area.items() if k != 'slots')}, " \
                       f"slots {slot_total}"
            if orphans > area["ring_full"]:
                return f"{orphans} streams' pieces without their record, but only " \
                       f"{area['ring_full']} records were dropped"
            for record in records:
                if record["flags"] & tapshm.SPAN_ONLY:
                    own_body = record["request_body"] and \
                        not record["flags"] & tapshm.REQUEST_PIECES  # pieces went ahead
                    if own_body or record["response_headers"] or record["request_trailers"] \
                            or not record["flags"] & tapshm.TRACED:
                        return f"a span-only record carries more than its span: {record}"
                    continue
                for cut, body, size in ((1, "request_body", "request_bytes"),
                                        (2, "response_body", "response_bytes")):
                    if not record["flags"] & cut and len(record[body]) != record[size]:
                        return f"a body not marked cut is not whole: {len(record[body])} " \
                               f"of {record[size]} bytes ({body}, flags {record['flags']})"
            for record in records:
                if (why := trace_problem(record)) is not None:
                    return why
            if expect is not None:
                expect.get("check", check_known)(records, state, expect)
            return None
        except (AssertionError, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        finally:
            for fd in wake_fds:
                os.close(fd)
            tapshm.unlink(counters)
            for name, _, _ in rings:
                tapshm.unlink(name)


def main() -> int:
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--harness", default=os.path.join(here, "build", "tap_harness"))
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    failures = 0
    for name, (case, expect) in (("known", known_case()), ("lying", lying_prefix_case()),
                                 ("trickle", trickle_case()),
                                 ("span reserve", span_reserve_case()),
                                 ("full ring", full_ring_case())):
        if (why := run_case(args.harness, case, rng, name, expect)) is not None:
            print(f"{name} case FAILED: {why}")
            failures += 1
    for i in range(args.n):
        if (why := run_case(args.harness, random_case(rng), rng, str(i))) is not None:
            print(f"case {i} (seed {seed}) FAILED: {why}")
            failures += 1
    print(f"{args.n + 5 - failures}/{args.n + 5} cases passed (seed {seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
