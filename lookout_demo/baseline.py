"""The demo's drift baseline: the features of clean demo scenes, shipped beside the
models so the demo's drift detector is ready the moment the sidecar starts, instead of
learning a baseline from the camera's warm-up and calibrating long after the lights
have dimmed. tools/make_demo_baseline.py writes it with `lookout shadow baseline`."""

from __future__ import annotations

from pathlib import Path

from lookout.lookout_demo.scenes import generate_scene

DRIFT_BASELINE = Path(__file__).resolve().parent / "drift_baseline.json"
BASELINE_SEED = 700_000  # away from the camera's, the training and evaluation seeds
BASELINE_IMAGES = 500
BASELINE_SOURCE = "clean demo scenes (tools/make_demo_baseline.py)"


def write_clean_frames(folder: Path, count: int = BASELINE_IMAGES) -> None:
    """`count` clean scenes as the camera sends them (JPEG), named so that a sorted
    listing is their seed order."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"scene-{index:05d}.jpg").write_bytes(
            generate_scene(BASELINE_SEED + index).jpeg())
