"""The pipeline's reference stage: every analysis passes through it on its way to the
stages after it (drift, the sample recorder), carrying the reference model's result when
the image was evaluated and None when it was not. With a reference model that stage is
the ShadowEvaluator; without one it is `NoReference`, so the chain is wired the same
whatever is switched on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from lookout.sidecar.pipeline.listeners import Listeners
from lookout.sidecar.runtime.metrics import SidecarMetrics

if TYPE_CHECKING:
    from lookout.sidecar.pipeline.analysis import Analysis
    from lookout.sidecar.quality.shadow import ShadowResult

log = logging.getLogger(__name__)


class ReferenceListener(Protocol):
    """A stage after the reference stage; `name` labels its failures."""

    name: str

    def consider(self, analysis: Analysis, reference: ShadowResult | None) -> None: ...


class NoReference:
    """The reference stage when no reference model is configured: passes each analysis
    on at once, without a result."""

    name = "reference"

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.listeners = Listeners(metrics, "consider")

    def add_listener(self, listener: ReferenceListener) -> None:
        self.listeners.add(listener)

    def offer(self, analysis: Analysis) -> None:
        self.listeners.send(analysis, None)
