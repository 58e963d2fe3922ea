"""Maintainer script: real Ultralytics output, committed as test fixtures.

Runs in its own environment (Ultralytics needs torch, which lookout does not):

    bash tools/ultralytics_fixtures.sh          # makes tools/.ultralytics-venv, runs this

Nothing is downloaded: the models are built from Ultralytics' own YAML configs with
random weights (`YOLO("yolo11n.yaml")`), and the results are Ultralytics' `Results`
objects for known boxes on a known image, formatted by Ultralytics itself. What is
written to tests/data/ultralytics/:

- `frame.jpg`: the 640x480 input (not square, so pixels and normalised units differ);
- `results.json`: the boxes put in, and `to_json()`, `summary()`,
  `summary(normalize=True)` and the `xyxy`/`xyxyn`/`xywh`/`xywhn` arrays of `Boxes`
  that custom FastAPI apps serialise, plus one real `predict()` pass of the untrained
  YOLO11n at a very low threshold;
- `onnx_metadata.json`: for a YOLO11n and a YOLOv8n ONNX export (at 640 and 320), the
  custom metadata and the graph's input and output shapes (the weights are not kept).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from ultralytics import YOLO, __version__
from ultralytics.engine.results import Results
from ultralytics.utils import ROOT, YAML

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "ultralytics"
WIDTH, HEIGHT = 640, 480
# x1, y1, x2, y2, confidence, class id (COCO: 0 person, 2 car, 16 dog)
BOXES = [[40.0, 60.0, 200.0, 420.0, 0.91, 0.0],
         [300.0, 250.0, 600.0, 400.0, 0.77, 2.0],
         [420.0, 40.0, 520.0, 160.0, 0.42, 16.0]]


def coco_model(config: str) -> YOLO:
    """A model built from its YAML config (random weights), with the COCO class names
    Ultralytics ships in its dataset config, as a COCO-trained export would carry."""
    model = YOLO(config)
    model.model.names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    return model


def frame() -> np.ndarray:
    image = Image.new("RGB", (WIDTH, HEIGHT), (90, 110, 130))
    draw = ImageDraw.Draw(image)
    for x1, y1, x2, y2, _, cls in BOXES:
        draw.rectangle([x1, y1, x2, y2], fill=(200, 60 + 60 * int(cls) % 190, 40))
    return np.asarray(image)[:, :, ::-1].copy()  # Ultralytics keeps images as BGR


def results_fixture(model: YOLO, image: np.ndarray) -> dict:
    result = Results(image, "frame.jpg", model.names, boxes=torch.tensor(BOXES))
    boxes = result.boxes
    predicted = model.predict(image, conf=0.0001, max_det=20, verbose=False)[0]
    return {
        "ultralytics": __version__, "image": {"width": WIDTH, "height": HEIGHT},
        "boxes_xyxy_conf_cls": BOXES,
        "to_json": json.loads(result.to_json()),
        "summary": result.summary(),
        "summary_normalized": result.summary(normalize=True),
        "arrays": {name: getattr(boxes, name).tolist()
                   for name in ("xyxy", "xyxyn", "xywh", "xywhn", "conf", "cls")},
        "predict_summary": predicted.summary(),
    }


def onnx_fixture(config: str, imgsz: int, directory: Path) -> dict:
    import onnx

    model = coco_model(config)
    with contextlib.chdir(directory):  # the export lands in the working directory
        exported = Path(model.export(format="onnx", imgsz=imgsz, simplify=False,
                                     dynamic=False, verbose=False)).resolve()
    graph = onnx.load(str(exported))

    def shapes(values) -> dict:
        return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
                for v in values}

    return {"config": config, "imgsz": imgsz,
            "metadata": {p.key: p.value for p in graph.metadata_props if p.key != "date"},
            "inputs": shapes(graph.graph.input), "outputs": shapes(graph.graph.output)}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    image = frame()
    Image.fromarray(image[:, :, ::-1]).save(OUT / "frame.jpg", quality=90)
    torch.manual_seed(0)
    results = results_fixture(coco_model("yolo11n.yaml"), image)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as directory:
        exports = [onnx_fixture(config, imgsz, Path(directory))
                   for config, imgsz in (("yolo11n.yaml", 640), ("yolov8n.yaml", 320))]
    (OUT / "onnx_metadata.json").write_text(json.dumps(exports, indent=1) + "\n")
    print(f"wrote {OUT} with Ultralytics {__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
