"""What every stage of the analysis chain is (`chain.py` declares their order).

A stage gets each analysis in turn through `offer` and fills its own fields of the one
`Analysis` record (features, the reference's result, the drift state). Most finish in
the call and return False: the chain offers the analysis to the next stage. A stage that
works in a thread of its own (the reference model) returns True when it keeps the
analysis, and later hands it on through the `hand_on` the chain gave it at `start`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lookout.sidecar.pipeline.analysis import Analysis

HandOn = Callable[["Analysis"], None]


def end_of_chain(analysis: Analysis) -> None:
    """The hand-on of the last stage: nothing follows it."""


class Stage(Protocol):
    name: str  # the `component` label of its failures

    def offer(self, analysis: Analysis) -> bool:
        """Take one analysis; True when the stage keeps it and hands it on later."""
        ...

    def start(self, hand_on: HandOn) -> None: ...

    def drain(self, timeout: float) -> bool:
        """Hand on what it holds; False when `timeout` seconds were not enough."""
        ...

    def close(self) -> None: ...
