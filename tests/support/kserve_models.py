"""A real KServe model server (the `kserve` package's ModelServer, not ours) serving two
of the repo's detectors at once under the Open Inference Protocol, each a `kserve.Model`
running onnxruntime:

- `primary` (version "3"): lookout_demo/models/primary.onnx, six classes, 256x256;
- `coarse` (version "1"): lookout_demo/models/coarse.onnx, three classes, 320x320.

Inputs are `images`, FP32 NCHW in [0, 1], or BYTES holding encoded images (decoded and
letterboxed by the server, as a preprocessing step of a Triton ensemble would); the
output is the raw head `output0`, in JSON or the binary extension as the client asks.
With `--gzip` the server compresses its responses as MLServer does, with Starlette's
GZipMiddleware, whenever the client accepts gzip.

With `--grpc-port` KServe's own gRPC server serves the Open Inference Protocol there too,
with one method added that KServe lacks and Triton has: `ModelStreamInfer`, each request
message answered by KServe's own `ModelInfer` servicer, in order, as Triton's
`ModelStreamInferResponse`; and a third model, `slow`, sleeps `SLOW_SECONDS` before
answering, for deadline tests.

With `--reference` it serves only `reference` (version "1"): the shipped reference model,
as a shared reference pool would, for the sidecars' remote reference.

    python -m tests.support.kserve_models PORT [--gzip] [--grpc-port GRPC_PORT] [--reference]
        [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import uuid

import grpc
import kserve
import numpy as np
import onnxruntime
from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.server import RESTServer
from PIL import Image
from starlette.middleware.gzip import GZipMiddleware

from lookout.lookout_demo.models import model_path
from lookout.shadow_eval.letterbox import letterbox_image
from tests.support.kserve_catalog import (
    INPUT_SIZES,
    MODELS,
    REFERENCE_MODEL,
    SLOW_MODEL,
    SLOW_SECONDS,
)

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


class OnnxDetector(kserve.Model):
    def __init__(self, name: str, file: str, version: str, threads: int = 0) -> None:
        super().__init__(name)
        self._file, self.version, self._threads = file, version, threads
        self.session: onnxruntime.InferenceSession | None = None

    def get_input_types(self) -> list[dict]:
        """What `GET /v2/models/{name}` says of the input: its size is what lookout's
        discovery reads."""
        size = INPUT_SIZES[self.name]
        return [{"name": "images", "datatype": "FP32", "shape": [-1, 3, size, size]}]

    def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads  # 0: onnxruntime's default, every core
        self.session = onnxruntime.InferenceSession(str(model_path(self._file)), options,
                                                    providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def _decoded(self, encoded) -> np.ndarray:
        """JPEG/PNG bytes, letterboxed to the model's input like a preprocessing step."""
        size = INPUT_SIZES[self.name]
        frames = []
        for data in encoded:
            image = np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))
            canvas, _ = letterbox_image(image, size, size)
            frames.append(canvas.transpose(2, 0, 1))
        return np.ascontiguousarray(np.stack(frames), np.float32) / 255.0

    async def predict(self, payload: InferRequest, headers=None,
                      response_headers=None) -> InferResponse:
        if self.name == SLOW_MODEL:
            await asyncio.sleep(SLOW_SECONDS)
        images = payload.inputs[0].as_numpy()
        if payload.inputs[0].datatype == "BYTES":  # encoded images, as Triton ensembles take
            images = self._decoded(images.reshape(-1))
        head = self.session.run(None, {"images": images})[0]
        output = InferOutput("output0", list(head.shape), "FP32")
        output.set_data_from_numpy(head, binary_data=payload.use_binary_outputs)
        return InferResponse(payload.id or str(uuid.uuid4()), self.name, [output],
                             model_version=self.version,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


def compress_like_mlserver() -> None:
    """MLServer's REST app adds Starlette's GZipMiddleware; so does this one."""
    add = RESTServer._add_middlewares

    def with_gzip(self, app) -> None:
        add(self, app)
        app.add_middleware(GZipMiddleware, minimum_size=1000)

    RESTServer._add_middlewares = with_gzip


def _length(size: int) -> bytes:
    """A protobuf varint."""
    out = bytearray()
    while True:
        out.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            return bytes(out)


def _stream_response(infer_response: bytes = b"", error: str = "") -> bytes:
    """Triton's ModelStreamInferResponse{error_message = 1, infer_response = 2}, written
    by hand: Triton's generated module cannot be imported beside KServe's (both register
    `inference.*`)."""
    if error:
        data = error.encode()
        return b"\x0a" + _length(len(data)) + data
    return b"\x12" + _length(len(infer_response)) + infer_response


def add_stream_infer() -> None:
    """Serve ModelStreamInfer beside KServe's own methods, through its servicer."""
    add = grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server

    def with_stream(servicer, server) -> None:
        add(servicer, server)

        async def stream(requests, context):
            async for raw in requests:
                request = grpc_predict_v2_pb2.ModelInferRequest.FromString(raw)
                try:
                    response = await servicer.ModelInfer(request, context)
                except Exception as error:  # the stream reports it
                    yield _stream_response(error=str(error) or type(error).__name__)
                    continue
                yield _stream_response(response.SerializeToString())

        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream)}),))

    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server = with_stream
    import kserve.protocol.grpc.server as grpc_server
    grpc_server.grpc_predict_v2_pb2_grpc = grpc_predict_v2_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.gzip:
        compress_like_mlserver()
    if args.grpc_port:
        add_stream_infer()
    models = []
    served = {**MODELS, SLOW_MODEL: ("primary", "1")} if args.grpc_port else MODELS
    if args.reference:
        served = {REFERENCE_MODEL[0]: REFERENCE_MODEL}
    for name, (file, version) in served.items():
        model = OnnxDetector(name, file, version, args.threads)
        model.load()
        models.append(model)
    kserve.ModelServer(http_port=args.port, grpc_port=args.grpc_port or 8081,
                       enable_grpc=bool(args.grpc_port), workers=1,
                       enable_latency_logging=False).start(models)


if __name__ == "__main__":
    main()
