"""Header names on the HTTP/1.1 port: lower-cased both ways as Envoy alone does, or each
spelled as its sender spelled it with `preserve_header_case` (for peers that compare
names by case)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.peers import send_raw
from tests.support.processes import SidecarProcess, start_sidecar
from tests.support.recording_upstream import RecordingUpstream

REQUEST = (b"POST /v2/models/yolo/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"X-Request-ID: case-1\r\nContent-Length: 2\r\n\r\n{}")


@pytest.fixture(scope="module", params=[False, True], ids=["default", "preserved"])
def sidecar(request: pytest.FixtureRequest,
            recording: RecordingUpstream) -> Iterator[tuple[SidecarProcess, bool]]:
    preserve = request.param
    process = start_sidecar(f"http://127.0.0.1:{recording.port}",
                            "--preserve-header-case", str(preserve).lower())
    yield process, preserve
    process.stop()


def test_header_names_reach_each_side_lower_cased_unless_preserved(
        sidecar: tuple[SidecarProcess, bool], recording: RecordingUpstream) -> None:
    process, preserve = sidecar
    recording.take()
    answer = send_raw(process.port, REQUEST)
    assert answer.status == 200
    sent = [each for each in recording.take() if each.target == "/v2/models/yolo/infer"]
    assert len(sent) == 1
    upstream_names = {name for name, _ in sent[0].headers}
    client_names = {name for name, _ in answer.headers[0]}
    if preserve:
        assert "X-Request-ID" in upstream_names
        assert "Content-Type" in client_names  # as the recording upstream spells it
    else:
        assert "x-request-id" in upstream_names
        assert "content-type" in client_names
        assert not any(name != name.lower() for name in upstream_names | client_names)
