"""Drift features where the image is: in every analysis worker, before the analysis
goes on to the lead worker's one drift detector.

Decoding an image at `drift_image_size` and computing its features costs a few
milliseconds, the dearest step of analysing a JPEG upload; done by the one detector it
would cap the whole sidecar at that one process's rate. Each worker computes the rows of
its own share, and the detector, which must see every row to keep its windows whole,
only tests them. An analysis leaves this stage with `features` set: the row, or an empty
row when the image was not sampled or could not be decoded.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from lookout.shadow_eval.features import FeatureRow, feature_row
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.images import decode_rgb
from lookout.sidecar.pipeline.listeners import Listeners
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import DriftSettings

NOT_SAMPLED: FeatureRow = {}


class DriftFeatures:
    name = "drift_features"

    def __init__(self, config: DriftSettings, metrics: SidecarMetrics,
                 class_names: Sequence[str] = (), seed: int | None = None) -> None:
        self._config = config
        self._names = tuple(class_names)
        self._random = random.Random(seed)
        self.listeners = Listeners(metrics, "offer")

    def add_listener(self, listener) -> None:
        self.listeners.add(listener)

    def row(self, analysis: Analysis) -> FeatureRow:
        """The image's features, or NOT_SAMPLED: not a 2xx exchange (an error's image
        says nothing about the traffic), not in `drift_sample_share`, or no image."""
        image = analysis.image
        if image is None or not 200 <= analysis.observation.status < 300 \
                or self._random.random() >= self._config.drift_sample_share:
            return NOT_SAMPLED
        size = self._config.drift_image_size
        try:
            decoded = decode_rgb(image, size, size)
        except (OSError, ValueError):
            return NOT_SAMPLED
        return feature_row(decoded.rgb, image.width, image.height, analysis.detections,
                           self._names, self._random, size)

    def offer(self, analysis: Analysis) -> None:
        self.listeners.send(dataclasses.replace(analysis, features=self.row(analysis)))
