"""An upstream that speaks WebSocket (aiohttp's server, nobody's test double): `/ws`
echoes every message, `/ws-bye` says "bye" and closes, `/ws-refused` declines the
upgrade with 403, and `/headers` answers a plain request with the headers it saw.

    python -m tests.support.websocket_upstream PORT
"""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(max_msg_size=0)
    await socket.prepare(request)
    async for message in socket:
        if message.type is WSMsgType.TEXT:
            await socket.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await socket.send_bytes(message.data)
    return socket


async def bye(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await socket.send_str("bye")
    await socket.close()
    return socket


async def refused(request: web.Request) -> web.Response:
    return web.json_response({"error": "no websockets here"}, status=403)


async def headers(request: web.Request) -> web.Response:
    return web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})


def main() -> None:
    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/ws-bye", bye)
    app.router.add_get("/ws-refused", refused)
    app.router.add_get("/headers", headers)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)


if __name__ == "__main__":
    main()
