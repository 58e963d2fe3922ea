"""Numbers the configuration checks need from the drift detector, without importing it
(and numpy and scipy with it) into the request-path process. The detector's modules
import them from here, so there is one source."""

from __future__ import annotations

MIN_BASELINE_VALUES = 50  # per feature, for a profile the detector can test against
FEATURE_COUNT = 10  # len(features.FEATURES): checked by tests/shadow_eval/test_drift.py
