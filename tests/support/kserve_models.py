"""A real KServe model server (the `kserve` package's ModelServer, not ours) serving two
of the repo's detectors at once under the Open Inference Protocol, each a `kserve.Model`
running onnxruntime:

- `primary` (version "3"): lookout_demo/models/primary.onnx, six classes, 256x256;
- `coarse` (version "1"): lookout_demo/models/coarse.onnx, three classes, 320x320.

Inputs are `images`, FP32 NCHW in [0, 1]; the output is the raw head `output0`, in JSON
or the binary extension as the client asks. With `--gzip` the server compresses its
responses as MLServer does, with Starlette's GZipMiddleware, whenever the client
accepts gzip.

    python -m tests.support.kserve_models PORT [--gzip]
"""

from __future__ import annotations

import argparse
import logging
import uuid

import kserve
import onnxruntime
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.server import RESTServer
from starlette.middleware.gzip import GZipMiddleware

from lookout.lookout_demo.models import model_path

MODELS = {"primary": ("primary", "3"), "coarse": ("coarse", "1")}
INPUT_SIZES = {"primary": 256, "coarse": 320}


class OnnxDetector(kserve.Model):
    def __init__(self, name: str, file: str, version: str) -> None:
        super().__init__(name)
        self._file, self.version = file, version
        self.session: onnxruntime.InferenceSession | None = None

    def get_input_types(self) -> list[dict]:
        """What `GET /v2/models/{name}` says of the input: its size is what lookout's
        discovery reads."""
        size = INPUT_SIZES[self.name]
        return [{"name": "images", "datatype": "FP32", "shape": [-1, 3, size, size]}]

    def load(self) -> bool:
        self.session = onnxruntime.InferenceSession(str(model_path(self._file)),
                                                    providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None,
                      response_headers=None) -> InferResponse:
        images = payload.inputs[0].as_numpy()
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.gzip:
        compress_like_mlserver()
    models = []
    for name, (file, version) in MODELS.items():
        model = OnnxDetector(name, file, version)
        model.load()
        models.append(model)
    kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1,
                       enable_latency_logging=False).start(models)


if __name__ == "__main__":
    main()
