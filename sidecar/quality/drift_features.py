"""Drift features where the image is: in every analysis worker, before the analysis
goes on to the lead worker's one drift detector.

Computing an image's features costs a few milliseconds, the dearest step of analysing a
JPEG upload after its decode; done by the one detector it would cap the whole sidecar at
that one process's rate. Each worker computes the rows of its own share, from the pixels
the analyser decoded once for the chain (at least `drift_image_size`), and the detector,
which must see every row to keep its windows whole, only tests them. An analysis leaves
this stage with `features` set: the row, or an empty row when the image was not sampled
or could not be decoded.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from lookout.shadow_eval.features import FeatureRow, feature_row
from lookout.sidecar.pipeline.analysis import Analysis, decoded_pixels
from lookout.sidecar.pipeline.images import DecodeSize
from lookout.sidecar.pipeline.stage import HandOn
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import DriftSettings

NOT_SAMPLED: FeatureRow = {}


class DriftFeatures:
    name = "drift_features"

    def __init__(self, config: DriftSettings, metrics: SidecarMetrics,
                 class_names: Sequence[str] = (), seed: int | None = None,
                 decode_size: DecodeSize | None = None) -> None:
        self._config = config
        self._names = tuple(class_names)
        self._random = random.Random(seed)
        size = config.drift_image_size
        self.decode_size = decode_size or DecodeSize()
        self.decode_size.need(size, size)

    def row(self, analysis: Analysis) -> FeatureRow:
        """The image's features, or NOT_SAMPLED: not a 2xx exchange (an error's image
        says nothing about the traffic), not in `drift_sample_share`, or no image."""
        if analysis.image is None or not 200 <= analysis.observation.status < 300 \
                or self._random.random() >= self._config.drift_sample_share:
            return NOT_SAMPLED
        decoded = decoded_pixels(analysis, self.decode_size)
        image = analysis.image
        if decoded is None or image is None:
            return NOT_SAMPLED
        return feature_row(decoded.rgb, image.width, image.height, analysis.detections,
                           self._names, self._random, self._config.drift_image_size)

    def offer(self, analysis: Analysis) -> bool:
        analysis.features = self.row(analysis)
        return False

    def start(self, hand_on: HandOn) -> None:
        """Nothing to start: it finishes each analysis in the call."""

    def drain(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        """Holds nothing."""
