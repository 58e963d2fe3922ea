"""A small built-in HTTP upstream that echoes requests as JSON.

It stands in for the inference container in `make demo` until lookout ships its own
YOLO server, and gives a quick end-to-end check of a deployment (`lookout echo-upstream`).
"""

from __future__ import annotations

import hashlib

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({
        "method": request.method,
        "path": request.path_qs,
        "headers": dict(request.headers),
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    })


def build_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def run(host: str, port: int) -> None:
    web.run_app(build_app(), host=host, port=port, access_log=None, print=None)
