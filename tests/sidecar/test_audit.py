"""The audit loop end to end on demo scenes with exact ground truth: samples stored by
the real store from the real primary and reference models, drawn and exported as COCO,
labelled by a script from the ground truth, imported; the audited rates equal the
truth computed directly, and the measured bias equals truth - proxy."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookout.cli.main import main
from lookout.lookout_demo import outcomes
from lookout.lookout_demo.field_conditions import rain
from lookout.lookout_demo.scenes import CLASSES, Scene
from lookout.shadow_eval.boxes import Detections
from lookout.sidecar.samples.audit_records import AuditRecords
from lookout.sidecar.samples.recorder import detections_json
from lookout.sidecar.samples.store import Sample, SampleFile, SampleStore, new_id
from tests.support.audit_truth import direct

T0 = 1_800_000_000.0
MODEL = "yolo"
SCALE = 320 / 384  # the thumbnail's side over the scene's
PROBABILITIES = (0.01, 0.04)  # the random stratum's, alternating: weights 100 and 25


def thumbnail(scene: Scene) -> bytes:
    buffer = io.BytesIO()
    scene.to_pil().resize((320, 240), Image.Resampling.BILINEAR).save(buffer, "JPEG")
    return buffer.getvalue()


def store_scenes(store: SampleStore, scenes: list[Scene], version: str, start: float,
                 primary, reference) -> dict[str, Scene]:
    """Every scene drawn at random (every third filed as `slow`, the rule before random
    that took it) and every fifth also as an error sample not drawn, stored as the
    recorder stores them; returns sample id -> scene."""
    by_id = {}
    pixels = [scene.image for scene in scenes]
    for number, (scene, found, pseudo) in enumerate(zip(
            scenes, primary.detect_batch(pixels), reference.detect_batch(pixels),
            strict=True)):
        moment = start + number
        strategy_probability = [("slow" if number % 3 == 0 else "random",
                                 PROBABILITIES[number % 2])]
        if number % 5 == 0:
            strategy_probability.append(("error", None))
        for strategy, probability in strategy_probability:
            sample = store.add(Sample(
                id=new_id(moment), time=moment, trace_id=None, model=MODEL, version=version,
                strategy=strategy, route="/predict", status=200, latency=0.01, width=384,
                height=288, thumbnail_width=320, thumbnail_height=240,
                media_type="image/jpeg", file="", file_bytes=0,
                primary_detections=detections_json(found, primary.names),
                # named, as the shadow stage hands them to the recorder
                reference_detections=detections_json(Detections(
                    pseudo.boxes, pseudo.scores, pseudo.classes,
                    tuple(pseudo.labels(reference.names))), ()),
                inclusion_probability=probability,
                classes=tuple(found.labels(primary.names))),
                SampleFile(thumbnail(scene), "jpg"))
            by_id[sample.id] = scene
    return by_id


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    primary, reference = outcomes.detectors()
    directory = tmp_path_factory.mktemp("audit") / "store"
    store = SampleStore(directory)
    clean = outcomes.scenes(6_100_000, 40)
    rng = np.random.default_rng(5)
    rainy = [rain(scene, 0.8, rng) for scene in outcomes.scenes(6_200_000, 40)]
    scenes = {**store_scenes(store, clean, "clean", T0, primary, reference),
              **store_scenes(store, rainy, "rain", T0 + 1000, primary, reference)}
    # a random sample from before probabilities were recorded: never drawn
    old = store.add(Sample(
        id=new_id(T0 + 500), time=T0 + 500, trace_id=None, model=MODEL, version="clean",
        strategy="random", route="/predict", status=200, latency=0.01, width=384,
        height=288, thumbnail_width=320, thumbnail_height=240, media_type="image/jpeg",
        file="", file_bytes=0, primary_detections=[], reference_detections=[]),
        SampleFile(thumbnail(clean[0]), "jpg"))
    store.close()
    return directory, scenes, old.id


def lookout(capsys, *args: str) -> str:
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def label_from_ground_truth(zip_path: Path, scenes: dict[str, Scene], out: Path) -> None:
    """The annotator: the exported document's pre-filled boxes replaced by the scene's
    exact ground truth in thumbnail pixels (inside the frame, as a tool draws them)."""
    with zipfile.ZipFile(zip_path) as archive:
        document = json.loads(archive.read("annotations.json"))
    document["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    document["annotations"] = []
    for image in document["images"]:
        scene = scenes[image["sample_id"]]
        for box, class_id in zip(scene.boxes.tolist(), scene.classes.tolist(), strict=True):
            x1, y1, x2, y2 = (min(max(v * SCALE, 0.0), limit) for v, limit in
                              zip(box, (320, 240, 320, 240), strict=True))
            document["annotations"].append({
                "id": len(document["annotations"]) + 1, "image_id": image["id"],
                "category_id": class_id + 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    out.write_text(json.dumps(document))


def audit(capsys, tmp_path: Path, directory: Path, scenes, version: str, size: int,
          top_up: int = 0) -> dict:
    exported = tmp_path / f"{version}.zip"
    args = ["audit", "export", "--store", str(directory), "--model", MODEL, "--version",
            version, "--since", str(T0), "--until", str(T0 + 2000), "--size", str(size),
            "--seed", "7", "-o", str(exported)]
    if top_up:
        args += ["--top-up", str(top_up), "--top-up-strategies", "error"]
    lookout(capsys, *args)
    labels = tmp_path / f"{version}.json"
    label_from_ground_truth(exported, scenes, labels)
    return json.loads(lookout(capsys, "audit", "import", "--store", str(directory),
                              "--coco", str(labels), "--json"))


def test_a_coco_round_trip_gives_the_truth_of_the_batch(world, tmp_path, capsys) -> None:
    directory, scenes, old = world
    record = audit(capsys, tmp_path, directory, scenes, "clean", size=30, top_up=4)
    assert record["sizes"] == {"wanted": 30, "random": 30, "top_up": 4, "stratum": 40,
                               "unweighted": 1}
    assert old not in record["random_ids"]
    assert record["labels"] == {"source": "coco", "random": 30, "unlabelled": 0, "top_up": 4}
    store = SampleStore(directory, repair=False)
    drawn = [store.get(i) for i in record["random_ids"]]
    assert all(s.inclusion_probability in PROBABILITIES for s in drawn)
    assert {s.strategy for s in drawn} == {"random", "slow"}  # the stratum, however filed
    assert all(store.get(i).strategy == "error" for i in record["top_up_ids"])
    truth = direct(store, record["random_ids"], scenes)
    every = record["estimates"]["all"]
    for rate in ("precision", "recall"):
        assert every[rate]["audited"] == pytest.approx(truth[rate], abs=1e-12)
        assert every[rate]["proxy"] == pytest.approx(truth[f"{rate}_proxy"], abs=1e-12)
        low, high = every[rate]["interval"]
        assert low <= every[rate]["audited"] <= high < 1.0 or high == 1.0
    assert every["boxes"]["truth"] > 30  # several objects a scene, counted unweighted
    assert set(record["estimates"]) <= {*CLASSES, "all"}
    # the record is kept in the store, where `audit show` finds it
    assert AuditRecords(store).read(record["batch_id"]) == record
    shown = lookout(capsys, "audit", "show", "--store", str(directory))
    assert record["batch_id"] in shown and "estimated" in shown


def test_under_rain_the_measured_bias_is_truth_minus_proxy(world, tmp_path, capsys) -> None:
    directory, scenes, _ = world
    record = audit(capsys, tmp_path, directory, scenes, "rain", size=40)
    store = SampleStore(directory, repair=False)
    truth = direct(store, record["random_ids"], scenes)
    recall = record["estimates"]["all"]["recall"]
    assert recall["audited"] == pytest.approx(truth["recall"], abs=1e-12)
    assert recall["bias"] == pytest.approx(truth["recall"] - truth["recall_proxy"], abs=1e-12)
    # rain fools the reference: the plain recall proxy reads far below the truth
    assert recall["bias"] > 0.1
    low, high = recall["bias_interval"]
    assert low > 0 and low <= recall["bias"] <= high
