"""The labelling round trip against a real Label Studio: demo scenes go out with the
primary's boxes as predictions, annotators' boxes (the scenes' ground truth, submitted
through the API as a browser would) come back in the thumbnail's pixels.

Tolerance: boxes cross as percent of the image in JSON. Python writes a float's
shortest exact form and Label Studio keeps the JSON it got, so only the arithmetic
of the conversion there and back differs: a few ulps of coordinates below 10^3 px,
about 10^-13 px. 1e-6 px allows for that, and for nothing an eye could see."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from lookout.lookout_demo.scenes import CLASSES, generate_scene
from lookout.sidecar.samples import label_studio as label_studio_client
from lookout.sidecar.samples.audit_items import AuditItem, LabelledBox
from lookout.sidecar.samples.label_studio import (
    MODEL_VERSION,
    LabelStudioError,
    from_percent,
    read_annotations,
    send_batch,
)
from tests.support.label_studio import annotate, api
from tests.support.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("label_studio")]

TOLERANCE = 1e-6  # pixels (the module's docstring says why)
SEEDS = (3, 14, 15, 92)
CLASS_NAMES = (*CLASSES, 'odd "name" <&>')  # the config must escape what a model calls things


def truth(seed: int) -> tuple[LabelledBox, ...]:
    scene = generate_scene(seed)
    return tuple(LabelledBox(CLASSES[int(c)], *map(float, box))
                 for box, c in zip(scene.boxes, scene.classes, strict=True))


def item(seed: int) -> AuditItem:
    """A scene as the store keeps it: JPEG bytes, with the primary's boxes: the truth a
    little off, its last box missed, each with a confidence."""
    scene = generate_scene(seed)
    encoded = io.BytesIO()
    scene.to_pil().save(encoded, "JPEG", quality=85)
    width, height = scene.size
    predicted = tuple(LabelledBox(b.label, b.x1 + 1.5, b.y1 - 0.25, b.x2 + 2.125, b.y2 + 1 / 3,
                                  round(0.5 + 0.1 * i, 2))
                      for i, b in enumerate(truth(seed)[:-1]))
    return AuditItem(f"sample-{seed}", encoded.getvalue(), "image/jpeg", width, height,
                     predicted)


def assert_same_boxes(got: tuple[LabelledBox, ...], want: tuple[LabelledBox, ...]) -> None:
    assert [b.label for b in got] == [b.label for b in want]
    for g, w in zip(got, want, strict=True):
        assert (g.x1, g.y1, g.x2, g.y2) == pytest.approx((w.x1, w.y1, w.x2, w.y2),
                                                         abs=TOLERANCE)


@pytest.fixture(scope="module")
def items() -> list[AuditItem]:
    return [item(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def project(label_studio, items) -> int:
    return send_batch(label_studio.url, label_studio.token, "lookout audit e2e", CLASS_NAMES,
                      items)


@pytest.fixture(scope="module")
def tasks(label_studio, project) -> dict[str, dict]:
    """The project's tasks as Label Studio lists them, by sample id."""
    answer = api(label_studio.url, label_studio.token, "GET",
                 f"/api/tasks?project={project}&fields=all&page_size=100")
    return {task["data"]["sample_id"]: task for task in answer["tasks"]}


def test_the_project_labels_rectangles_with_the_models_class_names(label_studio, project):
    got = api(label_studio.url, label_studio.token, "GET", f"/api/projects/{project}")
    assert got["title"] == "lookout audit e2e"
    control = got["parsed_label_config"]["label"]
    assert control["type"] == "RectangleLabels" and control["to_name"] == ["image"]
    assert control["labels"] == list(CLASS_NAMES)
    # predictions of this version are the ones the labelling screen pre-fills
    assert got["model_version"] == MODEL_VERSION and got["show_collab_predictions"]
    assert got["task_number"] == len(SEEDS)


