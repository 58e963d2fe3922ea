"""`lookout demo-upstream`: an onnxruntime inference server that plays the part of the
GPU YOLO container in the demo and the tests. Not part of the sidecar.

- `POST /predict` — an image (raw body or multipart upload) -> Ultralytics-style JSON
  detections in source-image pixels;
- KServe V2: `GET /v2/health/ready|live`, `GET /v2/models/{name}[/ready]`,
  `POST /v2/models/{name}/infer` — the model's raw `output0` head for an `images` tensor
  (FP32/UINT8, [1, 3, H, W]) or a BYTES input holding an encoded image; JSON or the
  binary tensor extension, as the client asks.

onnxruntime uses its CUDA provider when one is available, else the CPU.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.pipeline import kserve
from lookout.sidecar.pipeline.inputs import extract_image
from lookout.sidecar.pipeline.parse_errors import ParseFailure

log = logging.getLogger(__name__)

def detections_json(detector: OnnxDetector, detections: Detections) -> list[dict[str, object]]:
    """Ultralytics-style JSON: name, class, confidence, box corners in source pixels."""
    return [
        {"name": name, "class": int(c), "confidence": round(float(s), 5),
         "box": dict(zip(("x1", "y1", "x2", "y2"), (round(float(v), 2) for v in b),
                         strict=True))}
        for b, s, c, name in zip(detections.boxes, detections.scores,
                                 detections.classes.tolist(),
                                 detections.labels(detector.names), strict=True)
    ]


def _decode_image(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"not a readable image: {error}"}),
                                 content_type="application/json") from None


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}),
                              content_type="application/json")


class DemoServer:
    def __init__(self, detector: OnnxDetector, model_name: str = "yolo") -> None:
        self.detector = detector
        self.model_name = model_name

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2/health/live", self.ready)
        app.router.add_get("/v2/models/{name}", self.metadata)
        app.router.add_get("/v2/models/{name}/ready", self.ready)
        app.router.add_post("/v2/models/{name}/infer", self.infer)
        app.router.add_post("/v2/models/{name}/versions/{version}/infer", self.infer)
        app.router.add_post("/predict", self.predict)
        return app

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def metadata(self, request: web.Request) -> web.Response:
        height, width = self.detector.input_size
        outputs = self.detector.session.get_outputs()[0]
        return web.json_response({
            "name": self.model_name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, height, width]}],
            "outputs": [{"name": "output0", "datatype": "FP32",
                         "shape": [d if isinstance(d, int) else -1 for d in outputs.shape]}],
        })

    async def predict(self, request: web.Request) -> web.Response:
        """Raw image, multipart upload or JSON base64: the shapes the sidecar reads too."""
        body = await request.read()
        try:
            image = extract_image(request.path, request.headers, body)
        except ParseFailure as failure:
            raise _bad_request(f"not a readable image: {failure.detail}") from None
        if image is None or image.encoded is None:
            raise _bad_request("send an image as the body or as a multipart file")
        [detections] = self.detector.detect_batch([_decode_image(image.encoded)])
        return web.json_response(detections_json(self.detector, detections))

    async def infer(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            header, tensors = kserve.parse_request(body, request.headers)
        except kserve.KServeFormatError as error:
            raise _bad_request(str(error)) from None
        if not tensors:
            raise _bad_request("no input tensor")
        head = self.detector.run(self._model_input(tensors[0]))
        response, out_length = kserve.encode_infer_body(
            "outputs", [("output0", head.astype(np.float32))], kserve.wants_binary_output(header),
            {"model_name": self.model_name, "model_version": "1", "id": header.get("id", "")})
        return web.Response(body=response, headers=kserve.response_headers(out_length))

    def _model_input(self, tensor: kserve.Tensor) -> np.ndarray:
        height, width = self.detector.input_size
        if isinstance(tensor.data, list):
            if not tensor.data:
                raise _bad_request("empty BYTES input")
            return self.detector.prepare(_decode_image(tensor.data[0]))[0][None]
        array = kserve.as_array(tensor)
        if array.shape != (1, 3, height, width):
            raise _bad_request(f"input {tensor.name!r} must be [1, 3, {height}, {width}], "
                               f"got {list(array.shape)}")
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        return array.astype(np.float32)


def run(model_path: str, host: str, port: int, model_name: str = "yolo") -> None:
    detector = OnnxDetector.load(model_path, providers=("cuda", "cpu"))
    web.run_app(DemoServer(detector, model_name).build(), host=host, port=port,
                access_log=None, print=None)
