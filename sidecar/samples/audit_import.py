"""An audit batch's labels in, its estimates out: the record the draw wrote, completed.

Takes the annotations as the labelling tools give them (sample id -> the annotator's
boxes in thumbnail pixels: `audit_coco.read_coco` or Label Studio's
`read_annotations`), so both paths give the same numbers. Only the batch's random
images with labels and a recorded probability enter the estimates; images not yet
labelled are counted as `unlabelled` (an annotator who skips the hard ones biases the
audit, so the record says how many were skipped), top-ups are counted apart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lookout.sidecar.samples.audit_estimates import (
    count_matrix,
    estimate,
    image_counts,
    predictions,
)
from lookout.sidecar.samples.audit_items import AuditItem, LabelledBox
from lookout.sidecar.samples.audit_records import ALL_CLASSES, RATES
from lookout.sidecar.samples.store import Sample

if TYPE_CHECKING:
    from lookout.sidecar.samples.fleet_store import FleetStore
    from lookout.sidecar.samples.store import SampleStore


class AuditImportError(ValueError):
    """Labels that do not belong to the batch, or a batch whose samples are gone."""


def audit_items(store: SampleStore | FleetStore, samples: Sequence[Sample]
                ) -> list[AuditItem]:
    """What a labelling tool is sent: thumbnails with the primary's boxes."""
    return [AuditItem(s.id, store.read(s), s.media_type, s.thumbnail_width,
                      s.thumbnail_height, predictions(s)) for s in samples]


def batch_samples(store: SampleStore | FleetStore, ids: Sequence[str]) -> list[Sample]:
    samples = []
    for sample_id in ids:
        sample = store.get(sample_id)
        if sample is None:
            raise AuditImportError(f"sample {sample_id} of the batch is no longer in "
                                   f"{store.directory} (retention?)")
        samples.append(sample)
    return samples


def compact_annotations(annotations: Mapping[str, Sequence[LabelledBox]]
                        ) -> dict[str, list[list[str | float]]]:
    """The annotators' boxes as the record keeps them, so the gallery can draw them:
    sample id -> [[label, x1, y1, x2, y2], ...] in thumbnail pixels (0.1 px is enough)."""
    return {sample_id: [[b.label, *(round(float(v), 1) for v in (b.x1, b.y1, b.x2, b.y2))]
                        for b in boxes] for sample_id, boxes in sorted(annotations.items())}


def complete(record: dict[str, Any], samples: Sequence[Sample],
             annotations: Mapping[str, Sequence[LabelledBox]], source: str,
             now: float | None = None) -> dict[str, Any]:
    """The record with the estimates of `annotations` (see the module docstring)."""
    known = set(record["random_ids"]) | set(record["top_up_ids"])
    strangers = sorted(set(annotations) - known)
    if strangers:
        raise AuditImportError(f"{len(strangers)} labelled images are not in batch "
                               f"{record['batch_id']} (first: {strangers[0]})")
    by_id = {s.id: s for s in samples}
    random_ids = [i for i in record["random_ids"] if i in annotations]
    weights = np.array([1.0 / (by_id[i].inclusion_probability or np.nan) for i in random_ids])
    per_image = [image_counts(predictions(by_id[i]), predictions(by_id[i], "reference"),
                              tuple(annotations[i])) for i in random_ids]
    classes, counts = count_matrix(per_image)
    estimates = estimate(classes, counts, weights) if random_ids else {}
    top_up = [image_counts(predictions(by_id[i]), (), tuple(annotations[i]))
              for i in record["top_up_ids"] if i in annotations]
    _, top_counts = count_matrix(top_up)
    return {**record, "status": "estimated", "estimated": time.time() if now is None else now,
            "labels": {"source": source, "random": len(random_ids),
                       "unlabelled": len(record["random_ids"]) - len(random_ids),
                       "top_up": len(top_up)},
            "interval": {"level": 0.95, "method": "delete-one-image jackknife on the logit "
                         "scale, t on the effective number of images"},
            "estimates": estimates,
            "annotations": compact_annotations(annotations),
            "top_up_boxes": {"true_positives": int(top_counts[:, -1, 0].sum()),
                             "predicted": int(top_counts[:, -1, 1].sum()),
                             "truth": int(top_counts[:, -1, 2].sum())} if top_up else None,
            "summary": {rate: (estimates.get(ALL_CLASSES) or {}).get(rate)
                        for rate in RATES}}
