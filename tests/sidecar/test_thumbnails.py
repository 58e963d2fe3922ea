"""Thumbnails: size, draft decoding, tensors, privacy (pixelation, no EXIF), drawing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.pipeline.inputs import InputImage, open_encoded
from lookout.sidecar.samples.thumbnails import (
    BoxLayer,
    ThumbnailSettings,
    draw_boxes,
    make_thumbnail,
    reduced_image,
    target_size,
)

GPS_IFD = 0x8825


def _jpeg(rgb: np.ndarray, exif: Image.Exif | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=92, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def test_target_size_keeps_the_aspect_and_never_enlarges() -> None:
    assert target_size(3840, 2160, 320) == (320, 180)
    assert target_size(1080, 1920, 320) == (180, 320)
    assert target_size(200, 100, 320) == (200, 100)


def test_big_jpegs_are_decoded_in_draft_mode_to_the_thumbnail_size() -> None:
    data = _jpeg(_noise(2160, 3840))
    image = open_encoded(data, "raw")
    picture = reduced_image(image, 320)
    assert picture.size == (320, 180)
    # the DCT-scaled decode (1/8) is what got resized, not a full 4K decode: its size
    # is what Pillow's draft chose for the request
    with Image.open(io.BytesIO(data)) as opened:
        opened.draft("RGB", (320, 180))
        assert opened.size == (480, 270)


def test_tensor_inputs_become_thumbnails_too() -> None:
    pixels = generate_scene(3).image
    image = InputImage("kserve_tensor", pixels.shape[1], pixels.shape[0], pixels=pixels)
    thumbnail = make_thumbnail(image, np.zeros((0, 4)), [], ThumbnailSettings(longest_side=128))
    assert (thumbnail.width, thumbnail.height) == target_size(pixels.shape[1], pixels.shape[0],
                                                             128)
    with Image.open(io.BytesIO(thumbnail.data)) as opened:
        assert opened.format == "JPEG" and opened.size == (thumbnail.width, thumbnail.height)


def test_webp_is_available() -> None:
    image = open_encoded(_jpeg(generate_scene(1).image), "raw")
    thumbnail = make_thumbnail(image, np.zeros((0, 4)), [], ThumbnailSettings(format="webp"))
    assert thumbnail.media_type == "image/webp" and thumbnail.extension == "webp"
    with Image.open(io.BytesIO(thumbnail.data)) as opened:
        assert opened.format == "WEBP"


def test_exif_and_gps_never_reach_the_thumbnail() -> None:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0131] = "secret-firmware"  # Software
    exif.get_ifd(GPS_IFD)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    data = _jpeg(generate_scene(2).image, exif)
    with Image.open(io.BytesIO(data)) as original:
        assert original.getexif()[0x010F] == "CameraMaker"  # the input really carries it
    thumbnail = make_thumbnail(open_encoded(data, "raw"), np.zeros((0, 4)), [],
                               ThumbnailSettings())
    with Image.open(io.BytesIO(thumbnail.data)) as opened:
        assert not opened.getexif() and "exif" not in opened.info
    assert b"CameraMaker" not in thumbnail.data and b"secret-firmware" not in thumbnail.data


def _block_variance(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    left, top, right, bottom = box
    region = rgb[top:bottom, left:right].astype(np.float32)
    return float(np.abs(np.diff(region, axis=1)).mean())


def test_boxes_of_private_classes_are_pixelated_and_the_rest_is_not() -> None:
    rgb = _noise(480, 640, seed=5)
    image = open_encoded(_jpeg(rgb), "raw")
    boxes = np.array([[64, 64, 320, 320], [400, 100, 600, 400]], np.float32)
    settings = ThumbnailSettings(longest_side=640, quality=95,
                                 pixelate_classes=frozenset({"person"}))
    plain = make_thumbnail(image, boxes, ["car", "car"], ThumbnailSettings(longest_side=640,
                                                                           quality=95))
    private = make_thumbnail(image, boxes, ["person", "car"], settings)
    plain_rgb = np.asarray(Image.open(io.BytesIO(plain.data)).convert("RGB"))
    private_rgb = np.asarray(Image.open(io.BytesIO(private.data)).convert("RGB"))
    person, car = (64, 64, 320, 320), (400, 100, 600, 400)
    # inside the person box neighbouring pixels are now (nearly) equal: blocks of colour
    assert _block_variance(private_rgb, person) < 0.2 * _block_variance(plain_rgb, person)
    # the car box keeps its detail
    assert _block_variance(private_rgb, car) > 0.8 * _block_variance(plain_rgb, car)


def test_whole_images_can_be_pixelated() -> None:
    rgb = _noise(240, 320, seed=6)
    image = open_encoded(_jpeg(rgb), "raw")
    thumbnail = make_thumbnail(image, np.zeros((0, 4)), [],
                               ThumbnailSettings(pixelate_all=True, quality=95))
    pixels = np.asarray(Image.open(io.BytesIO(thumbnail.data)).convert("RGB"))
    assert _block_variance(pixels, (0, 0, 320, 240)) < 0.2 * _block_variance(
        rgb, (0, 0, 320, 240))


def test_broken_images_raise_for_the_caller_to_count() -> None:
    data = _jpeg(generate_scene(4).image)
    image = InputImage("raw", 384, 288, encoded=data[: len(data) // 3])
    with pytest.raises(OSError):
        make_thumbnail(image, np.zeros((0, 4)), [], ThumbnailSettings())


def test_detections_are_drawn_in_their_layer_colour() -> None:
    blank = np.full((100, 100, 3), 255, np.uint8)
    data = draw_boxes(_jpeg(blank), [BoxLayer(np.array([[10, 10, 60, 60]], np.float32),
                                              ["car 0.90"], (255, 0, 0))])
    drawn = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    edge = drawn[35, 10]  # on the left edge of the box
    assert edge[0] > 180 and edge[1] < 90 and edge[2] < 90
    assert drawn[35, 35].min() > 200  # inside stays white
