"""A reference model served once for the fleet, by the serving system the team already
runs (Triton, KServe), instead of a copy in every inference pod.

The sidecar keeps the work that must match the local reference exactly: it letterboxes
the sampled image itself, sends the FP32 tensor (REST with the binary tensor extension,
or gRPC with raw contents), and decodes the raw head with the same decoders. So a
remote reference and a local one give the same proxies on the same images. Every
failure — refused, reset, timed out, an error status, an answer that is not a head —
is a `ReferenceUnavailable`: the shadow stage counts it as `reference_error`, backs
off, and user traffic never waits on any of it (this runs on the shadow worker thread).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import numpy as np

from lookout.shadow_eval.decode import DecodeSettings
from lookout.shadow_eval.runner import YoloDetector
from lookout.sidecar.pipeline import grpc_v2, kserve
from lookout.sidecar.pipeline.kserve import KServeFormatError
from lookout.sidecar.settings import ShadowSettings

MAX_RESPONSE_BYTES = 512 * 1024**2  # a batch of 640-pixel heads is tens of MB
GRPC_MESSAGE_BYTES = 4 * 1024**2  # gRPC servers' default receive limit: stay under it
GRPC_SERVICE = "/inference.GRPCInferenceService"


class ReferenceUnavailable(RuntimeError):
    """The remote reference did not give a usable answer; the message says why."""


class V2Transport(Protocol):
    """The three V2 calls the remote reference needs, over REST or gRPC."""

    url: str

    def metadata(self) -> dict[str, Any]: ...

    def sha256(self) -> str: ...

    def infer(self, input_name: str, output_name: str, batch: np.ndarray
              ) -> tuple[np.ndarray, str]: ...

    def close(self) -> None: ...


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return f"{path}/versions/{quote(version, safe='')}" if version else path


def _sha256_parameter(parameters: Any) -> str:
    """A `sha256` model parameter (Triton's config parameters, a KServe/MLServer
    metadata parameter), as text or as Triton's {"string_value": ...}."""
    value = (parameters or {}).get("sha256") if isinstance(parameters, dict) else None
    if isinstance(value, dict):
        value = value.get("string_value")
    text = str(value or "").strip().lower()
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else ""


class HttpTransport:
    """V2 REST on one kept-alive connection, used by one thread (the shadow worker's)."""

    def __init__(self, url: str, model: str, version: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self._secure = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._prefix = parts.path.rstrip("/")
        self._model_path = self._prefix + _model_path(model, version)
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout)
        return self._connection

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[bytes, http.client.HTTPResponse]:
        try:
            connection = self._connect()
            connection.request(method, path, body, headers or {})
            response = connection.getresponse()
            length = int(response.getheader("Content-Length") or 0)
            if length > MAX_RESPONSE_BYTES:
                raise ReferenceUnavailable(f"{self.url}{path} answered {length} bytes, more "
                                           f"than the {MAX_RESPONSE_BYTES} lookout reads")
            data = response.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.close()
            raise ReferenceUnavailable(f"{self.url}{path}: {error or type(error).__name__}"
                                       ) from None
        except ReferenceUnavailable:
            self.close()
            raise
        if response.status != 200:
            raise ReferenceUnavailable(f"{self.url}{path} answered {response.status}: "
                                       f"{data[:200].decode('utf-8', 'replace')}")
        return data, response

    def _json(self, path: str) -> dict[str, Any]:
        data, _ = self._request("GET", path)
        try:
            document = json.loads(data)
        except ValueError:
            raise ReferenceUnavailable(f"{self.url}{path} did not answer JSON") from None
        if not isinstance(document, dict):
            raise ReferenceUnavailable(f"{self.url}{path} did not answer a JSON object")
        return document

    def metadata(self) -> dict[str, Any]:
        return self._json(self._model_path)

    def sha256(self) -> str:
        """Triton's model configuration may carry it; other servers have no such call."""
        try:
            document = self._json(self._model_path + "/config")
        except ReferenceUnavailable:
            return ""
        return _sha256_parameter(document.get("parameters"))

    def infer(self, input_name: str, output_name: str, batch: np.ndarray
              ) -> tuple[np.ndarray, str]:
        wanted = {"outputs": [{"name": output_name, "parameters": {"binary_data": True}}]} \
            if output_name else {"parameters": {"binary_data_output": True}}
        body, length = kserve.encode_infer_body("inputs", [(input_name, batch)], binary=True,
                                                extra=wanted)
        headers = {"Content-Type": "application/octet-stream",
                   kserve.HEADER_LENGTH: str(length)}
        data, response = self._request("POST", self._model_path + "/infer", body, headers)
        try:
            header_length = kserve.header_length(response.headers)
            header = kserve.parse_header(data, header_length)
            tensors = kserve.tensors_from_header(header, data, header_length, "outputs")
            return _output(tensors, output_name), str(header.get("model_version") or "")
        except KServeFormatError as error:
            raise ReferenceUnavailable(f"{self.url}: not a V2 inference answer: {error}"
                                       ) from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _output(tensors: Sequence[kserve.Tensor], name: str) -> np.ndarray:
    """The named output; without a name (the model declares none), the first."""
    found = next((t for t in tensors if t.name == name), tensors[0] if tensors else None)
    if found is None:
        raise KServeFormatError("the answer holds no output")
    return kserve.as_array(found)


