"""A labelling round trip through Label Studio's REST API: an audit's images go out as
one project whose tasks carry the primary's boxes as predictions (annotators correct
them instead of drawing from nothing), and the annotations come back as boxes in the
thumbnail's pixels, keyed by sample id.

Plain `urllib`, synchronous: an audit sends a batch and later reads it back, a handful
of requests each, so neither Label Studio's SDK nor an event loop earns its weight.
Images travel inside the tasks as data URIs: Label Studio then fetches nothing (no
bucket, no URL it would have to reach) and the annotator's browser shows the bytes
as stored (Label Studio's content policy allows `data:` images).

Label Studio measures a rectangle in percent of the image's width and height, its
top-left corner, and a rotation in degrees about that corner; the boxes here are
corners in pixels. The config forbids rotation, and a rotated box that comes back
anyway is read as the axis-aligned box around it."""

from __future__ import annotations

import base64
import html
import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from lookout.sidecar.samples.audit_items import AuditItem, LabelledBox

MODEL_VERSION = "lookout-primary"  # predictions of this version show pre-filled
CONTROL = "label"  # the RectangleLabels control's name in the config
IMAGE = "image"  # the task data's image field, and the Image object's name
PAGE_SIZE = 100
IMPORT_BYTES = 1_000_000  # JSON per import request
TIMEOUT = 60.0


class LabelStudioError(RuntimeError):
    """Label Studio refused or could not be reached; the message says which and why."""


def label_config(class_names: Sequence[str]) -> str:
    """An image with rectangles labelled by the model's class names (escaped, once each)."""
    labels = "".join(f'<Label value="{html.escape(name, quote=True)}"/>'
                     for name in dict.fromkeys(class_names))
    return (f'<View><Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>'
            f'<RectangleLabels name="{CONTROL}" toName="{IMAGE}" canRotate="false">'
            f"{labels}</RectangleLabels></View>")


def to_percent(box: LabelledBox, width: int, height: int) -> dict[str, Any]:
    """A box as Label Studio's rectangle value: percent of the image, top-left corner."""
    return {"x": box.x1 / width * 100, "y": box.y1 / height * 100,
            "width": (box.x2 - box.x1) / width * 100,
            "height": (box.y2 - box.y1) / height * 100, "rotation": 0,
            "rectanglelabels": [box.label]}


