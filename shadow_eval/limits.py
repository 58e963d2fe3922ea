"""What the drift detector is made of, as plain names and numbers: the configuration
checks of the request-path process need them without importing the detector (and numpy
and scipy with it). The detector's own modules import them from here."""

from __future__ import annotations

INPUT_FEATURES = ("brightness", "contrast", "saturation", "sharpness", "resolution",
                  "aspect_ratio")
OUTPUT_FEATURES = ("detections", "confidence", "box_size", "class")
FEATURES = INPUT_FEATURES + OUTPUT_FEATURES
# features whose values are categories, not magnitudes
CATEGORICAL = frozenset({"resolution", "aspect_ratio", "class"})
MIN_BASELINE_VALUES = 50  # per feature, for a profile the detector can test against
