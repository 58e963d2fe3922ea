"""An OTLP/HTTP endpoint that accepts and discards spans, so the benchmark pays the
real export cost without a collector. python bench/otlp_sink.py PORT"""

import sys

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


if __name__ == "__main__":
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/traces", accept)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
