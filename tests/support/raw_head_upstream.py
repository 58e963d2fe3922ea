"""A V2 inference server that answers every request with a YOLO11n-shaped raw head as
KServe V2 JSON: `output0`, FP32, [1, 84, 8400] (4 box rows, 80 class rows, 8400
anchors), about 14 MB per response, as a KServe Python server returns an ONNX export's
output. A few anchors carry confident boxes; the rest is low-score noise.

Which of `VARIANTS` heads a request gets depends on its body (crc32), so a test can
tell what the upstream sent for a request without asking it.

Run: python -m tests.support.raw_head_upstream PORT
"""

from __future__ import annotations

import json
import sys
import zlib
from functools import cache

import numpy as np

CLASSES, ANCHORS, INPUT = 80, 8400, 640
VARIANTS = 4
MODEL = "yolo11n"


@cache
def head(variant: int) -> np.ndarray:
    rng = np.random.default_rng(variant)
    tensor = np.zeros((1, 4 + CLASSES, ANCHORS), np.float32)
    tensor[0, 0:2] = rng.uniform(0, INPUT, (2, ANCHORS))
    tensor[0, 2:4] = rng.uniform(4, 64, (2, ANCHORS))
    tensor[0, 4:] = rng.uniform(0, 0.05, (CLASSES, ANCHORS))
    for anchor in rng.choice(ANCHORS, 6 + variant, replace=False):
        tensor[0, 4 + int(rng.integers(CLASSES)), anchor] = rng.uniform(0.5, 0.95)
    return tensor


@cache
def response_body(variant: int) -> bytes:
    tensor = head(variant)
    return json.dumps({"model_name": MODEL, "model_version": "1", "id": str(variant),
                       "outputs": [{"name": "output0", "datatype": "FP32",
                                    "shape": list(tensor.shape),
                                    "data": tensor.reshape(-1).tolist()}]}).encode()


def variant_of(request_body: bytes) -> int:
    return zlib.crc32(request_body) % VARIANTS


def main(port: int) -> None:
    from aiohttp import web

    for variant in range(VARIANTS):
        response_body(variant)

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=response_body(variant_of(body)),
                            content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post(f"/v2/models/{MODEL}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
