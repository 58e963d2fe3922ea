"""lookout's data port beside nginx, both in front of one recording upstream, with a
decoy listening on another loopback port: every shape of tests/security/corpus.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.security.corpus import SHAPES, Shape
from tests.security.peers import Answer, send_raw
from tests.support.nginx import Nginx, beside_nginx
from tests.support.processes import SidecarProcess
from tests.support.recording_upstream import Recorded, RecordingUpstream

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("refusals")

MAX_BODY = 16 * 1024 * 1024
# nginx refuses these, lookout forwards them, and why that is right
NGINX_REFUSES_LOOKOUT_FORWARDS = {
    "asterisk-options": "OPTIONS * asks about the server itself (RFC 9110 section 9.3.7); "
                        "lookout forwards it as `OPTIONS *` to the configured upstream, "
                        "the only host it ever connects to",
    # Envoy's HTTP/1 codec, and why each is safe behind it: Envoy re-frames every request
    # it forwards (its own request line, headers and Content-Length or chunking), so
    # nothing of the client's framing reaches the upstream to be read another way
    "absolute-userinfo": "the userinfo is dropped (RFC 9110 4.2.4 deprecates it); the "
                         "upstream gets `GET /x` with the target's authority as Host",
    "target-too-long": "the head is bounded as a whole by max_head_bytes (32 KiB), not "
                       "per line as nginx's 8 KiB buffers are",
    "header-9k": "the head is bounded as a whole by max_head_bytes (32 KiB), not per "
                 "field as nginx's 8 KiB buffers are",
    "method-trace": "TRACE is the upstream's to answer or refuse (an inference server "
                    "refuses it); the proxy itself reflects nothing",
    "http20": "Envoy reads any HTTP/1.x-shaped request line as HTTP/1.1 and forwards a "
              "well-formed HTTP/1.1 request",
    "http30": "as http20",
    "http99": "as http20",
    "te-http10": "the chunked body is decoded and forwarded with a Content-Length of its "
                 "own (RFC 9112 6.1's risk is two parsers disagreeing; there is one)",
    "obs-fold": "the fold is replaced by spaces before forwarding, which RFC 9112 5.2 "
                "allows a server in place of the 400",
}
# both forward, but Host differs, and lookout's is the one RFC 9112 3.2.2 asks for: an
# absolute-form target's authority replaces the Host header (nginx was told to keep it)
HOST_FROM_TARGET = {"absolute-other-host"}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "content-length", "expect"}
ADDED_BY_PROXIES = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
                    "traceparent", "tracestate", "x-real-ip"}


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[RecordingUpstream, Nginx, SidecarProcess]]:
    recording = RecordingUpstream()
    try:
        with beside_nginx(recording.port, MAX_BODY, "--client-head-timeout", "3") as pair:
            yield recording, *pair
    finally:
        recording.close()


def _connection_listed(raw: bytes) -> set[str]:
    """Header names the client's own Connection header made hop-by-hop."""
    return {token.strip().lower().decode() for value in
            re.findall(rb"(?im)^connection:([^\r\n]*)", raw) for token in value.split(b",")}


def _end_to_end(request: Recorded, listed: set[str], proxy_port: int,
                upstream_port: int) -> list[tuple[str, str]]:
    """The end-to-end headers (RFC 9110 section 7.6.1), with the proxy's own authority
    (which the client sent as Host) written alike for both proxies. A Host naming the
    upstream is the one a proxy must add when an HTTP/1.0 client sent none."""
    dropped = HOP_BY_HOP | ADDED_BY_PROXIES | listed
    own, upstream = f"127.0.0.1:{proxy_port}", f"127.0.0.1:{upstream_port}"
    return sorted((name.lower(), value.replace(own, "{host}")) for name, value in request.headers
                  if name.lower() not in dropped
                  and not (name.lower() == "host" and value == upstream))


def _send(shape: Shape, port: int, recording: RecordingUpstream) -> tuple[Answer, list[Recorded]]:
    recording.take()
    answer = send_raw(port, shape.render(f"127.0.0.1:{port}", recording.decoy_port),
                      shape.responses, timeout=4, head_request=shape.name == "method-head")
    return answer, recording.take()


def test_the_corpus_is_big_enough() -> None:
    assert len(SHAPES) >= 60
    assert len({shape.name for shape in SHAPES}) == len(SHAPES)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
def test_shape_against_nginx(peers, shape: Shape) -> None:
    recording, nginx, sidecar = peers
    by_nginx, nginx_forwarded = _send(shape, nginx.port, recording)
    by_lookout, lookout_forwarded = _send(shape, sidecar.port, recording)

    assert recording.decoy_connections == 0 and recording.decoy_bytes == 0, \
        "a request reached the decoy"
    assert 500 not in by_lookout.statuses, "lookout failed on the shape itself"
    for status, headers in zip(by_lookout.statuses, by_lookout.headers, strict=False):
        names = {name.lower() for name, _ in headers}
        assert "server" not in names or lookout_forwarded, "lookout named itself"
        if not lookout_forwarded and status >= 400:
            assert "x-lookout-error" in names, "a refusal must say it is lookout's"

    if by_nginx.status in (501, 505) and not lookout_forwarded:  # the same words for it
        assert by_lookout.status == by_nginx.status

    if not nginx_forwarded and lookout_forwarded:
        assert shape.name in NGINX_REFUSES_LOOKOUT_FORWARDS, (
            f"nginx refused ({by_nginx.statuses}) but lookout forwarded: "
            f"{[(r.method, r.target) for r in lookout_forwarded]}")
    if nginx_forwarded and lookout_forwarded:
        assert len(nginx_forwarded) == len(lookout_forwarded)
        for ours, theirs in zip(lookout_forwarded, nginx_forwarded, strict=True):
            assert (ours.method, ours.target) == (theirs.method, theirs.target)
            assert ours.body == theirs.body
            listed = _connection_listed(shape.render("", 0))
            if shape.name in HOST_FROM_TARGET:
                listed.add("host")
                assert ("host", f"127.0.0.1:{recording.decoy_port}") in [
                    (name.lower(), value) for name, value in ours.headers]
            assert _end_to_end(ours, listed, sidecar.port, recording.port) == \
                _end_to_end(theirs, listed, nginx.port, recording.port)
