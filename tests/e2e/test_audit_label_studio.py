"""The audit loop through a real Label Studio: a sidecar in front of the demo server
(the shipped primary, the reference shadow-run, every frame drawn into the random
stratum at a recorded probability) stores samples of demo scenes; `lookout audit
export --label-studio` sends a batch as a project with the primary's boxes pre-filled;
an annotator labels each task through Label Studio's API with the scene generator's
exact ground truth; `lookout audit import --label-studio` reads it back. The audited
rates equal the truth computed directly from the ground truth over the same images,
the measured bias is truth minus proxy, and the COCO path gives the same numbers."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from lookout.cli.main import main
from lookout.lookout_demo.scenes import CLASSES, Scene, generate_scene
from lookout.sidecar.samples.audit_estimates import predictions
from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.store import Sample, SampleStore
from tests.support.audit_truth import direct
from tests.support.label_studio import annotate, api
from tests.support.shadow_stack import start_shadow_stack

# the Label Studio fixture is the session's, on the worker of the other labelling tests
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("label_studio")]

MODEL, VERSION = "yolo-test", "v7"
FIRST_SEED, FRAMES = 6_400_000, 36
PARENT = "00f067aa0ba902b7"


def _trace_id(seed: int) -> str:
    return f"{seed:032x}"  # each frame's trace names its scene


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Path, dict[str, Scene], float]:
    """The store a sidecar filled; sample id -> the scene it shows."""
    directory = tmp_path_factory.mktemp("audit-label-studio") / "store"
    since = time.time() - 1
    stack = start_shadow_stack(MODEL, "--model-version", VERSION, "--sample-dir",
                               str(directory), "--sample-strategies",
                               "random share=1 per_day=1000000")
    try:
        for seed in range(FIRST_SEED, FIRST_SEED + FRAMES):
            stack.send_frames(range(seed, seed + 1), headers={
                "traceparent": f"00-{_trace_id(seed)}-{PARENT}-01"})
    finally:
        stack.stop()  # drains: every sample committed
    store = SampleStore(directory, repair=False)
    samples = store.query(SampleQuery(limit=1000)).samples
    seeds = {_trace_id(seed): seed for seed in range(FIRST_SEED, FIRST_SEED + FRAMES)}
    scenes = {s.id: generate_scene(seeds[s.trace_id]) for s in samples}
    assert len(scenes) == FRAMES, f"{len(scenes)} samples stored of {FRAMES} frames"
    return directory, scenes, since


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


def test_a_label_studio_round_trip_gives_the_truth_and_the_coco_paths_numbers(
        stored, label_studio, tmp_path, capsys) -> None:
    directory, scenes, since = stored
    url, token = label_studio.url, label_studio.token
    window = ["--store", str(directory), "--model", MODEL, "--version", VERSION,
              "--since", f"{since:.3f}", "--size", "30", "--seed", "5"]
    out = _lookout(capsys, "audit", "export", *window, "--label-studio", url, "--token",
                   token, "--classes", ",".join(CLASSES))
    batch = out.split()[1].rstrip(":")
    store = SampleStore(directory, repair=False)
    record = AuditRecords(store).read(batch)
    assert record is not None and len(record["random_ids"]) == 30
    project = record["label_studio"]["project"]

    # the tasks, each with its image's sample and the primary's boxes pre-filled
    listed = api(url, token, "GET", f"/api/tasks?project={project}&fields=all&page_size=100")
    tasks = {task["data"]["sample_id"]: task for task in listed["tasks"]}
    assert set(tasks) == set(record["random_ids"])
    for sample_id, task in tasks.items():
        sample = store.get(sample_id)
        assert sample is not None and sample.inclusion_probability == 1.0
        [prediction] = task["predictions"]
        assert len(prediction["result"]) == len(predictions(sample)) > 0
        annotate(url, token, task["id"], _ground_truth(sample, scenes[sample_id]))

    imported = json.loads(_lookout(capsys, "audit", "import", "--store", str(directory),
                                   "--label-studio", url, "--token", token, "--batch",
                                   batch, "--json"))
    assert imported["labels"] == {"source": "label_studio", "random": 30,
                                  "unlabelled": 0, "top_up": 0}
    truth = direct(store, record["random_ids"], scenes)
    every = imported["estimates"]["all"]
    for rate in ("precision", "recall"):
        assert every[rate]["audited"] == pytest.approx(truth[rate], abs=1e-9)
        assert every[rate]["proxy"] == pytest.approx(truth[f"{rate}_proxy"], abs=1e-9)
        assert every[rate]["bias"] == pytest.approx(truth[rate] - truth[f"{rate}_proxy"],
                                                    abs=1e-9)
    assert AuditRecords(store).read(batch)["status"] == "estimated"

    # the same draw through COCO files: the same images, the same numbers
    exported = tmp_path / "batch.zip"
    _lookout(capsys, "audit", "export", *window, "-o", str(exported))
    labels = tmp_path / "labels.json"
    _coco_labels(exported, store, scenes, labels)
    via_coco = json.loads(_lookout(capsys, "audit", "import", "--store", str(directory),
                                   "--coco", str(labels), "--json"))
    assert via_coco["random_ids"] == imported["random_ids"]
    for name, row in via_coco["estimates"].items():
        for rate in ("precision", "recall"):
            assert row[rate]["audited"] == pytest.approx(
                imported["estimates"][name][rate]["audited"], abs=1e-9)


def test_a_wrong_token_is_a_clear_refusal(stored, label_studio, capsys) -> None:
    directory, _, since = stored
    code = main(["audit", "export", "--store", str(directory), "--model", MODEL,
                 "--version", VERSION, "--since", f"{since:.3f}", "--size", "5",
                 "--label-studio", label_studio.url, "--token", "not-the-token"])
    assert code == 1
    assert "authentication" in capsys.readouterr().err
