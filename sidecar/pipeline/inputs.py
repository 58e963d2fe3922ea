"""Find the input image in a request body, for thumbnails and the reference model.

Shapes understood: a raw image body, a multipart upload, JSON with a base64 image
field, and KServe V2 inference requests (BYTES inputs holding encoded images, or
UINT8/FP16/FP32 image tensors in NCHW or NHWC, de-normalised back to pixels).
Runs in the analysis thread, never on the request path.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

import numpy as np
from PIL import Image, UnidentifiedImageError

from lookout.sidecar.pipeline import grpc_v2, json_body, kserve
from lookout.sidecar.pipeline.field_path import walk
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason

_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"))
DEFAULT_IMAGE_FIELDS = ("image", "img", "data", "inputs[0]")


@dataclass(frozen=True, slots=True)
class InputImage:
    """The image the model was asked about."""

    source: str  # raw | multipart | json | kserve_bytes | kserve_tensor
    width: int
    height: int
    encoded: bytes | None = None  # the compressed image as the client sent it
    pixels: np.ndarray | None = None  # HWC uint8 RGB, for tensor inputs

    @property
    def is_model_input(self) -> bool:
        """A tensor is already the model's (letterboxed) input: boxes need no rescale."""
        return self.pixels is not None


# The most pixels an image's header may claim, by how it decodes. JPEG decodes in draft
# mode at 1/8 scale per side, so 50 megapixels (above the 33 of 8K cameras) cost well
# under a megapixel; PNG and WebP decode whole, so 16 megapixels (4K frames are 8) cost
# up to 48 MB per RGB copy. A crafted header can claim billions.
MAX_IMAGE_PIXELS = 50_000_000
MAX_FULL_DECODE_PIXELS = 16_000_000


