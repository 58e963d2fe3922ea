"""The last stage of an analysis worker that is not the lead: each analysis goes to the
lead's reference stage through a ring. Full: dropped and counted.

It goes without the bodies and without its decoded pixels: those are a full frame at the
reference model's input size or more (a megabyte for 640x480, six for a 4K frame at
half scale), where the encoded image it keeps is tens of kilobytes, and the lead needs
pixels only for the share its reference model evaluates or its sampler keeps; it decodes
those once, on first use (`analysis.decoded_pixels`). The drift features computed here
travel with it, so the lead never computes them again."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.pipeline.stage import HandOn
from lookout.sidecar.processes import wire


class Forwarder:
    name = "forwarder"

    def __init__(self, ring: Ring, dropped: Callable[[], None]) -> None:
        self._ring = ring
        self._dropped = dropped

    def offer(self, analysis: Analysis) -> bool:
        slim = dataclasses.replace(analysis, decoded=None, observation=dataclasses.replace(
            analysis.observation, request_body=b"", response_body=b""))
        if not self._ring.put([wire.dumps(slim)]):
            self._dropped()
        return False

    def start(self, hand_on: HandOn) -> None:
        """Nothing to start: the ring is the worker's."""

    def drain(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        """The worker closes the ring once every stage is done."""
