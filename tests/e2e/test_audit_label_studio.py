"""The audit loop through a real Label Studio: a sidecar in front of the demo server
(the shipped primary, the reference shadow-run, every frame drawn into the random
stratum at a recorded probability) stores samples of demo scenes; `lookout audit
export --label-studio` sends a batch as a project with the primary's boxes pre-filled;
an annotator labels each task through Label Studio's API with the scene generator's
exact ground truth; `lookout audit import --label-studio` reads it back. The audited
rates equal the truth computed directly from the ground truth over the same images,
the measured bias is truth minus proxy (in rain, where the reference misleads the
proxies, a large one), and the COCO path gives the same numbers."""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lookout.cli.main import main
from lookout.lookout_demo.field_conditions import rain
from lookout.lookout_demo.scenes import CLASSES, Scene, generate_scene
from lookout.sidecar.samples.audit_estimates import predictions
from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.store import Sample, SampleStore
from tests.support.audit_truth import direct
from tests.support.label_studio import annotate, api
from tests.support.processes import request
from tests.support.shadow_stack import start_shadow_stack

# the Label Studio fixture is the session's, on the worker of the other labelling tests
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("label_studio")]

MODEL, VERSION = "yolo-test", "v7"
FIRST_SEED, FRAMES = 6_400_000, 36
RAIN = 1_000_000  # a rainy frame's trace names its seed plus this
PARENT = "00f067aa0ba902b7"


def _trace_id(number: int) -> str:
    return f"{number:032x}"  # each frame's trace names its scene


def _scene(number: int) -> Scene:
    """Frame `number`'s scene: clean, or in heavy rain (the same objects)."""
    if number < FIRST_SEED + RAIN:
        return generate_scene(number)
    seed = number - RAIN
    return rain(generate_scene(seed), 0.8, np.random.default_rng(seed))


@dataclass(frozen=True)
class Stored:
    directory: Path
    scenes: dict[str, Scene]  # sample id -> the scene it shows
    clean: tuple[float, float]  # the windows the clean and the rainy frames were sent in
    rainy: tuple[float, float]


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Stored:
    """The store a sidecar filled: clean frames, then the same scenes in rain."""
    directory = tmp_path_factory.mktemp("audit-label-studio") / "store"
    # every frame is sampled and the client outruns the store's writer: its queue holds
    # them all, so none is shed at this test's pace (the default holds 32)
    stack = start_shadow_stack(MODEL, "--model-version", VERSION, "--sample-dir",
                               str(directory), "--sample-strategies",
                               "random share=1 per_day=1000000",
                               "--sample-queue-size", str(4 * FRAMES))
    numbers = [*range(FIRST_SEED, FIRST_SEED + FRAMES),
               *range(FIRST_SEED + RAIN, FIRST_SEED + RAIN + FRAMES)]
    moments = []
    try:
        for number in numbers:
            moments.append(time.time())
            response = request(stack.sidecar.port, "POST", "/predict",
                               body=_scene(number).jpeg(), headers={
                                   "Content-Type": "image/jpeg",
                                   "traceparent": f"00-{_trace_id(number)}-{PARENT}-01"})
            assert response.status == 200
        moments.append(time.time())
    finally:
        stack.stop()  # drains: every sample committed
    store = SampleStore(directory, repair=False)
    samples = store.query(SampleQuery(limit=1000)).samples
    by_trace = {_trace_id(number): number for number in numbers}
    scenes = {s.id: _scene(by_trace[s.trace_id]) for s in samples}
    assert len(scenes) == len(numbers), f"{len(scenes)} samples of {len(numbers)} frames"
    return Stored(directory, scenes, (moments[0] - 1, moments[FRAMES]),
                  (moments[FRAMES], moments[-1] + 1))


def _lookout(capsys, *args: str) -> str:
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _ground_truth(sample: Sample, scene: Scene) -> tuple[LabelledBox, ...]:
    """The scene's boxes in the thumbnail's pixels, inside the frame, as drawn."""
    sx, sy = sample.thumbnail_width / sample.width, sample.thumbnail_height / sample.height
    limits = (sample.thumbnail_width, sample.thumbnail_height) * 2
    return tuple(
        LabelledBox(CLASSES[c], *(min(max(v * s, 0.0), limit) for v, s, limit in
                                  zip(box, (sx, sy, sx, sy), limits, strict=True)))
        for box, c in zip(scene.boxes.tolist(), scene.classes.tolist(), strict=True))


