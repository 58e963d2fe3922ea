"""The pipeline's reference stage: every analysis passes through it on its way to the
stages after it (drift, the sample recorder), carrying the reference model's result when
the image was evaluated and None when it was not. With a reference model that stage is
the ShadowEvaluator; without one it is `NoReference`, so the chain is wired the same
whatever is switched on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics

if TYPE_CHECKING:
    from lookout.sidecar.pipeline.analysis import Analysis
    from lookout.sidecar.quality.shadow import ShadowResult

log = logging.getLogger(__name__)


class ReferenceListener(Protocol):
    """A stage after the reference stage; `name` labels its failures."""

    name: str

    def consider(self, analysis: Analysis, reference: ShadowResult | None) -> None: ...


class Listeners:
    """The stages after the reference stage. One that raises is counted under its own
    name and logged (once a minute); the others still get the analysis."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self._metrics = metrics
        self._listeners: list[ReferenceListener] = []
        self._failures = FailureLog(log)

    def add(self, listener: ReferenceListener) -> None:
        self._listeners.append(listener)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def send(self, analysis: Analysis, reference: ShadowResult | None) -> None:
        for listener in self._listeners:
            try:
                listener.consider(analysis, reference)
            except Exception:
                self._metrics.component_error(listener.name)
                self._failures.exception(listener.name, "%s failed on %s", listener.name,
                                         analysis.observation.path)


class NoReference:
    """The reference stage when no reference model is configured: passes each analysis
    on at once, without a result."""

    name = "reference"

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.listeners = Listeners(metrics)

    def add_listener(self, listener: ReferenceListener) -> None:
        self.listeners.add(listener)

    def offer(self, analysis: Analysis) -> None:
        self.listeners.send(analysis, None)
