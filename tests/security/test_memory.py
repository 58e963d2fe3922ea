"""What one request may cost the proxy in memory: read from /proc, never timed."""

from __future__ import annotations

import http.client
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import SidecarProcess, start_sidecar
from tests.support.recording_upstream import RecordingUpstream

MiB = 1024 * 1024


def _gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes as one gzip member: about 1 MB per GiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MiB)
    parts = [compressor.compress(block) for _ in range(inflated // MiB)]
    return b"".join(parts) + compressor.flush()


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


def _tree(pid: int) -> list[int]:
    """The sidecar and every process under it: Envoy and the analysis workers."""
    children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    return [pid, *(grandchild for child in children for grandchild in _tree(child))]


def _rss(pids: list[int], field: str) -> dict[int, int]:
    return {pid: _status(pid, field) for pid in pids}


def _rise(sidecar: SidecarProcess, send) -> tuple[object, int]:
    """What `send()` returns, and the most any one process of the sidecar rose by."""
    pids = _tree(sidecar.process.popen.pid)
    idle = _rss(pids, "VmRSS")
    for pid in pids:
        _reset_peak(pid)
    result = send()
    peak = _rss(pids, "VmHWM")
    return result, max(peak[pid] - idle[pid] for pid in pids)


@pytest.fixture(scope="module")
def sidecar(recording: RecordingUpstream) -> Iterator[SidecarProcess]:
    process = start_sidecar(f"http://127.0.0.1:{recording.port}", "--max-body-bytes", "64MiB")
    yield process
    process.stop()


def _post(port: int, body: bytes | Iterator[bytes], length: int,
          headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/upload", body=body,
                           headers={"Content-Length": str(length), **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_gzip_bomb_is_forwarded_as_it_is_without_inflating(
        sidecar: SidecarProcess, recording: RecordingUpstream) -> None:
    bomb = _gzip_bomb(1024 * MiB)
    recording.take()
    status, rise = _rise(sidecar, lambda: _post(sidecar.port, bomb, len(bomb),
                                                {"Content-Encoding": "gzip"}))
    assert status == 200
    [forwarded] = recording.take()
    assert forwarded.body == bomb  # byte for byte, still compressed
    assert ("content-encoding", "gzip") in [(k.lower(), v) for k, v in forwarded.headers]
    assert rise < 50 * MiB, f"RSS rose {rise / MiB:.0f} MiB"


def test_a_60_mb_upload_is_held_once_and_bounded(sidecar: SidecarProcess,
                                                 recording: RecordingUpstream) -> None:
    """Envoy's buffer filter reads a body whole before an upstream connection is taken
    (so slow uploads never hold the upstream's): a 60 MB upload costs Envoy about twice
    its size while it is sent on (the buffer and the upstream socket's), bounded per
    request by max_body_bytes; the Python processes copy at most observe_max_bytes."""
    size, piece = 60 * MiB, bytes(range(256)) * 4096  # 1 MiB
    recording.take()
    status, rise = _rise(sidecar, lambda: _post(
        sidecar.port, (piece for _ in range(size // len(piece))), size,
        {"Content-Type": "multipart/form-data; boundary=x"}))
    assert status == 200
    [forwarded] = recording.take()
    assert len(forwarded.body) == size and forwarded.body[:1024] == piece[:1024]
    assert rise < 2 * size + 16 * MiB, f"RSS rose {rise / MiB:.0f} MiB"
