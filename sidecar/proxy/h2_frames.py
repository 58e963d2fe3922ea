"""HTTP/2 frames (RFC 9113) and gRPC's length-prefixed messages, as the gRPC port reads
them going past: frame headers split off the byte stream, the few frames lookout writes
itself built, and each stream's messages measured (and copied, when they are to be
analysed) without holding them back."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpack import Decoder, Encoder, HPACKError, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER_SIZE = 9
MAX_FRAME = 16384  # the SETTINGS_MAX_FRAME_SIZE every peer must accept

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, CANCEL = 0x0, 0x1, 0x8
SETTINGS_HEADER_TABLE_SIZE = 0x1
MESSAGE_PREFIX = 5  # compressed flag, then the length, big-endian
# a header block gathered across CONTINUATION frames, at most (hpack's own bound on a
# decoded header list is 64 KiB): a flood of CONTINUATIONs is a protocol error
MAX_HEADER_BLOCK = 64 * 1024


Frame = tuple[memoryview, int, int, int, memoryview]  # whole, kind, flags, stream, payload
# a frame's header: its 24-bit length (high byte, low two), kind, flags, stream (31 bits)
_HEAD = struct.Struct(">BHBBI")


class FrameSplitter:
    """The frames of a byte stream that arrives in reads of any size. Each read is read
    in place, its frames handed out as views of it (to be relayed as they are); of a
    frame a read cut, only its bytes are joined, not the next read's."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = bytearray()

    def split(self, data: bytes) -> Iterator[Frame]:
        view = memoryview(data)
        partial = self._partial
        if partial:
            if len(partial) < HEADER_SIZE:
                take = HEADER_SIZE - len(partial)
                partial += view[:take]
                view = view[take:]
                if len(partial) < HEADER_SIZE:
                    return
            missing = HEADER_SIZE + int.from_bytes(partial[:3], "big") - len(partial)
            partial += view[:missing]
            view = view[missing:]
            if missing > 0 and len(partial) < HEADER_SIZE + int.from_bytes(partial[:3], "big"):
                return
            whole = memoryview(bytes(partial))
            partial.clear()
            yield _parsed(whole, 0, len(whole))
        at, size = 0, len(view)
        unpack = _HEAD.unpack_from
        while size - at >= HEADER_SIZE:
            high, low, kind, flags, stream = unpack(view, at)
            end = at + HEADER_SIZE + (high << 16 | low)
            if end > size:
                break
            yield view[at:end], kind, flags, stream & 0x7FFFFFFF, view[at + HEADER_SIZE:end]
            at = end
        if at < size:
            partial += view[at:]


def _parsed(view: memoryview, at: int, end: int) -> Frame:
    _, _, kind, flags, stream = _HEAD.unpack_from(view, at)
    return view[at:end], kind, flags, stream & 0x7FFFFFFF, view[at + HEADER_SIZE:end]


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _HEAD.pack(size >> 16, size & 0xFFFF, kind, flags, stream) + payload


def header_frames(stream: int, block: bytes, end_stream: bool) -> list[bytes]:
    """A header block as HEADERS and, past MAX_FRAME, CONTINUATION frames."""
    first_flags = END_STREAM if end_stream else 0
    if len(block) <= MAX_FRAME:  # as good as always
        return [frame(HEADERS, first_flags | END_HEADERS, stream, block)]
    chunks = [block[at:at + MAX_FRAME] for at in range(0, len(block), MAX_FRAME)]
    frames = [frame(HEADERS, first_flags, stream, chunks[0])]
    frames += [frame(CONTINUATION, 0, stream, chunk) for chunk in chunks[1:-1]]
    frames.append(frame(CONTINUATION, END_HEADERS, stream, chunks[-1]))
    return frames


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))


def rst_stream(stream: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream, code.to_bytes(4, "big"))


def goaway(last_stream: int, code: int = NO_ERROR) -> bytes:
    return frame(GOAWAY, 0, 0, last_stream.to_bytes(4, "big") + code.to_bytes(4, "big"))


def unpadded(flags: int, payload: memoryview, headers: bool) -> memoryview:
    """A HEADERS or DATA payload without its padding (and a HEADERS' priority fields)."""
    if flags & PADDED:
        pad = payload[0]
        payload = payload[1:len(payload) - pad] if pad < len(payload) else payload[:0]
    if headers and flags & PRIORITY_FLAG:
        payload = payload[5:]
    return payload