def test_each_task_carries_its_image_sample_id_and_the_primarys_boxes(tasks, items):
    assert set(tasks) == {i.sample_id for i in items}
    for sent in items:
        task = tasks[sent.sample_id]
        header, encoded = task["data"]["image"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        assert base64.b64decode(encoded) == sent.image
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (sent.width,
                                                                          sent.height)
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == MODEL_VERSION
        assert prediction["score"] == min(b.score for b in sent.predictions if b.score)
        results = prediction["result"]
        assert {(r["original_width"], r["original_height"]) for r in results} == {
            (sent.width, sent.height)}
        boxes = tuple(box for r in results
                      if (box := from_percent(r["value"], sent.width, sent.height,
                                              r.get("score"))) is not None)
        assert len(boxes) == len(results)
        assert_same_boxes(boxes, sent.predictions)
        assert [b.score for b in boxes] == [b.score for b in sent.predictions]


def test_annotations_come_back_in_pixels_by_sample_id(label_studio, project, tasks):
    url, token = label_studio.url, label_studio.token
    first, second, empty, untouched = (tasks[f"sample-{seed}"]["id"] for seed in SEEDS)
    # a first attempt, corrected later: the latest annotation is the answer
    annotate(url, token, first, truth(SEEDS[1]))
    annotate(url, token, first, truth(SEEDS[0]))
    annotate(url, token, second, truth(SEEDS[1]))
    annotate(url, token, empty, ())  # the annotator saw nothing
    annotate(url, token, untouched, truth(SEEDS[3]), cancelled=True)  # skipped: no answer

    got = read_annotations(url, token, project)

    assert set(got) == {f"sample-{seed}" for seed in SEEDS[:3]}
    assert_same_boxes(got[f"sample-{SEEDS[0]}"], truth(SEEDS[0]))
    assert_same_boxes(got[f"sample-{SEEDS[1]}"], truth(SEEDS[1]))
    assert got[f"sample-{SEEDS[2]}"] == ()


def test_a_large_batch_goes_in_several_requests(label_studio, items, monkeypatch):
    monkeypatch.setattr(label_studio_client, "IMPORT_BYTES", 1)  # a request per task
    project = send_batch(label_studio.url, label_studio.token, "chunked audit", CLASSES,
                         items[:3])
    answer = api(label_studio.url, label_studio.token, "GET",
                 f"/api/tasks?project={project}&fields=all&page_size=100")
    assert sorted(t["data"]["sample_id"] for t in answer["tasks"]) == sorted(
        i.sample_id for i in items[:3])
    assert all(len(t["predictions"]) == 1 for t in answer["tasks"])


def test_an_empty_batch_is_a_project_without_tasks(label_studio):
    project = send_batch(label_studio.url, label_studio.token, "empty audit", CLASSES, [])
    assert read_annotations(label_studio.url, label_studio.token, project) == {}


def test_a_personal_access_token_works_as_well(label_studio, project):
    """Label Studio's newer tokens are JWT refresh tokens, exchanged for access ones."""
    personal = api(label_studio.url, label_studio.token, "POST", "/api/token/")["token"]
    assert read_annotations(label_studio.url, personal, project) == read_annotations(
        label_studio.url, label_studio.token, project)


def test_a_bad_token_is_named_as_such(label_studio, items):
    with pytest.raises(LabelStudioError, match=r"authentication failed.*Invalid token"):
        send_batch(label_studio.url, "not-the-token", "refused audit", CLASSES, items[:1])
    with pytest.raises(LabelStudioError, match="authentication failed"):
        read_annotations(label_studio.url, "a.b.c", 1)


def test_the_servers_own_complaint_is_in_the_error(label_studio):
    with pytest.raises(LabelStudioError, match=r"400.*title"):
        send_batch(label_studio.url, label_studio.token, "ab", CLASSES, [])


def test_an_unreachable_server_says_where_it_looked():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioError, match=re.escape(f"cannot reach Label Studio at {url}")):
        read_annotations(url, "any-token", 1)