class GrpcTransport:
    """V2 gRPC on one channel (grpcio reconnects by itself after a restart)."""

    def __init__(self, url: str, model: str, version: str, timeout: float) -> None:
        import grpc  # only a sidecar with a gRPC reference loads it for this

        from lookout.sidecar.pipeline.protos import INFER_METHOD, message_class

        self.url = url
        self._grpc = grpc
        self._model, self._version, self._timeout = model, version, timeout
        self._channel = grpc.insecure_channel(
            url.removeprefix("grpc://"),
            options=[("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
                     ("grpc.max_send_message_length", MAX_RESPONSE_BYTES)])
        self._messages = {name: message_class(f"inference.{name}") for name in (
            "ModelMetadataRequest", "ModelMetadataResponse", "ModelConfigRequest",
            "ModelConfigResponse", "ModelInferRequest")}
        serialize = lambda message: message.SerializeToString()  # noqa: E731
        self._calls = {
            "metadata": self._channel.unary_unary(
                f"{GRPC_SERVICE}/ModelMetadata", request_serializer=serialize,
                response_deserializer=self._messages["ModelMetadataResponse"].FromString),
            "config": self._channel.unary_unary(
                f"{GRPC_SERVICE}/ModelConfig", request_serializer=serialize,
                response_deserializer=self._messages["ModelConfigResponse"].FromString),
            "infer": self._channel.unary_unary(INFER_METHOD, request_serializer=serialize,
                                               response_deserializer=None),
        }
        self._infer_method = INFER_METHOD

    def _call(self, name: str, request: Any) -> Any:
        try:
            return self._calls[name](request, timeout=self._timeout)
        except self._grpc.RpcError as error:
            raise ReferenceUnavailable(f"{self.url} {name}: {error.code().name}: "
                                       f"{error.details()}") from None

    def metadata(self) -> dict[str, Any]:
        answer = self._call("metadata", self._messages["ModelMetadataRequest"](
            name=self._model, version=self._version))
        tensors = lambda entries: [{"name": t.name, "datatype": t.datatype,  # noqa: E731
                                    "shape": list(t.shape)} for t in entries]
        return {"name": answer.name, "versions": list(answer.versions),
                "platform": answer.platform, "inputs": tensors(answer.inputs),
                "outputs": tensors(answer.outputs)}

    def sha256(self) -> str:
        try:
            answer = self._call("config", self._messages["ModelConfigRequest"](
                name=self._model, version=self._version))
        except ReferenceUnavailable:
            return ""
        parameters = {key: {"string_value": value.string_value}
                      for key, value in answer.config.parameters.items()}
        return _sha256_parameter(parameters)

    def infer(self, input_name: str, output_name: str, batch: np.ndarray
              ) -> tuple[np.ndarray, str]:
        request = self._messages["ModelInferRequest"](
            model_name=self._model, model_version=self._version)
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = input_name, "FP32"
        tensor.shape.extend(batch.shape)
        if output_name:
            request.outputs.add().name = output_name
        request.raw_input_contents.append(np.ascontiguousarray(batch, "<f4").tobytes())
        raw = self._call("infer", request)
        served: dict[str, str] = {}
        try:
            tensors = grpc_v2.response_tensors(self._infer_method, raw, served)
            return _output(tensors, output_name), served.get("model_version", "")
        except KServeFormatError as error:
            raise ReferenceUnavailable(f"{self.url}: not a V2 inference answer: {error}"
                                       ) from None

    def close(self) -> None:
        self._channel.close()


def transport_for(settings: ShadowSettings) -> V2Transport:
    kind = GrpcTransport if settings.shadow_reference_url.startswith("grpc://") \
        else HttpTransport
    return kind(settings.shadow_reference_url, settings.shadow_reference_model,
                settings.shadow_reference_version, settings.shadow_reference_timeout)


@dataclass
class RemoteDetector(YoloDetector):
    """A YOLO detector behind a V2 server; see the module docstring."""

    transport: V2Transport
    names: tuple[str, ...]
    input_size: tuple[int, int]
    input_name: str
    output_name: str  # empty: the model declares none; its first output is the head
    max_batch: int | None
    max_request_images: int  # what one request may carry (gRPC's message limit)
    settings: DecodeSettings
    sha256: str
    served_name: str
    served_version: str

    @classmethod
    def connect(cls, config: ShadowSettings, names: Sequence[str],
                settings: DecodeSettings) -> RemoteDetector:
        """Read the model's metadata; ReferenceUnavailable if it is not a YOLO detector
        that takes one FP32 NCHW image batch of a fixed size."""
        transport = transport_for(config)
        try:
            metadata = transport.metadata()
            inputs, outputs = metadata.get("inputs") or [], metadata.get("outputs") or []
            if not inputs:  # outputs are optional: KServe's custom models declare none
                raise ReferenceUnavailable(f"{transport.url}: model "
                                           f"{config.shadow_reference_model!r} declares no "
                                           f"inputs")
            source, shape = inputs[0], [int(d) for d in inputs[0].get("shape") or []]
            if source.get("datatype") != "FP32" or len(shape) != 4 or shape[1] != 3 \
                    or shape[2] <= 0 or shape[3] <= 0:
                raise ReferenceUnavailable(
                    f"{transport.url}: model {config.shadow_reference_model!r} takes "
                    f"{source.get('datatype')} {shape}; lookout sends FP32 [batch, 3, H, W] "
                    f"with a fixed H and W (export the model with a fixed image size)")
            versions = [str(v) for v in metadata.get("versions") or []]
            sha256 = _sha256_parameter(metadata.get("parameters")) or transport.sha256()
        except (ValueError, TypeError, AttributeError) as error:
            transport.close()
            raise ReferenceUnavailable(f"{transport.url}: unusable model metadata: {error}"
                                       ) from None
        except ReferenceUnavailable:
            transport.close()
            raise
        per_image = 3 * shape[2] * shape[3] * 4
        request_images = max(1, GRPC_MESSAGE_BYTES // per_image) \
            if isinstance(transport, GrpcTransport) else 1 << 16
        return cls(transport, tuple(names), (shape[2], shape[3]), str(source["name"]),
                   str(outputs[0]["name"]) if outputs else "", shape[0] if shape[0] > 0 else None,
                   request_images, settings, sha256,
                   str(metadata.get("name") or config.shadow_reference_model),
                   config.shadow_reference_version or (versions[-1] if versions else ""))

    @property
    def provider(self) -> str:
        return f"{self.transport.url} ({self.served_name} version {self.served_version or '-'})"

    @property
    def source(self) -> str:
        return f"remote reference {self.served_name!r} at {self.transport.url}"

    def run(self, batch: np.ndarray) -> np.ndarray:
        step = min(self.max_batch or batch.shape[0], self.max_request_images)
        heads = []
        for start in range(0, batch.shape[0], step):
            part = batch[start:start + step]
            head, version = self.transport.infer(self.input_name, self.output_name, part)
            if head.ndim != 3 or head.shape[0] != part.shape[0]:
                raise ReferenceUnavailable(f"{self.source} answered a {list(head.shape)} "
                                           f"head for {part.shape[0]} images")
            if version:
                self.served_version = version
            heads.append(head)
        return heads[0] if len(heads) == 1 else np.concatenate(heads)

    def close(self) -> None:
        self.transport.close()
