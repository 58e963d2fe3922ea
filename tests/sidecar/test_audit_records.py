"""Audit records in a local store and the fleet's, stores and manifests written before
inclusion probabilities, COCO files that lost lookout's fields, and the estimator's
arithmetic on a case small enough to do by hand."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from lookout.sidecar.samples import manifest
from lookout.sidecar.samples.audit_coco import CocoError, read_coco
from lookout.sidecar.samples.audit_estimates import count_matrix, estimate, image_counts
from lookout.sidecar.samples.audit_import import AuditImportError, complete
from lookout.sidecar.samples.audit_items import LabelledBox
from lookout.sidecar.samples.audit_records import AuditRecordError, AuditRecords
from lookout.sidecar.samples.bucket import open_bucket
from lookout.sidecar.samples.fleet_store import FleetStore
from lookout.sidecar.samples.layout import parse_store_url
from lookout.sidecar.samples.store import INDEX_NAME, Sample, SampleStore

T0 = 1_800_000_000.0
ID = "0" * 12 + "a" * 20


def sample(**values) -> Sample:
    defaults = dict(id=ID, time=T0, trace_id=None, model="m", version="v",
                    strategy="random", route="/predict", status=200, latency=0.01,
                    width=200, height=100, thumbnail_width=100, thumbnail_height=50,
                    media_type="image/jpeg", file="images/x.jpg", file_bytes=1)
    return Sample(**{**defaults, **values})


@pytest.mark.parametrize("kind", ["local", "fleet"])
def test_records_are_written_read_and_listed_newest_first(tmp_path, kind) -> None:
    if kind == "fleet":
        url = parse_store_url(f"file://{tmp_path}/bucket")
        store: SampleStore | FleetStore = FleetStore(open_bucket(url), url)
    else:
        store = SampleStore(tmp_path / "store")
    records = AuditRecords(store)
    assert records.read("20260101-000000-abcdef") is None and records.all() == []
    older = {"batch_id": "20260101-000000-abcdef", "created": T0, "model": "m"}
    newer = {"batch_id": "20260102-000000-abcdef", "created": T0 + 86400, "model": "m"}
    records.write(older)
    records.write(newer)
    records.write({**older, "status": "estimated"})  # an import rewrites its record
    assert records.read(older["batch_id"]) == {**older, "status": "estimated"}
    assert [r["batch_id"] for r in records.all()] == [newer["batch_id"], older["batch_id"]]
    with pytest.raises(AuditRecordError):
        records.read("../../etc/passwd")
    if kind == "fleet":
        assert (tmp_path / "bucket" / "audits" / f"{newer['batch_id']}.json").is_file()


def test_a_store_written_before_probabilities_is_read_and_upgraded(tmp_path) -> None:
    directory = tmp_path / "old"
    directory.mkdir()
    (directory / "images").mkdir()
    schema = (
        "CREATE TABLE samples (id TEXT PRIMARY KEY, time REAL NOT NULL, trace_id TEXT, "
        "model TEXT NOT NULL, version TEXT NOT NULL, strategy TEXT NOT NULL, route TEXT "
        "NOT NULL, status INTEGER NOT NULL, latency REAL NOT NULL, width INTEGER NOT NULL, "
        "height INTEGER NOT NULL, thumbnail_width INTEGER NOT NULL, thumbnail_height "
        "INTEGER NOT NULL, media_type TEXT NOT NULL, file TEXT NOT NULL, file_bytes INTEGER "
        "NOT NULL, original_file TEXT, original_bytes INTEGER, primary_detections TEXT, "
        "reference_detections TEXT, agreement REAL, features TEXT)")
    with sqlite3.connect(directory / INDEX_NAME) as connection:
        connection.execute(schema)
        connection.execute("INSERT INTO samples (id, time, model, version, strategy, route, "
                           "status, latency, width, height, thumbnail_width, "
                           "thumbnail_height, media_type, file, file_bytes) VALUES "
                           "(?, ?, 'm', 'v', 'random', '/', 200, 0.1, 2, 2, 1, 1, "
                           "'image/jpeg', 'images/x.jpg', 1)", (ID, T0))
    (directory / "images" / "x.jpg").write_bytes(b"x")
    evidence = SampleStore(directory, repair=False)  # a postmortem copy: read, not changed
    assert evidence.get(ID).inclusion_probability is None
    columns = [row[1] for row in sqlite3.connect(directory / INDEX_NAME).execute(
        "PRAGMA table_info(samples)")]
    assert "inclusion_probability" not in columns
    evidence.close()
    writer = SampleStore(directory)  # the sidecar's open adds the column
    assert writer.get(ID).inclusion_probability is None
    writer.add(sample(id="1" * 32, inclusion_probability=0.25), _file())
    assert writer.get("1" * 32).inclusion_probability == 0.25


def _file():
    from lookout.sidecar.samples.store import SampleFile

    return SampleFile(b"jpeg", "jpg")


def test_manifests_carry_the_probability_and_older_lines_read_without_it() -> None:
    [kept], bad = manifest.decode(manifest.encode([sample(inclusion_probability=0.02)]))
    assert kept.inclusion_probability == 0.02 and bad == 0
    line = json.loads(manifest.encode([sample()]))
    del line["inclusion_probability"]
    [old], _ = manifest.decode(json.dumps(line).encode())
    assert old.inclusion_probability is None


def test_coco_from_a_tool_that_dropped_lookouts_fields() -> None:
    document = {"images": [{"id": 7, "file_name": f"images/{ID}.jpg", "width": 100,
                            "height": 50},
                           {"id": 8, "file_name": f"{'b' * 32}.jpg"}],
                "annotations": [{"id": 1, "image_id": 7, "category_id": 3,
                                 "bbox": [10, 5, 20, 10]}],
                "categories": [{"id": 3, "name": "circle"}]}
    batch, labels = read_coco(json.dumps(document).encode())
    assert batch is None
    assert labels == {ID: (LabelledBox("circle", 10, 5, 30, 15),), "b" * 32: ()}
    with pytest.raises(CocoError, match="no sample id"):
        read_coco(json.dumps({**document, "images": [{"id": 1, "file_name": "x.jpg"}]})
                  .encode())
    with pytest.raises(CocoError, match="not a COCO"):
        read_coco(b"[1, 2]")


def test_the_estimates_weight_images_by_their_inclusion_probability() -> None:
    box = LabelledBox("car", 0, 0, 10, 10)
    far = LabelledBox("car", 50, 50, 60, 60)
    # image a (p = 0.5, weight 2): one right box; image b (p = 0.1, weight 10): one
    # wrong box and one missed object; the reference agrees with the primary on both
    counts = [image_counts([box], [box], [box]), image_counts([far], [far], [box])]
    classes, matrix = count_matrix(counts)
    result = estimate(classes, matrix, np.array([2.0, 10.0]))
    every = result["all"]
    assert every["precision"]["audited"] == pytest.approx(2 / 12)
    assert every["recall"]["audited"] == pytest.approx(2 / 12)
    assert every["precision"]["proxy"] == 1.0
    assert every["precision"]["bias"] == pytest.approx(2 / 12 - 1)
    assert every["boxes"] == {"true_positives": 1, "predicted": 2, "truth": 2,
                              "matched": 2, "primary": 2, "reference": 2}
    low, high = every["precision"]["interval"]
    assert 0 < low < 2 / 12 < high <= 1
    assert every["effective_images"] == pytest.approx(144 / 104)


def test_labels_of_images_outside_the_batch_are_refused() -> None:
    record = {"batch_id": "b", "random_ids": [ID], "top_up_ids": [], "seed": 1}
    with pytest.raises(AuditImportError, match="not in batch"):
        complete(record, [sample()], {"f" * 32: ()}, "coco")
    done = complete(record, [sample(inclusion_probability=0.5)], {}, "coco")
    assert done["labels"]["unlabelled"] == 1 and done["estimates"] == {}


def test_a_batch_is_drawn_and_estimated_from_the_fleets_store(tmp_path) -> None:
    """Manifests and thumbnails as the sink lays them out; the draw, the import and the
    record through the fleet store's read interface."""
    from lookout.sidecar.samples.audit_draw import draw_batch
    from lookout.sidecar.samples.audit_import import batch_samples
    from lookout.sidecar.samples.layout import Partition

    url = parse_store_url(f"file://{tmp_path}/bucket")
    fleet = FleetStore(open_bucket(url), url)
    partition = Partition.of("m", "v", T0)
    box = {"box": [0, 0, 20, 20], "score": 0.9, "class_id": 0, "class": "car"}
    stored = []
    for number in range(12):
        sample_id = f"{int((T0 + number) * 1000):012x}" + f"{number:020x}"
        key = partition.image_key(sample_id, "jpg")
        fleet.write_object(key, b"jpeg")
        strategy = "random" if number < 10 else "error"
        stored.append(sample(id=sample_id, time=T0 + number, file=key, strategy=strategy,
                             inclusion_probability=0.1 if strategy == "random" else None,
                             primary_detections=[box], reference_detections=[box]))
    fleet.write_object(partition.manifest_key("pod-a", stored[0].id),
                       manifest.encode(stored))
    record, drawn = draw_batch(fleet, "m", "v", T0, T0 + 60, size=6, seed=3, top_up=1,
                               now=T0 + 100)
    again, _ = draw_batch(fleet, "m", "v", T0, T0 + 60, size=6, seed=3, top_up=1)
    assert record["random_ids"] == again["random_ids"]  # seeded
    assert len(set(record["random_ids"])) == 6 and record["sizes"]["stratum"] == 10
    assert [s.id for s in drawn] == [*record["random_ids"], *record["top_up_ids"]]
    assert [fleet.get(i).strategy for i in record["top_up_ids"]] == ["error"]
    # the annotator finds the car on every image but the first, which holds nothing
    labels = {i: (LabelledBox("car", 0, 0, 10, 10),) for i in record["random_ids"]}
    labels[record["random_ids"][0]] = ()
    samples = batch_samples(fleet, [*record["random_ids"], *record["top_up_ids"]])
    done = complete(record, samples, labels, "coco", now=T0 + 200)
    AuditRecords(fleet).write(done)
    read = AuditRecords(fleet).read(record["batch_id"])
    assert read is not None and read["estimates"]["car"]["precision"]["audited"] == 5 / 6
    assert read["estimates"]["all"]["recall"]["audited"] == 1.0
    assert read["estimates"]["all"]["precision"]["proxy"] == 1.0
    assert read["labels"] == {"source": "coco", "random": 6, "unlabelled": 0, "top_up": 0}
