"""What one request may cost the proxy in memory: read from /proc, never timed."""

from __future__ import annotations

import http.client
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import SidecarProcess, python_data_plane, start_sidecar
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
    pid = sidecar.process.popen.pid
    recording.take()
    idle = _status(pid, "VmRSS")
    _reset_peak(pid)
    assert _post(sidecar.port, bomb, len(bomb), {"Content-Encoding": "gzip"}) == 200
    peak = _status(pid, "VmHWM")
    [forwarded] = recording.take()
    assert forwarded.body == bomb  # byte for byte, still compressed
    assert ("Content-Encoding", "gzip") in forwarded.headers
    assert peak - idle < 50 * MiB, f"RSS rose {(peak - idle) / MiB:.0f} MiB"


def test_a_60_mb_upload_streams_through(sidecar: SidecarProcess,
                                        recording: RecordingUpstream) -> None:
    size, piece = 60 * MiB, bytes(range(256)) * 4096  # 1 MiB
    pid = sidecar.process.popen.pid
    recording.take()
    idle = _status(pid, "VmRSS")
    _reset_peak(pid)
    status = _post(sidecar.port, (piece for _ in range(size // len(piece))), size,
                   {"Content-Type": "multipart/form-data; boundary=x"})
    peak = _status(pid, "VmHWM")
    assert status == 200
    [forwarded] = recording.take()
    assert len(forwarded.body) == size and forwarded.body[:1024] == piece[:1024]
    assert peak - idle < 100 * MiB, f"RSS rose {(peak - idle) / MiB:.0f} MiB"


@pytest.fixture(scope="module", autouse=True)
def _python_request_path() -> Iterator[None]:
    """The Python request path's own behaviour, not yet carried over to Envoy."""
    with python_data_plane():
        yield
