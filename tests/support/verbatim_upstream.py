"""An upstream that answers each path with a fixed response, header block byte for
byte: one per response shape lookout analyses (its "adapters"), with the header quirks
real servers have — no Content-Type, lower-case names, repeated headers, chunked
bodies, gzip. Nothing here is normalised by a framework, so whatever a client sees
beyond what this sends was added on the way.

    python -m tests.support.verbatim_upstream PORT
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys

import numpy as np

from lookout.sidecar.pipeline.kserve import encode_infer_body

_ULTRALYTICS = json.dumps([{"name": "person", "class": 0, "confidence": 0.9,
                            "box": {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0}}]).encode()
_ROBOFLOW = json.dumps({"predictions": [{"x": 10, "y": 10, "width": 4, "height": 4,
                                         "confidence": 0.8, "class": "helmet"}]}).encode()
_HEAD = np.zeros((1, 10, 64), np.float32)
_KSERVE_JSON, _ = encode_infer_body("outputs", [("output0", _HEAD)], False,
                                    {"model_name": "m", "model_version": "2"})
_KSERVE_BINARY, _LENGTH = encode_infer_body("outputs", [("output0", _HEAD)], True,
                                            {"model_name": "m", "model_version": "2"})


def _fixed(headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunked(headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers),
             "Transfer-Encoding: chunked"]
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"


RESPONSES: dict[str, bytes] = {
    "/ultralytics": _fixed([("content-type", "application/json"),
                            ("x-request-id", "abc"), ("Server", "uvicorn")], _ULTRALYTICS),
    "/roboflow": _fixed([("Content-Type", "application/json; charset=utf-8"),
                         ("Vary", "Accept"), ("Vary", "Origin"),
                         ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], _ROBOFLOW),
    "/v2/models/m/infer": _fixed([("Content-Type", "application/json"),
                                  ("Cache-Control", "no-store")], _KSERVE_JSON),
    # KServe sends binary responses with no Content-Type at all, chunked
    "/v2/models/m/binary": _chunked([("date", "Tue, 01 Dec 2026 16:00:00 GMT"),
                                     ("server", "uvicorn"),
                                     ("inference-header-content-length", str(_LENGTH))],
                                    _KSERVE_BINARY),
    "/gzip": _fixed([("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                     ("Vary", "Accept-Encoding")], gzip.compress(_ULTRALYTICS)),
    "/bare": _fixed([], _ULTRALYTICS),  # no header but the length
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(RESPONSES.get(path, b"HTTP/1.1 404 Not Found\r\n"
                                             b"Content-Length: 0\r\n\r\n"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
