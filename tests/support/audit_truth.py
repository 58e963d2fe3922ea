"""The truth of an audit batch straight from the store and the scenes' exact ground
truth, not through the audit's own code: what its estimates must equal."""

from __future__ import annotations

import numpy as np

from lookout.lookout_demo.scenes import CLASSES, Scene
from lookout.shadow_eval.boxes import Detections
from lookout.shadow_eval.matching import match
from lookout.sidecar.samples.store import SampleStore

SIZE = (384, 288)  # the demo scenes' width and height


def direct(store: SampleStore, ids: list[str], scenes: dict[str, Scene]) -> dict[str, float]:
    """The batch's weighted truth and proxies straight from the stored detections and
    the scenes (original pixels, boxes inside the frame), not through the audit code."""
    totals = np.zeros(6)
    for sample_id in ids:
        sample = store.get(sample_id)
        assert sample is not None and sample.inclusion_probability is not None
        scene = scenes[sample_id]

        def detections(rows) -> Detections:
            boxes = np.clip(np.array([r["box"] for r in rows], np.float32).reshape(-1, 4),
                            0, [*SIZE, *SIZE])
            classes = [CLASSES.index(r["class"]) for r in rows]
            return Detections.from_arrays(boxes, [r["score"] for r in rows], classes)

        found = detections(sample.primary_detections or [])
        pseudo = detections(sample.reference_detections or [])
        truth = Detections.from_arrays(np.clip(scene.boxes, 0, [*SIZE, *SIZE]),
                                       np.ones(len(scene.classes)), scene.classes)
        audited, proxy = match(found, truth), match(found, pseudo)
        totals += np.array([audited.matched, len(found), len(truth), proxy.matched,
                            len(found), len(pseudo)]) / sample.inclusion_probability
    return {"precision": totals[0] / totals[1], "recall": totals[0] / totals[2],
            "precision_proxy": totals[3] / totals[4], "recall_proxy": totals[3] / totals[5]}
