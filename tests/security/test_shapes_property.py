"""Property: whatever the request and the response look like — method, header sets,
sized or chunked bodies both ways, a body that ends with the connection or is cut short —
what comes out of lookout is what comes out of nginx in front of the same upstream: the
same request reaches the upstream, and the client gets the same status, end-to-end
headers and body. A body cut short fails for the client through both: nginx, which
streams, ends the connection inside the body; lookout does too once it has started the
response, and before that (a body small enough to buffer) answers 502
`upstream-bad-body` itself, the deliberate difference `test_proxy.py` pins."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.nginx import Nginx, beside_nginx
from tests.support.processes import SidecarProcess
from tests.support.recording_upstream import Recorded
from tests.support.shape_upstream import ResponseShape, ShapeUpstream

MAX_BODY = 1024**2
# per hop, or what each proxy adds of its own (RFC 9110 7.6.1; nginx names itself)
FRAMING = {"connection", "keep-alive", "transfer-encoding", "content-length", "te",
           "trailer", "upgrade", "proxy-connection"}
PROXY_OWN = {"server", "date", "forwarded", "x-forwarded-for", "x-forwarded-proto",
             "x-forwarded-host", "x-real-ip", "via", "traceparent", "tracestate",
             "baggage", "host"}


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[ShapeUpstream, Nginx, SidecarProcess]]:
    upstream = ShapeUpstream()
    try:
        with beside_nginx(upstream.port, MAX_BODY) as pair:
            yield upstream, *pair
    finally:
        upstream.close()


names = st.from_regex(r"x-[a-z]{1,8}(-[a-z0-9]{1,4})?", fullmatch=True)
values = st.from_regex(r"[A-Za-z0-9 ,;=/._~-]{0,24}", fullmatch=True).map(str.strip)
header_sets = st.lists(st.tuples(names, values), max_size=5,
                       unique_by=lambda header: header[0])
requests = st.fixed_dictionaries({
    "method": st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    "headers": header_sets,
    "body": st.one_of(st.none(), st.binary(max_size=20_000)),
    "chunked": st.booleans(),
})
responses = st.builds(
    ResponseShape,
    status=st.sampled_from([200, 201, 202, 204, 301, 304, 404, 409, 500, 503]),
    headers=header_sets,
    size=st.sampled_from([0, 1, 100, 5000, 70_000]),
    framing=st.sampled_from(["length", "chunked", "close", "cut"]),
)


def _send(port: int, request: dict, shape: ResponseShape):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = request["body"]
        headers = dict(request["headers"])
        if body is not None and request["chunked"]:
            connection.request(request["method"], shape.path(), body=iter([body[:7], body[7:]]),
                               headers=headers, encode_chunked=True)
        else:
            connection.request(request["method"], shape.path(), body=body, headers=headers)
        response = connection.getresponse()
        try:
            payload = response.read()
        except http.client.IncompleteRead:
            payload = None  # cut short: the honest signal is the incomplete body
        return response.status, response.getheaders(), payload
    finally:
        connection.close()


def _end_to_end(headers) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in headers
                  if name.lower() not in FRAMING | PROXY_OWN)


def _upstream_saw(seen: list[Recorded]) -> list[tuple]:
    return [(s.method, s.target, s.body, _end_to_end(s.headers)) for s in seen]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests, shape=responses)
def test_lookout_relays_every_shape_as_nginx_does(peers, request: dict,
                                                  shape: ResponseShape) -> None:
    upstream, nginx, sidecar = peers
    upstream.take()
    by_nginx = _send(nginx.port, request, shape)
    through_nginx = upstream.take()
    by_lookout = _send(sidecar.port, request, shape)
    through_lookout = upstream.take()

    assert _upstream_saw(through_lookout) == _upstream_saw(through_nginx)
    status, headers, body = by_lookout
    cut = shape.framing == "cut" and shape.size > 0 and shape.status not in (204, 304)
    if cut:
        assert by_nginx[2] is None
        assert body is None or (status == 502 and dict(headers).get("X-Lookout-Error")
                                == "upstream-bad-body")
        return
    assert status == by_nginx[0]
    assert _end_to_end(headers) == _end_to_end(by_nginx[1])
    assert body == by_nginx[2]