def image_format(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@contextmanager
def decode_failures() -> Iterator[None]:
    """Pillow's decode errors as the ParseFailure reasons they mean."""
    try:
        yield
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ParseFailure(Reason.UNDECODABLE_IMAGE, str(error)) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ParseFailure(Reason.TRUNCATED_IMAGE, str(error)) from None


def open_encoded(data: bytes, source: str, check: bool = True) -> InputImage:
    """Read the image's size and check it decodes (cheaply: JPEG draft mode); without
    `check` only its header is read, for a caller that decodes it next anyway. An image
    whose header claims more than MAX_IMAGE_PIXELS is refused before any pixel is
    decoded: a few kilobytes of PNG can otherwise claim gigabytes of RGB."""
    with decode_failures(), Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        limit = MAX_IMAGE_PIXELS if image.format == "JPEG" else MAX_FULL_DECODE_PIXELS
        if width * height > limit:
            raise ParseFailure(Reason.UNDECODABLE_IMAGE,
                               f"{width}x{height} {image.format} image is over the "
                               f"{limit:,}-pixel limit; refused before decoding")
        if check:
            image.draft("RGB", (max(width // 8, 1), max(height // 8, 1)))
            image.load()
    return InputImage(source, width, height, encoded=data)


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type", "").split(";")[0].strip().lower()


def extract_image(path: str, headers: Mapping[str, str], body: bytes,
                  image_fields: Sequence[str] = DEFAULT_IMAGE_FIELDS,
                  check: bool = True) -> InputImage | None:
    """The request's image, None when the request carries no body at all; raises
    ParseFailure when there is a body but no usable image in it (without `check`, an
    encoded image's pixels are not decoded here: see `open_encoded`)."""
    if not body:
        return None
    media = _media_type(headers)
    if media.startswith(grpc_v2.GRPC_CONTENT_TYPE):
        return _from_grpc(path, body, check)
    if kserve.is_infer_path(path) and (media in ("", "application/json", "application/octet-stream")
                                       or kserve.HEADER_LENGTH in headers):
        return _from_kserve(headers, body, check)
    if media == "multipart/form-data":
        return _from_multipart(headers.get("Content-Type", ""), body, check)
    if media.endswith("json") or (not media and body[:1] in (b"{", b"[")):
        return _from_json(body, image_fields, check)
    if image_format(body):
        return open_encoded(body, "raw", check)
    if media.startswith("image/"):
        raise ParseFailure(Reason.UNDECODABLE_IMAGE, f"{media} body is not a known image format")
    raise ParseFailure(Reason.NO_IMAGE, f"no image in a {media or 'untyped'} body")


def _from_multipart(content_type: str, body: bytes, check: bool) -> InputImage:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ParseFailure(Reason.BAD_MULTIPART, "multipart body without parts or boundary")
    for part in message.iter_parts():
        payload = part.get_payload(decode=True) or b""
        if image_format(payload):
            return open_encoded(payload, "multipart", check)
    raise ParseFailure(Reason.NO_IMAGE, "no part of the multipart body is an image")


def decode_base64_image(text: str) -> bytes | None:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None
    return data if image_format(data) else None


def _from_json(body: bytes, image_fields: Sequence[str], check: bool) -> InputImage:
    try:
        document = json_body.loads(body)
    except json_body.JsonBodyError as error:
        raise ParseFailure(Reason.BAD_JSON, str(error)) from None
    for field_path in image_fields:
        value = walk(document, field_path)
        if isinstance(value, str):
            data = decode_base64_image(value)
            if data is not None:
                return open_encoded(data, "json", check)
    raise ParseFailure(Reason.NO_IMAGE,
                       f"no base64 image at any of the fields {', '.join(image_fields)}")


def _from_kserve(headers: Mapping[str, str], body: bytes, check: bool) -> InputImage:
    try:
        tensors = kserve.parse_tensors(body, kserve.header_length(headers), "inputs")
    except kserve.KServeFormatError as error:
        raise ParseFailure(Reason.BAD_KSERVE, str(error)) from None
    return _from_tensors(tensors, check)


def _from_grpc(path: str, body: bytes, check: bool) -> InputImage:
    """A V2 gRPC request message (ModelInfer, or one message of ModelStreamInfer)."""
    if path not in grpc_v2.INFER_METHODS:
        raise ParseFailure(Reason.NO_IMAGE, f"{path} is not an inference method")
    try:
        tensors = grpc_v2.request_tensors(body)
    except kserve.KServeFormatError as error:
        raise ParseFailure(Reason.BAD_GRPC, str(error)) from None
    return _from_tensors(tensors, check)


def _from_tensors(tensors: Sequence[kserve.Tensor], check: bool) -> InputImage:
    for tensor in tensors:
        if isinstance(tensor.data, list):
            for element in tensor.data[:1]:
                data = element if image_format(element) else decode_base64_image(
                    element.decode("latin-1"))
                if data is not None:
                    return open_encoded(data, "kserve_bytes", check)
            continue
        pixels = tensor_to_pixels(kserve.as_array(tensor))
        if pixels is not None:
            height, width = pixels.shape[:2]
            return InputImage("kserve_tensor", width, height, pixels=pixels)
    raise ParseFailure(Reason.NO_IMAGE, "no input tensor is an image")


def tensor_to_pixels(array: np.ndarray) -> np.ndarray | None:
    """An image tensor (NCHW/NHWC/CHW/HWC, 1 or 3 channels, uint8 or float in [0, 1]
    or [0, 255]) as HWC uint8 RGB; None when the tensor is not image-like."""
    if array.ndim == 4:
        if array.shape[0] != 1:
            return None
        array = array[0]
    if array.ndim != 3:
        return None
    if array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    height, width = array.shape[:2]
    if array.shape[2] not in (1, 3) or min(height, width) < 8 or max(height, width) > 10 * min(
        height, width
    ):  # too small or too elongated to be a camera frame (an [1, 84, 8400] head, say)
        return None
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            return None
        scale = 255.0 if float(array.max(initial=0.0)) <= 1.0 + 1e-3 else 1.0
        array = np.clip(np.asarray(array, np.float32) * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        return None
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)
