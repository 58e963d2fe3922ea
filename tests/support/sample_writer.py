"""A process that adds samples to a store as fast as it can, saying so after each, so
a test can kill it with SIGKILL at an arbitrary point of a write or a retention
delete: `python -m tests.support.sample_writer DIR SEED`."""

from __future__ import annotations

import io
import random
import sys
import time

import numpy as np
from PIL import Image

from lookout.sidecar.samples.store import Sample, SampleFile, SampleStore, new_id

STRATEGIES = ("random", "error", "slow")


def jpeg(rng: np.random.Generator) -> bytes:
    side = int(rng.integers(16, 96))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def sample(rng: np.random.Generator, chooser: random.Random, now: float) -> Sample:
    return Sample(
        id=new_id(now), time=now, trace_id=f"{chooser.getrandbits(128):032x}", model="m",
        version=chooser.choice(("v1", "v2")), strategy=chooser.choice(STRATEGIES),
        route="/predict", status=chooser.choice((200, 200, 503)), latency=chooser.random(),
        width=640, height=480, thumbnail_width=96, thumbnail_height=72,
        media_type="image/jpeg", file="", file_bytes=0,
        primary_detections=[{"box": [1.0, 2.0, 30.0, 40.0], "score": 0.9, "class_id": 0,
                             "class": chooser.choice(("car", "person"))}],
        classes=(chooser.choice(("car", "person")),))


def main(directory: str, seed: int) -> None:
    rng, chooser = np.random.default_rng(seed), random.Random(seed)
    # small enough that retention deletes the oldest while this runs
    store = SampleStore(directory, max_bytes=400_000, retention_seconds=3600)
    count = 0
    while True:
        now = time.time()
        store.enforce_retention(now, extra_bytes=8000)
        original = SampleFile(jpeg(rng), "jpg") if chooser.random() < 0.3 else None
        store.add(sample(rng, chooser, now), SampleFile(jpeg(rng), "jpg"), original)
        count += 1
        print(f"added {count}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
