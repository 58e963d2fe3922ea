"""Finding the input image in every request shape, and refusing broken ones clearly."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from lookout.sidecar.pipeline.inputs import extract_image, tensor_to_pixels
from lookout.sidecar.pipeline.kserve import HEADER_LENGTH, encode_infer_body
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason

INFER = "/v2/models/yolo/infer"


def encoded(fmt: str = "JPEG", size: tuple[int, int] = (320, 200)) -> bytes:
    image = Image.new("RGB", size, (30, 120, 200))
    image.paste((250, 40, 40), (50, 50, 150, 120))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "media"), [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                             ("WEBP", "image/webp"),
                                             ("JPEG", "application/octet-stream")])
def test_raw_bodies(fmt, media) -> None:
    image = extract_image("/predict", {"Content-Type": media}, encoded(fmt))
    assert (image.source, image.width, image.height) == ("raw", 320, 200)
    assert image.encoded is not None


def test_multipart_upload() -> None:
    boundary = "lookout-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"conf\"\r\n\r\n0.5\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"frame.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body += encoded("PNG") + f"\r\n--{boundary}--\r\n".encode()
    image = extract_image("/predict", {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    assert (image.source, image.width) == ("multipart", 320)


@pytest.mark.parametrize("document", [
    {"image": "B64"}, {"img": "data:image/jpeg;base64,B64"}, {"data": "B64", "conf": 0.3},
    {"inputs": ["B64"]},
])
def test_json_base64_fields(document) -> None:
    b64 = base64.b64encode(encoded()).decode()
    body = json.dumps(document).replace("B64", b64).encode()
    image = extract_image("/predict", {"Content-Type": "application/json"}, body)
    assert (image.source, image.height) == ("json", 200)


def test_json_field_path_is_configurable() -> None:
    b64 = base64.b64encode(encoded()).decode()
    body = json.dumps({"request": {"frames": [{"jpeg": b64}]}}).encode()
    image = extract_image("/predict", {"Content-Type": "application/json"}, body,
                          ("request.frames[0].jpeg",))
    assert image.width == 320


@pytest.mark.parametrize("binary", [False, True])
def test_kserve_bytes_input_holding_an_encoded_image(binary) -> None:
    body, length = encode_infer_body("inputs", [("IMAGE", [encoded()])], binary)
    headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
    if length is not None:
        headers[HEADER_LENGTH] = str(length)
    if not binary:  # JSON BYTES carry the image as base64 text
        document = json.loads(body)
        document["inputs"][0]["data"] = [base64.b64encode(encoded()).decode()]
        body = json.dumps(document).encode()
    image = extract_image(INFER, headers, body)
    assert (image.source, image.width, image.height) == ("kserve_bytes", 320, 200)


@pytest.mark.parametrize(("dtype", "layout"), [("uint8", "NHWC"), ("float32", "NCHW"),
                                               ("float16", "NCHW")])
@pytest.mark.parametrize("binary", [False, True])
def test_kserve_image_tensors_are_denormalised(dtype, layout, binary) -> None:
    pixels = np.zeros((64, 96, 3), np.uint8)
    pixels[10:30, 20:50] = (255, 128, 0)
    tensor = pixels[None]
    if layout == "NCHW":
        tensor = np.transpose(tensor, (0, 3, 1, 2))
    if dtype != "uint8":
        tensor = (tensor / 255.0).astype(dtype)
    body, length = encode_infer_body("inputs", [("images", tensor)], binary)
    headers = {HEADER_LENGTH: str(length)} if length is not None else {}
    image = extract_image(INFER, headers, body)
    assert (image.source, image.width, image.height) == ("kserve_tensor", 96, 64)
    assert image.is_model_input
    np.testing.assert_allclose(image.pixels.astype(int), pixels.astype(int), atol=1)


def test_tensors_that_are_not_images_are_not_mistaken_for_one() -> None:
    assert tensor_to_pixels(np.zeros((1, 84, 8400), np.float32)) is None
    assert tensor_to_pixels(np.zeros((2, 3, 64, 64), np.float32)) is None
    assert tensor_to_pixels(np.zeros((1, 3, 64, 64), np.int64)) is None
    assert tensor_to_pixels(np.full((1, 3, 64, 64), np.nan, np.float32)) is None


def test_no_body_is_no_image_and_no_failure() -> None:
    assert extract_image("/predict", {}, b"") is None


@pytest.mark.parametrize(("path", "headers", "body", "reason"), [
    ("/predict", {"Content-Type": "image/jpeg"}, encoded()[:400], Reason.TRUNCATED_IMAGE),
    ("/predict", {"Content-Type": "image/png"}, encoded("PNG")[:300], Reason.TRUNCATED_IMAGE),
    ("/predict", {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
     Reason.UNDECODABLE_IMAGE),
    ("/predict", {"Content-Type": "image/jpeg"}, b"not an image", Reason.UNDECODABLE_IMAGE),
    ("/predict", {"Content-Type": "application/json"}, b'{"image": "\xff\xfe"}', Reason.BAD_JSON),
    ("/predict", {"Content-Type": "application/json"}, b'{"image": "bm90IGFuIGltYWdl"}',
     Reason.NO_IMAGE),
    ("/predict", {"Content-Type": "text/plain"}, b"hello", Reason.NO_IMAGE),
    (INFER, {HEADER_LENGTH: "5000"}, b'{"inputs": []}', Reason.BAD_KSERVE),
    (INFER, {HEADER_LENGTH: "abc"}, b'{"inputs": []}', Reason.BAD_KSERVE),
    (INFER, {}, b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 8, 8], '
                b'"data": [1.0, 2.0]}]}', Reason.BAD_KSERVE),
    (INFER, {}, b'{"inputs": [{"name": "x", "datatype": "COMPLEX", "shape": [1], '
                b'"data": [1]}]}', Reason.BAD_KSERVE),
    (INFER, {}, b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], '
                b'"data": [1.0, 2.0]}]}', Reason.NO_IMAGE),
])
def test_bad_requests_fail_with_a_bounded_reason(path, headers, body, reason) -> None:
    with pytest.raises(ParseFailure) as caught:
        extract_image(path, headers, body)
    assert caught.value.reason is reason


def test_binary_sizes_that_lie_are_caught() -> None:
    body, length = encode_infer_body("inputs", [("images", np.zeros((1, 3, 16, 16), np.uint8))],
                                     binary=True)
    lying = body.replace(b'"binary_data_size": 768', b'"binary_data_size": 999')
    with pytest.raises(ParseFailure) as caught:
        extract_image(INFER, {HEADER_LENGTH: str(length)}, lying)
    assert caught.value.reason is Reason.BAD_KSERVE
    assert "runs past the body" in caught.value.detail


def _png_claiming(width: int, height: int) -> bytes:
    """A real PNG whose header is rewritten to claim `width` x `height`: what a
    decompression bomb looks like before its pixels are read."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


