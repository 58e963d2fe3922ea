"""Samples as a zip for relabelling: COCO detection JSON or an Ultralytics YOLO dataset.

The images are the stored thumbnails and the boxes are the chosen model's detections
scaled to them, so a labelling tool opens the zip with pre-annotations ready to fix.
COCO: `images/<id>.<ext>` and `annotations.json` (categories numbered from 1, bbox as
[x, y, width, height] in pixels, each image keeping its sample id, trace id and
strategy). YOLO: `images/`, `labels/<id>.txt` (class cx cy w h, normalised) and
`data.yaml`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import yaml

from lookout.sidecar.samples.query import FORMATS, SOURCES
from lookout.sidecar.samples.store import Sample, SampleStore
from lookout.sidecar.samples.thumbnails import BoxLayer

BOX_COLOURS = {"primary": (255, 64, 32), "reference": (32, 200, 255)}


class ExportError(ValueError):
    pass


def _extension(sample: Sample) -> str:
    return sample.file.rsplit(".", 1)[-1]


def thumbnail_boxes(sample: Sample, source: str) -> list[tuple[str, list[float], float]]:
    """(class, [x1, y1, x2, y2] in thumbnail pixels clipped to it, score)."""
    detections = (sample.reference_detections if source == "reference"
                  else sample.primary_detections) or []
    scale = sample.thumbnail_width / sample.width
    out = []
    for detection in detections:
        x1, y1, x2, y2 = (v * scale for v in detection["box"])
        x1, x2 = (min(max(v, 0.0), sample.thumbnail_width) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), sample.thumbnail_height) for v in (y1, y2))
        if x2 > x1 and y2 > y1:
            out.append((str(detection["class"]), [x1, y1, x2, y2], detection["score"]))
    return out


def write_export(store: SampleStore, samples: Iterable[Sample], destination: IO[bytes],
                 export_format: str, source: str = "primary",
                 progress: Callable[[int], None] | None = None,
                 info: dict[str, Any] | None = None) -> int:
    """Write the zip to `destination`; returns how many samples it holds. `info` is
    added to a COCO document's `info` (an audit's batch)."""
    if export_format not in FORMATS:
        raise ExportError(f"format: expected one of {', '.join(FORMATS)}")
    if source not in SOURCES:
        raise ExportError(f"source: expected one of {', '.join(SOURCES)}")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    labels: dict[str, list[tuple[str, list[float]]]] = {}
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as archive:
        for number, sample in enumerate(samples, start=1):
            try:
                data = store.read(sample)
            except FileNotFoundError:
                continue  # removed by retention since it was listed
            name = f"{sample.id}.{_extension(sample)}"
            archive.writestr(f"images/{name}", data)
            boxes = thumbnail_boxes(sample, source)
            images.append({"id": len(images) + 1, "file_name": f"images/{name}",
                           "width": sample.thumbnail_width, "height": sample.thumbnail_height,
                           "sample_id": sample.id, "trace_id": sample.trace_id,
                           "strategy": sample.strategy, "model": sample.model,
                           "version": sample.version, "date_captured": _utc(sample.time)})
            labels[sample.id] = [(label, box) for label, box, _ in boxes]
            for label, (x1, y1, x2, y2), score in boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": len(images),
                                    "category": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                                    "score": score})
            if progress is not None:
                progress(number)
        names = sorted({a["category"] for a in annotations})
        category = {name: index for index, name in enumerate(names, start=1)}
        if export_format == "coco":
            for annotation in annotations:
                annotation["category_id"] = category[annotation.pop("category")]
            document = {
                "info": {"description": f"lookout samples ({source} detections)",
                         "date_created": _utc(datetime.now(UTC).timestamp()), **(info or {})},
                "images": images, "annotations": annotations,
                "categories": [{"id": i, "name": n, "supercategory": "object"}
                               for n, i in category.items()],
            }
            archive.writestr("annotations.json", json.dumps(document, indent=1))
        else:
            sizes = {image["sample_id"]: (image["width"], image["height"]) for image in images}
            for sample_id, boxes in labels.items():
                width, height = sizes[sample_id]
                lines = [f"{category[label] - 1} {(x1 + x2) / 2 / width:.6f} "
                         f"{(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                         f"{(y2 - y1) / height:.6f}" for label, (x1, y1, x2, y2) in boxes]
                archive.writestr(f"labels/{sample_id}.txt", "\n".join(lines) + "\n"
                                 if lines else "")
            archive.writestr("data.yaml", yaml.safe_dump(
                {"path": ".", "train": "images", "val": "images",
                 "names": {i - 1: n for n, i in category.items()}}, sort_keys=False))
    return len(images)


def box_layers(sample: Sample, sources: Sequence[str]) -> list[BoxLayer]:
    """The detections of each source as layers to draw on the sample's thumbnail."""
    layers = []
    for source in sources:
        boxes = thumbnail_boxes(sample, source)
        layers.append(BoxLayer(np.array([box for _, box, _ in boxes], np.float32),
                               [f"{label} {score:.2f}" for label, _, score in boxes],
                               BOX_COLOURS[source]))
    return layers


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
