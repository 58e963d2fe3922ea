"""The stages after a stage: each gets every analysis in turn; one that raises is
counted under its own name and logged (once a minute), and the others still get it."""

from __future__ import annotations

import logging
from typing import Any

from lookout.sidecar.runtime.logs import FailureLog
from lookout.sidecar.runtime.metrics import SidecarMetrics

log = logging.getLogger(__name__)


class Listeners:
    """Calls `method` of every listener with an analysis (and what else the stage adds)."""

    def __init__(self, metrics: SidecarMetrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._listeners: list[Any] = []
        self._failures = FailureLog(log)

    def add(self, listener: Any) -> None:
        self._listeners.append(listener)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def __iter__(self):
        return iter(self._listeners)

    def send(self, analysis: Any, *more: Any) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, self._method)(analysis, *more)
            except Exception:
                self._metrics.component_error(listener.name)
                self._failures.exception(listener.name, "%s failed on %s", listener.name,
                                         analysis.observation.path)
