"""The proxy adds or rewrites no end-to-end header, whatever shape the response has:
every response lookout analyses, from an upstream that writes its header block by hand,
compared direct and through the sidecar (RFC 9110 7.6.1: only hop-by-hop headers and
the framing may differ). Names arrive lower-cased, as Envoy writes them (RFC 9110 5.1:
they are case-insensitive), and spelled as the upstream spelled them with
`preserve_header_case`."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from lookout.slo import catalog
from tests.support.processes import (
    SidecarProcess,
    served_module,
    start_sidecar,
    wait_until,
)
from tests.support.verbatim_upstream import RESPONSES

FRAMING = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@pytest.fixture(scope="module")
def verbatim() -> Iterator[int]:
    with served_module("tests.support.verbatim_upstream") as port:
        yield port


@pytest.fixture(scope="module", params=[False, True], ids=["names-lower-cased",
                                                           "preserve-header-case"])
def preserve_case(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture(scope="module")
def sidecar(verbatim: int, preserve_case: bool) -> Iterator[SidecarProcess]:
    process = start_sidecar(f"http://127.0.0.1:{verbatim}", "--preserve-header-case",
                            str(preserve_case).lower())
    yield process
    process.stop()


def _get(port: int, path: str) -> tuple[list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, b"\xff\xd8\xff", {"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        assert response.status == 200
        return response.getheaders(), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", sorted(RESPONSES))
def test_headers_and_body_are_the_upstreams(sidecar: SidecarProcess, verbatim: int,
                                            preserve_case: bool, path: str) -> None:
    direct_headers, direct_body = _get(verbatim, path)
    proxied_headers, proxied_body = _get(sidecar.port, path)
    assert proxied_body == direct_body
    if not preserve_case:
        assert all(name == name.lower() for name, _ in proxied_headers)
        direct_headers = [(name.lower(), value) for name, value in direct_headers]

    def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Repeated list fields as one (RFC 9110 5.3 lets a proxy combine them, and
        Envoy does for Vary and its kin); Set-Cookie never combined."""
        folded: dict[str, list[str]] = {}
        for name, value in headers:
            if name.lower() in FRAMING:
                continue
            if name.lower() == "set-cookie" or name not in folded:
                folded.setdefault(name, []).append(value)
            else:
                folded[name][-1] += "," + value
        return [(name, value) for name, values in folded.items() for value in values]

    # a proxy adds the Date an upstream left out (RFC 9110 6.6.1), as nginx does
    if not any(name.lower() == "date" for name, _ in direct_headers):
        proxied_headers = [(name, v) for name, v in proxied_headers if name.lower() != "date"]
    assert end_to_end(proxied_headers) == end_to_end(direct_headers)


def test_and_each_was_analysed(sidecar: SidecarProcess) -> None:
    """The same responses parse: the header checks were not on bodies lookout ignores."""
    before = sidecar.metric(catalog.DETECTIONS_PER_REQUEST.count_name)
    for path in RESPONSES:
        _get(sidecar.port, path)
    wait_until(lambda: sidecar.metric(catalog.DETECTIONS_PER_REQUEST.count_name)
               >= before + len(RESPONSES), 30, "every response analysed")
    assert sidecar.metric(catalog.PARSE_FAILURES.sample_name,
                          reason="unrecognized_response") == 0
