"""The annotators' boxes stay in the audit record, compact, for the gallery to draw."""

from __future__ import annotations

import json

from lookout.sidecar.samples.audit_import import complete
from lookout.sidecar.samples.audit_items import LabelledBox
from tests.sidecar.test_audit_records import ID, sample


def test_the_record_keeps_each_labelled_images_boxes_in_thumbnail_pixels() -> None:
    other = "1" * 12 + "b" * 20
    record = {"batch_id": "b", "random_ids": [ID], "top_up_ids": [other], "seed": 1}
    boxes = {ID: (LabelledBox("car", 1.04, 2.0, 30.26, 40.0),
                  LabelledBox("person", 5, 6, 7, 8)), other: ()}
    done = complete(record, [sample(inclusion_probability=0.5), sample(id=other)], boxes,
                    "coco")
    assert done["annotations"] == {ID: [["car", 1.0, 2.0, 30.3, 40.0],
                                        ["person", 5.0, 6.0, 7.0, 8.0]], other: []}
    assert json.loads(json.dumps(done))["annotations"] == done["annotations"]
