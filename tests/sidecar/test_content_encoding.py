"""Compressed bodies inflated for analysis, bounded by the decompressed size."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from lookout.sidecar.pipeline.content_encoding import brotli, decoded
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason

BODY = b'{"outputs": [' + b'{"name": "output0", "data": [0.5, 0.25]},' * 2000 + b"{}]}"
LIMIT = 1024**2


def _deflate_raw(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("coding", "pack"), [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", _deflate_raw),
    pytest.param("br", lambda d: brotli.compress(d), marks=pytest.mark.skipif(
        brotli is None, reason="the optional brotli module is not installed")),
])
def test_each_coding_inflates_to_the_original(coding, pack) -> None:
    assert decoded({"Content-Encoding": coding}, pack(BODY), LIMIT) == BODY


def test_stacked_codings_are_undone_in_reverse_and_identity_is_nothing() -> None:
    body = gzip.compress(zlib.compress(BODY))
    assert decoded({"Content-Encoding": "deflate, gzip"}, body, LIMIT) == BODY
    assert decoded({"Content-Encoding": "identity"}, BODY, LIMIT) == BODY
    assert decoded({}, BODY, LIMIT) is BODY


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_a_decompression_bomb_is_refused_without_being_expanded(coding) -> None:
    if coding == "br" and brotli is None:
        pytest.skip("the optional brotli module is not installed")
    bomb_size = 256 * 1024**2  # 256 times the bound, in zeros
    if coding == "br":
        bomb = brotli.compress(b"\0" * (64 * 1024**2), quality=1)
        bomb_size = 64 * 1024**2
    else:
        packer = zlib.compressobj(9, wbits=31 if coding == "gzip" else 15)
        chunk = b"\0" * (4 * 1024**2)
        bomb = b"".join(packer.compress(chunk) for _ in range(bomb_size // len(chunk)))
        bomb += packer.flush()
    assert len(bomb) < bomb_size / 500
    tracemalloc.start()
    try:
        with pytest.raises(ParseFailure) as refused:
            decoded({"Content-Encoding": coding}, bomb, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.reason is Reason.DECOMPRESSED_TOO_LARGE
    assert peak < 8 * LIMIT  # the output stopped near the bound, not at gigabytes


def test_corrupt_truncated_and_unknown_codings_say_so() -> None:
    packed = gzip.compress(BODY)
    for broken in (packed[:len(packed) // 2], b"\x1f\x8b\x08" + b"\xff" * 40):
        with pytest.raises(ParseFailure) as failed:
            decoded({"Content-Encoding": "gzip"}, broken, LIMIT)
        assert failed.value.reason is Reason.BAD_ENCODING
    with pytest.raises(ParseFailure) as failed:
        decoded({"Content-Encoding": "zstd"}, b"(\xb5/\xfd", LIMIT)
    assert failed.value.reason is Reason.UNSUPPORTED_ENCODING
    assert "zstd" in failed.value.detail
