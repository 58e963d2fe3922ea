"""An upstream with well-behaved and misbehaving endpoints, run as a real process.

python -m tests.support.upstream_app PORT
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import sys

from aiohttp import web


def _peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return peer[1] if peer else -1


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({
        "method": request.method,
        "path": request.path_qs,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "client_port": _peer_port(request),
    }, headers={"X-Upstream": "echo", "Connection": "keep-alive, X-Private-Hop",
                "X-Private-Hop": "must-not-leak"})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code)
    return web.json_response({"status": code, "from": "upstream"}, status=code)


async def chunked(request: web.Request) -> web.StreamResponse:
    parts = int(request.query.get("parts", "5"))
    size = int(request.query.get("size", "1000"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for index in range(parts):
        await response.write(bytes([65 + index % 26]) * size)
    await response.write_eof()
    return response


async def big(request: web.Request) -> web.Response:
    size = int(request.query.get("size", str(4 * 1024 * 1024)))
    return web.Response(body=b"x" * size, content_type="application/octet-stream")


IN_FLIGHT = {"slow": 0}


async def slow(request: web.Request) -> web.Response:
    await request.read()
    IN_FLIGHT["slow"] += 1
    try:
        await asyncio.sleep(float(request.query.get("delay", "1")))
    finally:
        IN_FLIGHT["slow"] -= 1
    return web.json_response({"slept": float(request.query.get("delay", "1"))})


async def in_flight(request: web.Request) -> web.Response:
    """Lets a test know a slow request has reached the upstream, without sleeping."""
    return web.json_response(IN_FLIGHT)


async def reset(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    raise web.HTTPInternalServerError()  # never reaches the client


async def garbage(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.write(b"this is not HTTP at all\r\n\r\n")
    request.transport.close()
    raise web.HTTPInternalServerError()


async def cut_body(request: web.Request) -> web.StreamResponse:
    """Promises `size` bytes, sends 10000, then resets."""
    response = web.StreamResponse()
    response.content_length = int(request.query.get("size", "100000"))
    await response.prepare(request)
    await response.write(b"y" * 10_000)
    assert request.transport is not None
    request.transport.abort()
    return response


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(b'{"compressed": true}'),
                        headers={"Content-Encoding": "gzip",
                                 "Content-Type": "application/json"})


def build_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/in-flight", in_flight)
    app.router.add_get("/reset", reset)
    app.router.add_get("/garbage", garbage)
    app.router.add_get("/cut-body", cut_body)
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


if __name__ == "__main__":
    web.run_app(build_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                shutdown_timeout=0.5,
                print=lambda *_: print("upstream ready", flush=True))
