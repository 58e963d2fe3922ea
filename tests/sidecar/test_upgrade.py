"""Protocol upgrades on the data port: a WebSocket handshake the upstream accepts is
relayed and its bytes tunnelled both ways; one it declines is answered and the
connection closed; `h2c` is served as HTTP/1.1; an idle tunnel is closed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.processes import (
    SidecarProcess,
    served_module,
    start_sidecar,
    wait_until,
)

HANDSHAKE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
             "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


@pytest.fixture(scope="module")
def websocket_upstream() -> Iterator[int]:
    with served_module("tests.support.websocket_upstream") as port:
        yield port


@pytest.fixture(scope="module")
def sidecar(websocket_upstream: int) -> Iterator[SidecarProcess]:
    process = start_sidecar(f"http://127.0.0.1:{websocket_upstream}", "--read-timeout", "2",
                            wait_ready=False)
    yield process
    process.stop()


def _read_response(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_websocket_is_relayed_both_ways(sidecar: SidecarProcess) -> None:
    big = os.urandom(3 * 1024**2)  # more than any buffer on the way: flow control works

    async def converse() -> list[object]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{sidecar.port}/ws", max_msg_size=0) as ws:
            await ws.send_str("hello")
            text = (await ws.receive(timeout=10)).data
            await ws.send_bytes(big)
            echoed = (await ws.receive(timeout=30)).data
            await ws.close()
            return [text, echoed, ws.close_code]

    text, echoed, code = asyncio.run(converse())
    assert text == "hello"
    assert echoed == big
    assert code == 1000
    wait_until(lambda: sidecar.metric("lookout_requests_total", code="101") >= 1, 20,
               "the handshake counted as a 101 exchange")


def test_the_upstream_closing_ends_the_tunnel(sidecar: SidecarProcess) -> None:
    async def listen() -> list[object]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{sidecar.port}/ws-bye") as ws:
            first = await ws.receive(timeout=10)
            second = await ws.receive(timeout=10)
            return [first.data, second.type]

    said, then = asyncio.run(listen())
    assert said == "bye"
    assert then in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def test_an_idle_tunnel_is_closed_after_the_read_timeout(sidecar: SidecarProcess) -> None:
    async def wait_quietly() -> aiohttp.WSMsgType:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{sidecar.port}/ws", autoping=False,
                heartbeat=None) as ws:
            return (await ws.receive(timeout=20)).type  # the sidecar ends it, not this

    assert asyncio.run(wait_quietly()) in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                           aiohttp.WSMsgType.ERROR)


def test_a_declined_upgrade_is_answered_and_the_connection_closed(
        sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as client:
        client.sendall(HANDSHAKE.format(path="/ws-refused").encode())
        response = _read_response(client)
        rest = b""
        while chunk := client.recv(65536):  # the connection ends after this response
            rest += chunk
    head = response.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 403")
    assert "connection: close" in head
    assert b"no websockets here" in response + rest


def test_h2c_is_served_as_http_1_1(sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as client:
        for _ in range(2):  # and the connection stays an HTTP/1.1 one
            client.sendall(b"GET /headers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                           b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
            response = _read_response(client)
            head, _, body = response.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += client.recv(65536)
            assert head.startswith(b"HTTP/1.1 200")
            seen = {name.lower() for name, _ in json.loads(body)["headers"]}
            assert "upgrade" not in seen and "http2-settings" not in seen


def test_sigterm_ends_an_open_tunnel_after_the_grace(websocket_upstream: int) -> None:
    sidecar = start_sidecar(f"http://127.0.0.1:{websocket_upstream}", "--shutdown-grace", "1",
                            wait_ready=False)

    async def hold_open() -> tuple[str, aiohttp.WSMsgType]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{sidecar.port}/ws", heartbeat=None) as ws:
            await ws.send_str("still here")
            echoed = (await ws.receive(timeout=10)).data  # the tunnel is up
            sidecar.process.popen.send_signal(signal.SIGTERM)
            return echoed, (await ws.receive(timeout=20)).type

    try:
        echoed, ended = asyncio.run(hold_open())
    finally:
        code = sidecar.stop()
    assert echoed == "still here"
    assert ended in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert code == 0
