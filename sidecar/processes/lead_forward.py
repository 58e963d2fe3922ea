"""The last stage of an analysis worker that is not the lead: each analysis, its bodies
dropped, goes to the lead's reference stage through a ring. Full: dropped and counted."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.processes import wire


class Forwarder:
    name = "forwarder"

    def __init__(self, ring: Ring, dropped: Callable[[], None]) -> None:
        self._ring = ring
        self._dropped = dropped

    def offer(self, analysis: Analysis) -> None:
        slim = dataclasses.replace(analysis, observation=dataclasses.replace(
            analysis.observation, request_body=b"", response_body=b""))
        if not self._ring.put([wire.dumps(slim)]):
            self._dropped()