class HeaderBlock:
    """One direction's header blocks, gathered from a HEADERS frame and the
    CONTINUATION frames that follow it, and decoded in order (as HPACK must be)."""

    __slots__ = ("_parts", "decoder")

    def __init__(self) -> None:
        self._parts: tuple[int, int, bytearray] | None = None
        self.decoder = CachingDecoder()

    def gather(self, kind: int, flags: int, stream: int, payload: memoryview
               ) -> tuple[int, int, list[tuple[bytes, bytes]]] | None:
        """(stream, the HEADERS frame's flags, the fields) once the block is whole."""
        if kind == HEADERS:
            self._parts = (stream, flags, bytearray(unpadded(flags, payload, True)))
        elif self._parts is not None:
            self._parts[2].extend(payload)
            if len(self._parts[2]) > MAX_HEADER_BLOCK:
                raise ValueError(f"a header block of more than {MAX_HEADER_BLOCK} bytes")
        if not flags & END_HEADERS or self._parts is None:
            return None
        stream, first_flags, block = self._parts
        self._parts = None
        return stream, first_flags, self.decoder.decode(bytes(block))


def settings_of(payload: memoryview) -> dict[int, int]:
    return {int.from_bytes(payload[at:at + 2], "big"): int.from_bytes(payload[at + 2:at + 6],
                                                                      "big")
            for at in range(0, len(payload) - 5, 6)}


@dataclass(slots=True)
class Messages:
    """One direction of one stream, as gRPC messages: their count and sizes, the first
    one's head (where the model's name is), and whole copies of those up to `keep`
    bytes long, while the bytes themselves pass on untouched."""

    keep: int  # copy messages up to this size; 0: copy none
    count: int = 0
    compressed: bool = False  # a message came compressed (grpc-encoding)
    first_head: bytes = b""  # the first bytes of the first message
    copies: list[bytes] = field(default_factory=list)
    _prefix: bytearray = field(default_factory=bytearray)
    _remaining: int = 0
    _parts: list[memoryview] | None = None  # views of the reads (immutable bytes)

    def feed(self, data: memoryview) -> int | None:
        """Take the next bytes; returns the length of a message whose prefix just came
        in (for the caller to refuse before it is relayed), else None."""
        announced = None
        while data:
            if self._remaining == 0 and len(self._prefix) < MESSAGE_PREFIX:
                take = MESSAGE_PREFIX - len(self._prefix)
                self._prefix += data[:take]
                data = data[take:]
                if len(self._prefix) < MESSAGE_PREFIX:
                    return announced
                length = int.from_bytes(self._prefix[1:5], "big")
                self.compressed |= bool(self._prefix[0])
                self.count += 1
                announced = length
                self._remaining = length
                self._parts = [] if 0 < length <= self.keep and not self._prefix[0] else None
                if length == 0:
                    self._finish(b"")
                continue
            take = data[:self._remaining]
            if self.count == 1 and len(self.first_head) < 512:
                self.first_head += bytes(take[:512 - len(self.first_head)])
            if self._parts is not None:
                self._parts.append(take)  # copied once, when the message is whole
            self._remaining -= len(take)
            data = data[len(take):]
            if self._remaining == 0:
                self._finish(b"".join(self._parts) if self._parts is not None else None)
        return announced

    def _finish(self, message: bytes | None) -> None:
        """A message is complete: its copy, or b"" for one not copied (too large,
        compressed), so that copies stay in order with the other direction's."""
        if self.keep:
            self.copies.append(message or b"")
        self._prefix.clear()
        self._parts = None


def _table_state(table: object) -> tuple[int, int, int]:
    """What identifies a dynamic table's contents: an insertion always adds a new entry
    at the front, an eviction or a resize changes the length or the size."""
    entries = table.dynamic_entries  # type: ignore[attr-defined]
    return len(entries), id(entries[0]) if entries else 0, table.maxsize  # type: ignore[attr-defined]


class _Remembered:
    """Blocks and what they stand for, kept while the table they were read against stays
    as it was: one that changes the table is not kept, and the others are forgotten
    (their indices may mean other fields now)."""

    LIMIT = 64

    def __init__(self) -> None:
        self.known: dict = {}

    def through(self, key: Any, table: Any, work: Callable[[], Any],
                resizing: bool = False) -> Any:
        """What `work` gives for `key`, remembered or done now against `table`."""
        known = self.known.get(key)
        if known is not None:
            return known
        before = _table_state(table)
        value = work()
        unchanged = not resizing and _table_state(table) == before
        if not unchanged or len(self.known) >= self.LIMIT:
            self.known.clear()
        if unchanged:
            self.known[key] = value
        return value


