"""A KServe V2 inference server for the tests: answers every inference with a YOLOv8
head holding the same known objects, in JSON or binary as the client asks.

python -m tests.support.kserve_upstream PORT
"""

from __future__ import annotations

import sys

import numpy as np
from aiohttp import web

from lookout.sidecar.pipeline import kserve
from tests.shadow_eval.heads import yolov8_head

# what every inference "finds", in model-input pixels
OBJECT_BOXES = np.array([[40, 40, 200, 300], [300, 320, 420, 400], [450, 100, 600, 250]],
                        np.float32)
OBJECT_CLASSES = np.array([0, 2, 2])  # person, car, car
OBJECT_SCORES = np.array([0.92, 0.81, 0.66], np.float32)
CLASS_NAMES = ("person", "bicycle", "car", *(f"class{i}" for i in range(3, 80)))
HEAD = yolov8_head(OBJECT_BOXES, OBJECT_CLASSES, OBJECT_SCORES, 80)


async def ready(request: web.Request) -> web.Response:
    return web.json_response({})


async def model_metadata(request: web.Request) -> web.Response:
    return web.json_response({
        "name": request.match_info["name"], "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 640, 640]}],
        "outputs": [{"name": "output0", "datatype": "FP32", "shape": [1, 84, 8400]}],
    })


async def infer(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        header, tensors = kserve.parse_request(body, request.headers)
    except kserve.KServeFormatError as error:
        return web.json_response({"error": str(error)}, status=400)
    response, out_length = kserve.encode_infer_body(
        "outputs", [("output0", HEAD)], kserve.wants_binary_output(header),
        {"model_name": request.match_info["name"], "model_version": "1",
         "id": header.get("id", ""), "inputs_seen": [t.name for t in tensors]},
    )
    return web.Response(body=response, headers=kserve.response_headers(out_length))


async def predict(request: web.Request) -> web.Response:
    """Ultralytics-style JSON for plain uploads, whatever the upload holds."""
    await request.read()
    return web.json_response([
        {"name": CLASS_NAMES[c], "class": int(c), "confidence": float(s),
         "box": dict(zip(("x1", "y1", "x2", "y2"), map(float, b), strict=True))}
        for b, c, s in zip(OBJECT_BOXES, OBJECT_CLASSES, OBJECT_SCORES, strict=True)
    ])


async def crowd(request: web.Request) -> web.Response:
    """`n` detections (default 10,000): a pathological but valid response."""
    await request.read()
    count = int(request.query.get("n", "10000"))
    return web.json_response([
        {"name": CLASS_NAMES[i % 3], "class": i % 3, "confidence": 0.5,
         "box": {"x1": i % 600, "y1": i % 400, "x2": i % 600 + 10, "y2": i % 400 + 10}}
        for i in range(count)
    ])


async def not_json(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"\xff\xfe definitely not json", content_type="application/json")


def build_app() -> web.Application:
    app = web.Application(client_max_size=256 * 1024**2)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/health/live", ready)
    app.router.add_get("/v2/models/{name}", model_metadata)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", infer)
    app.router.add_post("/predict", predict)
    app.router.add_post("/not-json", not_json)
    app.router.add_post("/crowd", crowd)
    return app


if __name__ == "__main__":
    web.run_app(build_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                shutdown_timeout=0.5, print=None)
