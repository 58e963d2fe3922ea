"""What became of one observation, a closed set: light, so the request-path process can
initialise the counter without importing the analysis."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What became of one observation: the `outcome` label of lookout_observations_total."""

    ANALYSED = "analysed"
    PARSE_FAILED = "parse_failed"
    NOT_ANALYSED = "not_analysed"  # no 2xx exchange with a body: nothing to decode
    ERROR = "error"  # the analysis itself failed (counted as a component error too)
    LOST = "lost"  # a worker died holding it