def from_percent(value: dict[str, Any], width: int, height: int,
                 score: float | None = None) -> LabelledBox | None:
    """A rectangle value back in pixels (None without a label: no class to count)."""
    labels = value.get("rectanglelabels") or []
    if not labels:
        return None
    x, y = value["x"] / 100 * width, value["y"] / 100 * height
    w, h = value["width"] / 100 * width, value["height"] / 100 * height
    angle = math.radians(value.get("rotation") or 0)
    if angle:  # corners turned about the top-left one, clockwise on screen (y down)
        cos, sin = math.cos(angle), math.sin(angle)
        xs = [x + dx * cos - dy * sin for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
        ys = [y + dx * sin + dy * cos for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
        return LabelledBox(str(labels[0]), min(xs), min(ys), max(xs), max(ys), score)
    return LabelledBox(str(labels[0]), x, y, x + w, y + h, score)


def region(box: LabelledBox, width: int, height: int, region_id: str) -> dict[str, Any]:
    """One rectangle of a prediction or an annotation's result."""
    result: dict[str, Any] = {
        "id": region_id, "from_name": CONTROL, "to_name": IMAGE, "type": "rectanglelabels",
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": to_percent(box, width, height)}
    if box.score is not None:
        result["score"] = box.score
    return result


def _task(item: AuditItem) -> dict[str, Any]:
    image = f"data:{item.media_type};base64,{base64.b64encode(item.image).decode()}"
    result = [region(box, item.width, item.height, f"p{index}")
              for index, box in enumerate(item.predictions)]
    prediction: dict[str, Any] = {"model_version": MODEL_VERSION, "result": result}
    scores = [box.score for box in item.predictions if box.score is not None]
    if scores:  # the task's confidence: Label Studio can queue the least sure first
        prediction["score"] = min(scores)
    # the size sent is what read_annotations converts with: the thumbnail's own pixels
    return {"data": {IMAGE: image, "sample_id": item.sample_id, "width": item.width,
                     "height": item.height}, "predictions": [prediction]}


def send_batch(url: str, token: str, title: str, class_names: Sequence[str],
               items: Sequence[AuditItem]) -> int:
    """Create a project for `items`, one task each with its prediction; its id."""
    api = _Api(url, token)
    project = api.call("POST", "/api/projects", {
        "title": title, "label_config": label_config(class_names),
        "show_collab_predictions": True, "model_version": MODEL_VERSION})
    project_id = int(project["id"])
    sent = 0
    for chunk in _chunks([_task(item) for item in items]):
        try:
            api.call("POST", f"/api/projects/{project_id}/import", chunk)
        except LabelStudioError as error:
            raise LabelStudioError(f"{error} (project {project_id} holds {sent} of the "
                                   f"{len(items)} tasks)") from None
        sent += len(chunk)
    return project_id


def _chunks(tasks: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Tasks in requests of at most IMPORT_BYTES (one task can be more), which a proxy
    in front of Label Studio (nginx allows 1 MiB unless told otherwise) may insist on."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for task in tasks:
        length = len(json.dumps(task))
        if chunk and size + length > IMPORT_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(task)
        size += length
    if chunk:
        yield chunk


def read_annotations(url: str, token: str,
                     project_id: int) -> dict[str, tuple[LabelledBox, ...]]:
    """Each annotated task's latest non-cancelled annotation in pixels, by sample id.

    A task nobody annotated (or only skipped) is absent; one annotated as showing
    nothing maps to an empty tuple, which is an answer, not a gap."""
    api = _Api(url, token)
    found: dict[str, tuple[LabelledBox, ...]] = {}
    for task in api.tasks(project_id):
        kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not kept:
            continue
        latest = max(kept, key=_recency)
        data = task["data"]
        width, height = int(data["width"]), int(data["height"])
        boxes = (from_percent(r["value"], width, height) for r in latest.get("result") or []
                 if r.get("type") == "rectanglelabels" and r.get("from_name") == CONTROL)
        found[str(data["sample_id"])] = tuple(box for box in boxes if box is not None)
    return found


def _recency(annotation: dict[str, Any]) -> tuple[datetime, int]:
    when = annotation.get("updated_at") or annotation.get("created_at")
    stamp = datetime.fromisoformat(when) if when else datetime.min.replace(tzinfo=UTC)
    return stamp, int(annotation.get("id") or 0)


class _Api:
    """Requests with the token, and Label Studio's answers turned into LabelStudioError.

    A legacy API token goes as `Token <key>`; a personal access token (a JWT refresh
    token) is first exchanged for a short-lived access token sent as `Bearer`."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._authorization: str | None = None

    def authorization(self) -> str:
        if self._authorization is None:
            if self.token.count(".") == 2:
                access = self.call("POST", "/api/token/refresh/", {"refresh": self.token},
                                   authorize=False)["access"]
                self._authorization = f"Bearer {access}"
            else:
                self._authorization = f"Token {self.token}"
        return self._authorization

    def call(self, method: str, path: str, body: Any = None, *, authorize: bool = True) -> Any:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if authorize:
            headers["Authorization"] = self.authorization()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise self._refused(error, method, path) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {reason}") from None
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise LabelStudioError(f"{method} {self.url}{path} answered something not JSON "
                                   f"(is {self.url} Label Studio?)") from None

    def _refused(self, error: urllib.error.HTTPError, method: str, path: str) -> LabelStudioError:
        body = error.read().decode(errors="replace")
        try:
            answer = json.loads(body)
            detail = str(answer.get("detail") or answer)
            if answer.get("validation_errors"):
                detail += f": {json.dumps(answer['validation_errors'])}"
        except (ValueError, AttributeError):
            detail = body[:300] or error.reason
        if error.code in (401, 403):
            return LabelStudioError(
                f"Label Studio at {self.url} refused the token (authentication failed, "
                f"HTTP {error.code}): {detail}")
        return LabelStudioError(f"Label Studio answered {error.code} to {method} {path}: {detail}")

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations, page by page."""
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.call("GET", f"/api/tasks?project={project_id}&fields=all"
                               f"&page={page}&page_size={PAGE_SIZE}")
            tasks.extend(answer["tasks"])
            if not answer["tasks"] or len(tasks) >= int(answer["total"]):
                return tasks
            page += 1
