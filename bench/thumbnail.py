"""Thumbnail cost: lookout's draft-mode path against a full decode + resize, same run,
same frames, one thread.

- lookout: `sidecar.thumbnails.make_thumbnail` as the sample writer runs it: JPEG
  draft mode (libjpeg scales by 1/2, 1/4 or 1/8 inside the inverse DCT), resize to the
  longest side, encode a metadata-free JPEG;
- peer `full`: decode every pixel, resize with the same filter, encode the same way;
- peer `pil-thumbnail`: Pillow's own `Image.thumbnail`, which drafts to twice the size
  (reducing_gap=2) for quality, shown for reference.

Frames are the demo's scenes scaled to 1080p and 4K with sensor noise, in two
profiles: `camera` (noise sigma 3, JPEG quality 85: about 125 KiB at 1080p, like an IP
camera's snapshot) and `noisy` (sigma 6, quality 90: about 400 KiB, a dim scene at high
gain). JPEG entropy decoding cannot be scaled, so the bigger file costs more in every
method. Prints thumbnails/s per core and ratios.

    python bench/thumbnail.py --repeats 20 --json bench/results/thumbnail.json
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookout.lookout_demo.scenes import generate_scene
from lookout.sidecar.pipeline.inputs import InputImage
from lookout.sidecar.samples.thumbnails import (
    RESAMPLE,
    ThumbnailSettings,
    encode,
    make_thumbnail,
    target_size,
)

SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
PROFILES = {"camera": (3.0, 85), "noisy": (6.0, 90)}  # noise sigma, JPEG quality


def camera_frames(width: int, height: int, count: int, sigma: float, quality: int
                  ) -> list[bytes]:
    rng = np.random.default_rng(0)
    frames = []
    for seed in range(count):
        scene = Image.fromarray(generate_scene(seed).image).resize((width, height),
                                                                  Image.Resampling.BICUBIC)
        noisy = np.asarray(scene, np.int16) + rng.normal(0, sigma, (height, width, 3)).astype(
            np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                      quality=quality)
        frames.append(buffer.getvalue())
    return frames


def lookout(data: bytes, width: int, height: int, settings: ThumbnailSettings) -> bytes:
    image = InputImage("raw", width, height, encoded=data)
    return make_thumbnail(image, np.zeros((0, 4)), [], settings).data


def full(data: bytes, width: int, height: int, settings: ThumbnailSettings) -> bytes:
    with Image.open(io.BytesIO(data)) as opened:
        picture = opened.convert("RGB")
    picture = picture.resize(target_size(width, height, settings.longest_side), RESAMPLE)
    return encode(picture, settings.format, settings.quality)


def pil_thumbnail(data: bytes, width: int, height: int, settings: ThumbnailSettings) -> bytes:
    with Image.open(io.BytesIO(data)) as opened:
        opened.thumbnail((settings.longest_side, settings.longest_side))
        picture = opened.convert("RGB")
    return encode(picture, settings.format, settings.quality)


def rate(method: Callable, frames: list[bytes], size: tuple[int, int], repeats: int,
         settings: ThumbnailSettings) -> float:
    """Thumbnails per second, best of three rounds (the least disturbed)."""
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            for data in frames:
                method(data, *size, settings)
        best = max(best, repeats * len(frames) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="distinct frames per size")
    parser.add_argument("--repeats", type=int, default=40, help="passes over the frames")
    parser.add_argument("--longest-side", type=int, default=320)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    settings = ThumbnailSettings(longest_side=args.longest_side)
    results = {}
    for (name, size), (profile, (sigma, quality)) in itertools.product(SIZES.items(),
                                                                       PROFILES.items()):
        frames = camera_frames(*size, args.frames, sigma, quality)
        repeats = max(1, args.repeats // (4 if name == "4K" else 1))
        name = f"{name} {profile}"
        rates = {method.__name__: rate(method, frames, size, repeats, settings)
                 for method in (lookout, full, pil_thumbnail)}
        results[name] = {
            "thumbnails_per_s": {k: round(v, 1) for k, v in rates.items()},
            "speedup_vs_full": round(rates["lookout"] / rates["full"], 2),
            "speedup_vs_pil_thumbnail": round(rates["lookout"] / rates["pil_thumbnail"], 2),
            "mean_jpeg_kib": round(sum(map(len, frames)) / len(frames) / 1024, 1),
        }
        print(f"{name:>12}: lookout {rates['lookout']:7.1f}/s  full decode {rates['full']:6.1f}/s"
              f"  Image.thumbnail {rates['pil_thumbnail']:6.1f}/s  -> "
              f"{results[name]['speedup_vs_full']:.2f}x vs full, "
              f"{results[name]['speedup_vs_pil_thumbnail']:.2f}x vs Image.thumbnail "
              f"(frames {results[name]['mean_jpeg_kib']} KiB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