def _coco_labels(exported: Path, store: SampleStore, scenes: dict[str, Scene],
                 out: Path) -> None:
    """The same annotator on the COCO path: the pre-filled boxes replaced by the truth."""
    with zipfile.ZipFile(exported) as archive:
        document = json.loads(archive.read("annotations.json"))
    document["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    document["annotations"] = []
    for image in document["images"]:
        sample = store.get(image["sample_id"])
        assert sample is not None
        for box in _ground_truth(sample, scenes[sample.id]):
            document["annotations"].append({
                "id": len(document["annotations"]) + 1, "image_id": image["id"],
                "category_id": CLASSES.index(box.label) + 1,
                "bbox": [box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1]})
    out.write_text(json.dumps(document))


def _window(stored: Stored, window: tuple[float, float], size: int) -> list[str]:
    return ["--store", str(stored.directory), "--model", MODEL, "--version", VERSION,
            "--since", f"{window[0]:.3f}", "--until", f"{window[1]:.3f}", "--size",
            str(size), "--seed", "5"]


def _through_label_studio(stored: Stored, label_studio, capsys,
                          window: list[str]) -> tuple[dict, dict]:
    """A batch sent, each task labelled with the truth by the API, read back: the
    record as drawn and as imported."""
    url, token = label_studio.url, label_studio.token
    out = _lookout(capsys, "audit", "export", *window, "--label-studio", url, "--token",
                   token, "--classes", ",".join(CLASSES))
    batch = out.split()[1].rstrip(":")
    store = SampleStore(stored.directory, repair=False)
    record = AuditRecords(store).read(batch)
    assert record is not None
    project = record["label_studio"]["project"]

    # the tasks, each with its image's sample and the primary's boxes pre-filled
    listed = api(url, token, "GET", f"/api/tasks?project={project}&fields=all&page_size=100")
    tasks = {task["data"]["sample_id"]: task for task in listed["tasks"]}
    assert set(tasks) == set(record["random_ids"])
    for sample_id, task in tasks.items():
        sample = store.get(sample_id)
        assert sample is not None and sample.inclusion_probability == 1.0
        [prediction] = task["predictions"]
        assert len(prediction["result"]) == len(predictions(sample))
        annotate(url, token, task["id"], _ground_truth(sample, stored.scenes[sample_id]))

    imported = json.loads(_lookout(capsys, "audit", "import", "--store",
                                   str(stored.directory), "--label-studio", url, "--token",
                                   token, "--batch", batch, "--json"))
    assert imported["labels"] == {"source": "label_studio", "random": len(tasks),
                                  "unlabelled": 0, "top_up": 0}
    assert AuditRecords(store).read(batch)["status"] == "estimated"
    return record, imported


def _equal_to_the_truth(stored: Stored, imported: dict) -> dict[str, float]:
    store = SampleStore(stored.directory, repair=False)
    truth = direct(store, imported["random_ids"], stored.scenes)
    every = imported["estimates"]["all"]
    for rate in ("precision", "recall"):
        assert every[rate]["audited"] == pytest.approx(truth[rate], abs=1e-9)
        assert every[rate]["proxy"] == pytest.approx(truth[f"{rate}_proxy"], abs=1e-9)
        assert every[rate]["bias"] == pytest.approx(truth[rate] - truth[f"{rate}_proxy"],
                                                    abs=1e-9)
    return truth


def test_a_label_studio_round_trip_gives_the_truth_and_the_coco_paths_numbers(
        stored, label_studio, tmp_path, capsys) -> None:
    window = _window(stored, stored.clean, 30)
    record, imported = _through_label_studio(stored, label_studio, capsys, window)
    assert len(record["random_ids"]) == 30
    _equal_to_the_truth(stored, imported)

    # the same draw through COCO files: the same images, the same numbers
    exported = tmp_path / "batch.zip"
    _lookout(capsys, "audit", "export", *window, "-o", str(exported))
    labels = tmp_path / "labels.json"
    _coco_labels(exported, SampleStore(stored.directory, repair=False), stored.scenes, labels)
    via_coco = json.loads(_lookout(capsys, "audit", "import", "--store",
                                   str(stored.directory), "--coco", str(labels), "--json"))
    assert via_coco["random_ids"] == imported["random_ids"]
    for name, row in via_coco["estimates"].items():
        for rate in ("precision", "recall"):
            assert row[rate]["audited"] == pytest.approx(
                imported["estimates"][name][rate]["audited"], abs=1e-9)


def test_in_rain_the_audit_measures_the_proxys_bias_as_truth_minus_proxy(
        stored, label_studio, capsys) -> None:
    _, imported = _through_label_studio(stored, label_studio, capsys,
                                        _window(stored, stored.rainy, 30))
    truth = _equal_to_the_truth(stored, imported)
    # rain fools the reference: its recall proxy reads well below the truth
    assert truth["recall"] - truth["recall_proxy"] > 0.05
    bias = imported["estimates"]["all"]["recall"]
    assert bias["bias_interval"][0] > 0  # the audit says so too, beyond its interval


def test_a_wrong_token_is_a_clear_refusal(stored, label_studio, capsys) -> None:
    code = main(["audit", "export", *_window(stored, stored.clean, 5),
                 "--label-studio", label_studio.url, "--token", "not-the-token"])
    assert code == 1
    assert "authentication" in capsys.readouterr().err
