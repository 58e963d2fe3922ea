"""Find the primary model's detections in a response body.

JSON shapes understood: Ultralytics-style lists (`box` {x1..y2} / `xyxy` / `xywh`,
`name`/`class`, `confidence`), `{"detections": [...]}`, `{"predictions": [...]}`
(Roboflow: centre `x`, `y`, `width`, `height`), lists nested a few levels deep
(`{"images": [{"results": [...]}]}`), and a configured field mapping for anything else.
KServe V2 responses (JSON or binary) holding raw YOLO heads, end-to-end detections or
TensorRT EfficientNMS outputs (`num_dets`, `det_boxes`, `det_scores`, `det_classes`) are
decoded with `shadow_eval.decode`. Runs in the analysis thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.decode import (
    DecodeError,
    DecodeSettings,
    HeadLayout,
    decode,
    decode_efficient_nms,
)
from lookout.shadow_eval.letterbox import Letterbox
from lookout.sidecar.pipeline import grpc_v2, json_body, kserve
from lookout.sidecar.pipeline.field_path import walk
from lookout.sidecar.pipeline.inputs import InputImage
from lookout.sidecar.pipeline.parse_errors import ParseFailure, Reason

LIST_KEYS = ("detections", "predictions", "results", "objects", "boxes", "images", "data")
SCORE_KEYS = ("confidence", "score", "conf", "probability")
NAME_KEYS = ("name", "class_name", "label")
ID_KEYS = ("class_id", "class", "cls", "category_id")
# xywh: centre-based, ltwh: top-left (COCO); an `n` suffix: in units of the image's
# width and height (Ultralytics' xyxyn / xywhn)
NORMALISED_KEYS = ("xyxyn", "xywhn")
UNIT_SLACK = 1e-3  # rounding of normalised coordinates (Ultralytics rounds to 5 places)


@dataclass(frozen=True, slots=True)
class ResponseMapping:
    """Where detections are in a JSON shape lookout does not know by itself."""

    detections_path: str = ""  # dotted path to the list, e.g. "result.objects"
    box_field: str = ""
    box_format: str = "xyxy"
    score_field: str = ""
    class_field: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.detections_path or self.box_field)


@dataclass(frozen=True, slots=True)
class OutputSettings:
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    num_classes: int | None = None
    input_size: tuple[int, int] = (640, 640)  # (height, width) of the model input
    head_layout: HeadLayout | None = None
    mapping: ResponseMapping = field(default_factory=ResponseMapping)


def extract_detections(headers: Mapping[str, str], body: bytes, image: InputImage | None,
                       settings: OutputSettings, served: dict[str, str] | None = None,
                       path: str = "") -> Detections:
    """The detections in a response. A V2 response names the model and version that
    answered it: those go into `served` (when given) as `model_name`/`model_version`.
    `path` is the gRPC method of a gRPC message (whose headers are its metadata)."""
    if grpc_v2.is_grpc(headers):
        return _from_grpc(path, body, image, settings, served)
    try:
        length = kserve.header_length(headers) if kserve.HEADER_LENGTH in headers else None
    except kserve.KServeFormatError as error:
        raise ParseFailure(Reason.BAD_KSERVE, str(error)) from None
    if length is not None:
        return _from_kserve(body, length, image, settings, served=served)
    try:
        document = json_body.loads(body)
    except json_body.JsonBodyError as error:
        raise ParseFailure(Reason.BAD_JSON, str(error)) from None
    if isinstance(document, dict) and isinstance(document.get("outputs"), list):
        return _from_kserve(body, None, image, settings, document, served)
    if settings.mapping.configured:
        detections, units = _from_mapping(document, settings.mapping)
    else:
        items = _find_detection_list(document, depth=0)
        if items is None:
            raise ParseFailure(Reason.UNRECOGNIZED_RESPONSE,
                               "no list of detections in the JSON")
        detections, units = _from_items(items, ResponseMapping())
    return _in_pixels(detections, units, image)


def _in_pixels(detections: Detections, units: str, image: InputImage | None) -> Detections:
    """Normalised boxes scaled by the input image's size. Without the image they stay
    normalised (areas are then already shares of the frame), which is what the box-area
    histogram wants; nothing that needs pixels (the shadow) runs without an image."""
    if units != "normalised" or image is None:
        return detections
    scale = np.array([image.width, image.height, image.width, image.height], np.float32)
    return Detections(detections.boxes * scale, detections.scores, detections.classes,
                      detections.names)


def _units(boxes: list[list[float]], explicit: set[bool]) -> str:
    """"normalised" or "pixels", from what the keys say or, when they say nothing (a
    `summary(normalize=True)` uses the same keys as pixels), from the values: every
    coordinate within [0, 1] is normalised, as a box of under one pixel in pixel units
    is no box. A response mixing both kinds of key, or normalised keys holding values
    past 1, cannot be read either way: a counted failure, never a silently wrong size."""
    if not boxes:
        return "pixels"
    within = bool(np.all((np.asarray(boxes) >= -UNIT_SLACK)
                         & (np.asarray(boxes) <= 1 + UNIT_SLACK)))
    if explicit == {True, False}:
        raise ParseFailure(Reason.AMBIGUOUS_BOXES,
                           "some detections give normalised boxes (xyxyn/xywhn) and others "
                           "pixel boxes")
    if True in explicit:
        if not within:
            raise ParseFailure(Reason.AMBIGUOUS_BOXES,
                               "boxes under xyxyn/xywhn keys have coordinates outside [0, 1]")
        return "normalised"
    return "normalised" if within else "pixels"


def _looks_like_detection(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    keys = item.keys()
    has_box = any(k in keys for k in ("box", "xyxy", "xywh", "bbox", *NORMALISED_KEYS)) or (
        {"x", "y", "width", "height"} <= keys) or ({"x1", "y1", "x2", "y2"} <= keys) or (
        {"xmin", "ymin", "xmax", "ymax"} <= keys)
    return has_box and any(k in keys for k in SCORE_KEYS)


def _find_detection_list(document: Any, depth: int) -> list[Any] | None:
    """The first list of detection-like dicts, searching a few levels down. An empty
    list under a known key means "no detections", which is an answer."""
    if depth > 3:
        return None
    if isinstance(document, list):
        if not document or _looks_like_detection(document[0]):
            return document
        for element in document[:1]:
            found = _find_detection_list(element, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(document, dict):
        for key in LIST_KEYS:
            if key in document:
                found = _find_detection_list(document[key], depth + 1)
                if found is not None:
                    return found
    return None


def _from_mapping(document: Any, mapping: ResponseMapping) -> tuple[Detections, str]:
    items = walk(document, mapping.detections_path) if mapping.detections_path else document
    if not isinstance(items, list):
        raise ParseFailure(Reason.UNRECOGNIZED_RESPONSE,
                           f"detections_path {mapping.detections_path!r} is not a list")
    return _from_items(items, mapping)


def _box(item: dict[str, Any], mapping: ResponseMapping) -> tuple[list[float], bool]:
    """The box as corners, and whether its key says it is normalised."""
    if mapping.box_field:
        return (_convert(item[mapping.box_field], mapping.box_format),
                mapping.box_format in NORMALISED_KEYS)
    for key in NORMALISED_KEYS:
        if key in item:
            return _convert(item[key], key), True
    return _pixel_box(item), False


def _pixel_box(item: dict[str, Any]) -> list[float]:
    if "box" in item:
        box = item["box"]
        if isinstance(box, dict):
            return [float(box[k]) for k in ("x1", "y1", "x2", "y2")]
        return _convert(box, "xyxy")
    for key, form in (("xyxy", "xyxy"), ("xywh", "xywh"), ("bbox", "xyxy")):
        if key in item:
            return _convert(item[key], form)
    if "width" in item and "x" in item:
        return _convert([item["x"], item["y"], item["width"], item["height"]], "xywh")
    for names in (("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax")):
        if names[0] in item:
            return [float(item[k]) for k in names]
    raise KeyError("box")


def _convert(values: Sequence[Any], form: str) -> list[float]:
    form = form.removesuffix("n")
    a, b, c, d = (float(v) for v in values)
    if form == "xywh":
        return [a - c / 2, b - d / 2, a + c / 2, b + d / 2]
    if form == "ltwh":
        return [a, b, a + c, b + d]
    return [a, b, c, d]


def _class(item: dict[str, Any], mapping: ResponseMapping) -> tuple[int, str | None]:
    if mapping.class_field:
        value = item[mapping.class_field]
        return (int(value), None) if isinstance(value, int) else (-1, str(value))
    name = next((str(item[k]) for k in NAME_KEYS if isinstance(item.get(k), str)), None)
    if name is None and isinstance(item.get("class"), str):
        name = item["class"]
    class_id = next((int(item[k]) for k in ID_KEYS
                     if isinstance(item.get(k), int | float) and not isinstance(item[k], bool)),
                    -1)
    return class_id, name


def _from_items(items: list[Any], mapping: ResponseMapping) -> tuple[Detections, str]:
    """The detections, and whether their boxes are in pixels or normalised units."""
    boxes, scores, ids, names = [], [], [], []
    explicit: set[bool] = set()
    score_keys = (mapping.score_field,) if mapping.score_field else SCORE_KEYS
    for index, item in enumerate(items):
        try:
            box, normalised = _box(item, mapping)
            boxes.append(box)
            explicit.add(normalised)
            scores.append(float(next(item[k] for k in score_keys if k in item)))
            class_id, name = _class(item, mapping)
            if not -1 <= class_id < 2**31:
                raise ValueError(f"class id {class_id} is out of range")
        except (KeyError, TypeError, ValueError, OverflowError, StopIteration) as error:
            raise ParseFailure(Reason.BAD_DETECTION,
                               f"detection {index} lacks or mangles a field: {error!r}") from None
        ids.append(class_id)
        names.append(name)
    named = tuple(n if n is not None else "" for n in names) if any(names) else None
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
        detections = Detections.from_arrays(boxes, scores, ids, named)
    if not np.all(np.isfinite(detections.boxes)) or not np.all(np.isfinite(detections.scores)):
        raise ParseFailure(Reason.BAD_DETECTION, "non-finite box or score")
    return detections, _units(boxes, explicit)


def _letterbox(image: InputImage | None, settings: OutputSettings) -> Letterbox | None:
    if image is None or image.is_model_input:
        return None
    height, width = settings.input_size
    return Letterbox(image.width, image.height, width, height)


def _from_kserve(body: bytes, length: int | None, image: InputImage | None,
                 settings: OutputSettings, header: dict | None = None,
                 served: dict[str, str] | None = None) -> Detections:
    """`header` is the body's JSON when the caller has parsed it already: a 14 MB head
    is parsed once, not twice."""
    try:
        if header is None:
            header = kserve.parse_header(body, length)
        if served is not None:
            served.update({key: str(header[key]) for key in ("model_name", "model_version")
                           if isinstance(header.get(key), str | int)})
        tensors = kserve.tensors_from_header(header, body, length, "outputs")
    except kserve.KServeFormatError as error:
        raise ParseFailure(Reason.BAD_KSERVE, str(error)) from None
    return _from_tensors(tensors, image, settings)


def _from_grpc(path: str, body: bytes, image: InputImage | None, settings: OutputSettings,
               served: dict[str, str] | None) -> Detections:
    if path not in grpc_v2.INFER_METHODS:
        raise ParseFailure(Reason.UNRECOGNIZED_RESPONSE, f"{path} is not an inference method")
    try:
        tensors = grpc_v2.response_tensors(path, body, served)
    except kserve.KServeFormatError as error:
        raise ParseFailure(Reason.BAD_GRPC, str(error)) from None
    return _from_tensors(tensors, image, settings)


def _from_tensors(tensors: Sequence[kserve.Tensor], image: InputImage | None,
                  settings: OutputSettings) -> Detections:
    """A V2 response's detections, from either port's tensors."""
    try:
        numeric = {t.name: kserve.as_array(t) for t in tensors if not isinstance(t.data, list)}
    except kserve.KServeFormatError as error:  # counts match by construction: a bug
        raise ParseFailure(Reason.BAD_KSERVE, str(error)) from None
    letterbox = _letterbox(image, settings)
    try:
        efficient = decode_efficient_nms(numeric, settings.decode, letterbox)
        if efficient is not None:
            return efficient
        if not numeric:
            raise ParseFailure(Reason.UNRECOGNIZED_RESPONSE, "no numeric output tensor")
        name = next((n for n in ("output0", "output", "detections") if n in numeric),
                    max(numeric, key=lambda n: numeric[n].size))
        return decode(numeric[name], settings.decode, letterbox, settings.num_classes,
                      settings.head_layout)
    except DecodeError as error:
        raise ParseFailure(Reason.BAD_TENSOR, str(error)) from None