# Pillow warns on opening a header over 89 MP (it refuses over 179 MP); lookout refuses
# anything over its own, lower limit right after, so the warning is expected here
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(30_000, 30_000), (100_000, 1_000), (8_000, 7_000),
                                  (5_000, 4_000)])  # 20 MP: over what PNG may decode whole
def test_huge_dimension_images_are_refused_before_decoding(size) -> None:
    import tracemalloc

    bomb = _png_claiming(*size)
    assert len(bomb) < 200
    tracemalloc.start()
    try:
        # lookout's limit, or Pillow's own bomb check above 179 MP: both before decoding
        with pytest.raises(ParseFailure,
                           match=r"refused before decoding|decompression bomb") as failure:
            extract_image("/predict", {"Content-Type": "image/png"}, bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert failure.value.reason is Reason.UNDECODABLE_IMAGE
    assert f"{size[0]}x{size[1]}" in str(failure.value) or f"{size[0] * size[1]}" in str(
        failure.value)
    assert peak < 1024**2  # nothing near the claimed size was allocated


def test_an_image_at_the_pixel_limit_is_accepted() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(buffer, "JPEG")  # 12 MP, a normal camera frame
    image = extract_image("/predict", {"Content-Type": "image/jpeg"}, buffer.getvalue())
    assert (image.width, image.height) == (4000, 3000)
