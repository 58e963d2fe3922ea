"""The pipeline's reference stage: every analysis passes through it on its way to the
stages after it (drift, the sample recorder), its `reference` set to the reference
model's result when the image was evaluated and None when it was not. With a reference
model that stage is the ShadowEvaluator; without one it is `NoReference`, so the chain
is wired the same whatever is switched on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookout.sidecar.pipeline.stage import HandOn

if TYPE_CHECKING:
    from lookout.sidecar.pipeline.analysis import Analysis


class NoReference:
    """The reference stage when no reference model is configured: every analysis goes
    on at once, without a result."""

    name = "reference"

    def offer(self, analysis: Analysis) -> bool:
        return False

    def start(self, hand_on: HandOn) -> None:
        """Nothing to start."""

    def drain(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        """Holds nothing."""