# a block that reads nothing of the table: its fields, and the fields it adds to it
_Alone = tuple[list[tuple[bytes, bytes]], tuple[tuple[bytes, bytes], ...]]


class CachingDecoder:
    """hpack's decoder, remembering what a block decoded to. Two kinds are kept:

    - a block that reads the table (an indexed field the peer added before), while the
      table stays as it was: a gRPC server sends the same response headers and
      trailers call after call, every field indexed;
    - a block that stands alone (every field literal or static, whatever it adds to
      the table), for as long as it keeps coming: with what it added, which is added
      again each time. nginx sends such blocks: each response adds its fields to the
      table and no later one reads them.

    So the steady state costs a dict lookup (and, for the second kind, the additions)."""

    LIMIT = 64
    LARGEST = 8192  # bytes of a block remembered, at most: the usual ones are < 200

    def __init__(self) -> None:
        self.decoder = Decoder()
        self._remembered = _Remembered()
        self._alone: dict[bytes, _Alone] = {}

    @property
    def max_allowed_table_size(self) -> int:
        return self.decoder.max_allowed_table_size

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, size: int) -> None:
        self.decoder.max_allowed_table_size = size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        # hpack's HeaderTuples: a field the sender marked never-indexed stays so
        if len(block) > self.LARGEST:
            return list(self.decoder.decode(block, raw=True))
        alone = self._alone.get(block)
        if alone is None:
            known = self._remembered.known.get(block)
            if known is not None:
                return known
            alone = self._decoded_alone(block)
            if alone is None:
                return self._remembered.through(
                    block, self.decoder.header_table,
                    lambda: list(self.decoder.decode(block, raw=True)))
            if len(self._alone) >= self.LIMIT:
                self._alone.clear()
            self._alone[block] = alone
        headers, added = alone
        if added:  # what decoding it would have added; the blocks read before may be stale
            table = self.decoder.header_table
            for name, value in added:
                table.add(name, value)
            self._remembered.known.clear()
        return headers

    def _decoded_alone(self, block: bytes) -> _Alone | None:
        """The block's fields and additions when it decodes the same against an empty
        table (of the same size), so reads no field added before it; else None. One
        that fills that table is decoded for real: adding again what it kept would not
        evict what it evicted."""
        scratch = Decoder()
        scratch.header_table = table = _CountingTable()
        table.maxsize = self.decoder.header_table.maxsize
        scratch.max_allowed_table_size = self.decoder.max_allowed_table_size
        try:
            headers = list(scratch.decode(block, raw=True))
        except HPACKError:  # it reads the table (or is malformed: the real decode says)
            return None
        if table.maxsize != self.decoder.header_table.maxsize \
                or table.added != len(table.dynamic_entries):
            return None  # it resizes the table, or evicts from it
        return headers, tuple(reversed(table.dynamic_entries))


class _CountingTable(HeaderTable):
    """A table that counts what was added to it, evicted since or not."""

    def __init__(self) -> None:
        super().__init__()
        self.added = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.added += 1
        super().add(name, value)


class CachingEncoder:
    """hpack's encoder, remembering the block it gave a header list while the table
    stays as it was (the counterpart of CachingDecoder)."""

    def __init__(self) -> None:
        self.encoder = Encoder()
        self._remembered = _Remembered()

    @property
    def header_table_size(self) -> int:
        return self.encoder.header_table_size

    @header_table_size.setter
    def header_table_size(self, size: int) -> None:
        self.encoder.header_table_size = size
        self._remembered.known.clear()  # the next block starts with the size update

    def encode(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
        """The block of `headers`; `never_indexed` may follow it in the same block."""
        key = tuple(headers)
        table = self.encoder.header_table
        return self._remembered.through(key, table, lambda: self.encoder.encode(key),
                                        resizing=table.resized)


# fields encoded never-indexed and with literal values leave this encoder's table empty,
# so its blocks read nothing of any connection's table and may go into any of them
_STATELESS = Encoder()


def never_indexed(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """HPACK for fields that change every time (trace context, lookout's own statuses):
    never indexed, so no peer's table churns with them (RFC 7541 6.2.3), and usable on
    its own or after any block of the same header list."""
    return _STATELESS.encode([NeverIndexedHeaderTuple(*pair) for pair in fields],
                             huffman=False)
