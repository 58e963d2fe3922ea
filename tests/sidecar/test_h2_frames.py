"""The gRPC port's reading of HTTP/2: frames out of reads cut anywhere, messages
measured across frames cut anywhere, and HPACK blocks remembered only while they mean
the same."""

from __future__ import annotations

import itertools

import pytest
from hpack import Decoder, Encoder, HPACKError
from hypothesis import given, settings
from hypothesis import strategies as st

from lookout.sidecar.proxy import h2_frames as h2

frames = st.lists(st.tuples(st.sampled_from([h2.DATA, h2.HEADERS, h2.PING]),
                            st.integers(0, 255), st.integers(0, 2**31 - 1),
                            st.binary(max_size=300)), max_size=8)


def _cuts(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=200, deadline=None)
@given(frames, st.lists(st.integers(0, 10**6), max_size=12))
def test_frames_come_out_whole_however_the_reads_cut_them(sent, points) -> None:
    stream = b"".join(h2.frame(kind, flags, number, payload)
                      for kind, flags, number, payload in sent)
    splitter = h2.FrameSplitter()
    got = [(kind, flags, number, bytes(payload), bytes(whole))
           for read in _cuts(stream, points)
           for whole, kind, flags, number, payload in splitter.split(read)]
    assert [(k, f, n, p) for k, f, n, p, _ in got] == sent
    assert b"".join(whole for *_, whole in got) == stream  # relayed byte for byte


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5), st.lists(st.integers(0, 10**6),
                                                                max_size=10))
def test_messages_are_measured_and_copied_across_any_cut(messages, points) -> None:
    wire = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)
    seen = h2.Messages(keep=100)
    announced = [length for piece in _cuts(wire, points)
                 if (length := seen.feed(memoryview(piece))) is not None]
    assert seen.count == len(messages)
    assert seen.copies == [m if len(m) <= 100 else b"" for m in messages]
    # a message's length is told when its prefix is in, before its bytes
    assert set(announced) <= {len(m) for m in messages}
    if messages:
        assert seen.first_head == messages[0][:512]


def test_a_remembered_block_is_forgotten_once_the_table_changes() -> None:
    sender, receiver = Encoder(), h2.CachingDecoder()
    fields = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    first = sender.encode(fields)  # inserts content-type into both tables
    assert receiver.decode(first) == fields
    steady = sender.encode(fields)  # all indexed now: the same bytes every call
    assert receiver.decode(steady) == fields and receiver.decode(steady) == fields
    other = sender.encode([(b"x-new", b"1")])  # an insertion: index 62 moves
    receiver.decode(other)
    again = sender.encode(fields)
    plain = Decoder()
    for block in (first, steady, other):
        plain.decode(block)
    assert receiver.decode(again) == list(plain.decode(again, raw=True)) == fields


def test_a_remembered_encoding_decodes_to_what_was_encoded() -> None:
    encoder, decoder = h2.CachingEncoder(), Decoder()
    fields = [(b":path", b"/inference.GRPCInferenceService/ModelInfer"),
              (b"content-type", b"application/grpc")]
    for extra in ([], [], [(b"x-tenant", b"a")], [], [(b"x-tenant", b"b")], []):
        block = encoder.encode([*fields, *extra])
        assert list(decoder.decode(block, raw=True)) == [*fields, *extra]


# blocks that stand alone and add to the table (nginx's: literal with incremental
# indexing, never read back), and blocks that read the table's newest entries
_ALONE = [Encoder().encode(fields) for fields in (
    [(b":status", b"200"), (b"server", b"nginx"), (b"date", b"Tue, 01 Dec 2026")],
    [(b":status", b"200"), (b"server", b"nginx"), (b"date", b"Wed, 02 Dec 2026")],
    [(b"grpc-status", b"0")],
    [(b"x-long", b"v" * 3000)],  # evicts most of the table
    [(b"x-huge", b"w" * 5000)],  # larger than the table: empties it
)]
_READING = [bytes((0x80 | index,)) for index in (62, 63, 64, 70)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ALONE + _READING), max_size=30))
def test_remembered_blocks_decode_as_a_plain_decoder_does(blocks) -> None:
    cached, plain = h2.CachingDecoder(), Decoder()
    for block in blocks:
        try:
            expected = list(plain.decode(block, raw=True))
        except HPACKError as error:  # an index past the table: the cached one says so too
            with pytest.raises(type(error)):
                cached.decode(block)
            continue
        assert cached.decode(block) == expected
        assert list(cached.decoder.header_table.dynamic_entries) == \
            list(plain.header_table.dynamic_entries)
