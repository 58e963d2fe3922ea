"""The data plane against a real upstream process, over real HTTP on loopback."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import MAX_BODY, READ_TIMEOUT
from tests.support.processes import (
    SidecarProcess,
    free_port,
    request,
    start_sidecar,
    wait_until,
)

# one worker builds the module's expensive fixtures once
pytestmark = pytest.mark.xdist_group("proxy")


@pytest.fixture(scope="module")
def sidecar(upstream_port: int) -> Iterator[SidecarProcess]:
    """The data plane's own errors and relaying, with this module's timeouts."""
    process = start_sidecar(
        f"http://127.0.0.1:{upstream_port}",
        "--read-timeout", str(READ_TIMEOUT), "--max-body-bytes", str(MAX_BODY))
    yield process
    process.stop()


def _echoed_headers(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_and_path_is_forwarded(sidecar: SidecarProcess, method: str) -> None:
    body = b"payload" if method in ("POST", "PUT", "PATCH") else None
    response = request(sidecar.port, method, "/any/path%20x?q=1&q=2", body=body)
    assert response.status == 200
    echoed = response.json()
    assert echoed["method"] == method
    assert echoed["path"] == "/any/path%20x?q=1&q=2"
    assert echoed["body_bytes"] == (len(body) if body else 0)


def test_head_keeps_the_upstream_content_length(sidecar: SidecarProcess) -> None:
    get = request(sidecar.port, "GET", "/big?size=5000")
    head = request(sidecar.port, "HEAD", "/big?size=5000")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == "5000"


def test_end_to_end_headers_pass_and_hop_by_hop_headers_do_not(sidecar: SidecarProcess) -> None:
    response = request(sidecar.port, "POST", "/echo", body=b"{}", headers={
        "Content-Type": "application/json",
        "X-Request-Id": "abc-123",
        "Authorization": "Bearer token",
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "secret",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
    })
    seen = _echoed_headers(response.body)
    assert seen["x-request-id"] == "abc-123"
    assert seen["authorization"] == "Bearer token"
    assert seen["content-type"] == "application/json"
    for hop in ("x-drop-me", "keep-alive"):
        assert hop not in seen, hop
    # Envoy relays Proxy-Authorization (it is end-to-end to a reverse proxy's upstream)
    # and `TE: trailers` (gRPC needs it); it removes what Connection names
    assert seen["te"] == "trailers"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert response.headers["X-Upstream"] == "echo"


def test_x_forwarded_for_is_appended_to(sidecar: SidecarProcess) -> None:
    response = request(sidecar.port, "GET", "/echo",
                       headers={"X-Forwarded-For": "203.0.113.7"})
    assert _echoed_headers(response.body)["x-forwarded-for"] == "203.0.113.7,127.0.0.1"


def test_large_body_arrives_intact(sidecar: SidecarProcess) -> None:
    body = os.urandom(10 * 1024 * 1024)
    response = request(sidecar.port, "POST", "/upload", body=body,
                       headers={"Content-Type": "image/jpeg"})
    assert response.status == 200
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body_is_forwarded(sidecar: SidecarProcess) -> None:
    body = os.urandom(300_000)
    response = request(sidecar.port, "POST", "/upload", body=body, chunked=True)
    assert response.status == 200
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_response_is_streamed_back_chunked(sidecar: SidecarProcess) -> None:
    response = request(sidecar.port, "GET", "/chunked?parts=7&size=3000")
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    expected = b"".join(bytes([65 + i]) * 3000 for i in range(7))
    assert response.body == expected


def test_response_over_stream_threshold_keeps_its_length(sidecar: SidecarProcess) -> None:
    response = request(sidecar.port, "GET", "/big?size=3000000")
    assert response.headers["Content-Length"] == "3000000"
    assert response.body == b"x" * 3_000_000


def test_compressed_responses_pass_through_untouched(sidecar: SidecarProcess) -> None:
    response = request(sidecar.port, "GET", "/gzip", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(response.body)) == {"compressed": True}


@pytest.mark.parametrize("code", [201, 204, 304, 404, 500, 503])
def test_upstream_status_codes_are_relayed_as_they_are(sidecar: SidecarProcess,
                                                       code: int) -> None:
    response = request(sidecar.port, "GET", f"/status/{code}")
    assert response.status == code
    assert response.headers.get("X-Lookout-Error") is None
    if code >= 400:
        assert response.json() == {"status": code, "from": "upstream"}


def test_upstream_connections_are_kept_alive(sidecar: SidecarProcess) -> None:
    client = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
    ports = {request(sidecar.port, "GET", "/echo", connection=client).json()["client_port"]
             for _ in range(30)}
    client.close()
    assert len(ports) <= 2, f"30 sequential requests used {len(ports)} upstream connections"


def test_body_over_limit_is_413_with_json_by_content_length(sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                     + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        reply = sock.recv(65536).decode()
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert "x-lookout-error: body-too-large" in head.lower()
    assert json.loads(body)["error"] == "body-too-large"
    assert str(MAX_BODY) in json.loads(body)["message"]


def test_chunked_body_over_limit_is_413(sidecar: SidecarProcess) -> None:
    response = request(sidecar.port, "POST", "/predict", body=b"z" * (MAX_BODY + 10),
                       chunked=True)
    assert response.status == 413
    assert response.json()["origin"] == "lookout"


def test_malformed_request_gets_400_and_the_sidecar_keeps_serving(
    sidecar: SidecarProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"NOT-HEX\r\nabc\r\n0\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.split(b" ")[1] == b"400", reply
    assert request(sidecar.port, "GET", "/echo").status == 200


@pytest.mark.parametrize("head", [
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # a field
    b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # the request line
])
def test_oversized_request_heads_are_refused_before_the_upstream(sidecar: SidecarProcess,
                                                                   head: bytes) -> None:
    """Header fields and request lines are bounded (8 KiB each, aiohttp's parser limits):
    a client cannot make lookout buffer, or forward, an unbounded head."""
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(head)
        reply = sock.recv(65536)
    assert reply.split(b" ")[1] in (b"400", b"414", b"431"), reply[:200]
    assert request(sidecar.port, "GET", "/echo").status == 200


def _assert_sidecar_error(response, status: int, kind: str, upstream: str) -> None:
    assert response.status == status
    assert response.headers["X-Lookout-Error"] == kind
    payload = response.json()
    assert payload["error"] == kind
    assert payload["upstream"] == upstream
    assert payload["origin"] == "lookout"


def test_slow_upstream_is_504_naming_the_timeout(sidecar: SidecarProcess,
                                                  upstream_port: int) -> None:
    response = request(sidecar.port, "GET", f"/slow?delay={READ_TIMEOUT * 3}")
    _assert_sidecar_error(response, 504, "upstream-timeout", f"http://127.0.0.1:{upstream_port}")
    assert "read timeout" in response.json()["message"]


def test_upstream_reset_is_502(sidecar: SidecarProcess, upstream_port: int) -> None:
    response = request(sidecar.port, "GET", "/reset")
    _assert_sidecar_error(response, 502, "upstream-reset", f"http://127.0.0.1:{upstream_port}")


def test_upstream_garbage_is_502(sidecar: SidecarProcess, upstream_port: int) -> None:
    response = request(sidecar.port, "GET", "/garbage")
    _assert_sidecar_error(response, 502, "upstream-bad-response",
                          f"http://127.0.0.1:{upstream_port}")


@pytest.mark.parametrize("size", [100_000, 3_000_000])
def test_upstream_dying_mid_body_closes_the_client_connection(sidecar: SidecarProcess,
                                                               size: int) -> None:
    """Responses stream (as nginx's and Envoy's do): once the head is sent, a body cut
    short can only be passed on cut short, never turned into a 502."""
    with pytest.raises(http.client.IncompleteRead):
        request(sidecar.port, "GET", f"/cut-body?size={size}")
    assert request(sidecar.port, "GET", "/echo").status == 200
    assert 'code="sidecar_502",model="yolo-test",route="other"' in sidecar.metrics_text()


def test_dead_upstream_is_502_and_not_ready() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar = start_sidecar(dead, wait_ready=False)
    try:
        response = request(sidecar.port, "POST", "/predict", body=b"img")
        _assert_sidecar_error(response, 502, "upstream-unreachable", dead)
        ready = request(sidecar.admin_port, "GET", "/readyz")
        assert ready.status == 503
        assert ready.json()["checks"]["upstream"]["ok"] is False
        assert request(sidecar.admin_port, "GET", "/healthz").status == 200
    finally:
        assert sidecar.stop() == 0


def test_upstream_that_never_accepts_is_a_502_connect_timeout() -> None:
    # A listening socket with a full backlog that never accepts: SYNs go unanswered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        sidecar = start_sidecar(f"http://127.0.0.1:{port}", "--connect-timeout", "0.5",
                                wait_ready=False)
        try:
            response = request(sidecar.port, "GET", "/x")
            assert response.status == 502
            assert response.headers["X-Lookout-Error"] in ("upstream-connect-timeout",
                                                           "upstream-unreachable")
        finally:
            sidecar.stop()
            for filler in fillers:
                filler.close()


def test_client_that_hangs_up_is_counted_as_499(sidecar: SidecarProcess,
                                                 upstream_port: int) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"GET /slow?delay=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: request(upstream_port, "GET", "/in-flight").json()["slow"] >= 1, 10,
                   "the request to reach the upstream")
    wait_until(lambda: 'code="sidecar_499"' in sidecar.metrics_text(), 10,
               "the hang-up to be counted")
    assert request(sidecar.port, "GET", "/echo").status == 200
