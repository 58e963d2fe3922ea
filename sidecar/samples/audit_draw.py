"""The audit's draw: a uniform random batch of one model version's random stratum in a
time window (the samples the `random` draw took, which carry their inclusion
probability, whichever rule filed them: policy.py), optionally topped up from the other
samples for error hunting.

Uniform over the stratum, so each drawn image's inclusion probability is its recorded
one times n/M (M: the stratum's usable samples in the window); the constant cancels in
the ratio estimates, which weight by 1/recorded probability alone. `random` samples
stored before probabilities were recorded cannot be weighted and are not drawn (counted
as `unweighted`). Top-ups are marked in the record and never enter the estimates: they
are chosen for being interesting, so they say nothing of the traffic as a whole.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lookout.sidecar.samples.audit_records import AUDIT_FORMAT
from lookout.sidecar.samples.policy import Strategy
from lookout.sidecar.samples.query import SampleQuery
from lookout.sidecar.samples.store import Sample

if TYPE_CHECKING:
    from lookout.sidecar.samples.fleet_store import FleetStore
    from lookout.sidecar.samples.store import SampleStore

MOST = 1_000_000  # samples of one stratum read to draw from


class DrawError(ValueError):
    """Nothing to draw from, or a request that cannot be met; the message says which."""


def new_batch_id(now: float) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"


def draw_batch(store: SampleStore | FleetStore, model: str, version: str, since: float,
               until: float, size: int, seed: int, top_up: int = 0,
               top_up_strategies: Sequence[str] = (), now: float | None = None
               ) -> tuple[dict[str, Any], list[Sample]]:
    """The batch's record (see audit_records.py) and its samples, random ones first."""
    if size < 1:
        raise DrawError("size: at least one image")
    now = time.time() if now is None else now
    window = SampleQuery(since=since, until=until, model=model, version=version, limit=1000)
    every = sorted(store.iterate(window, MOST), key=lambda s: s.id)
    usable = [s for s in every if s.inclusion_probability]
    unweighted = sum(s.strategy == Strategy.RANDOM.value and not s.inclusion_probability
                     for s in every)
    if not usable:
        raise DrawError(f"no random samples with an inclusion probability for {model} "
                        f"{version} in the window ({unweighted} without one)")
    chooser = random.Random(seed)
    chosen = chooser.sample(usable, min(size, len(usable)))
    extra: list[Sample] = []
    if top_up:
        strata = set(top_up_strategies) or {s.value for s in Strategy} - {Strategy.RANDOM.value}
        others = [s for s in every if not s.inclusion_probability and s.strategy in strata]
        extra = chooser.sample(others, min(top_up, len(others)))
    record: dict[str, Any] = {
        "format": AUDIT_FORMAT, "batch_id": new_batch_id(now), "created": now,
        "status": "drawn", "model": model, "version": version,
        "window": {"since": since, "until": until}, "seed": seed,
        "sizes": {"wanted": size, "random": len(chosen), "top_up": len(extra),
                  "stratum": len(usable), "unweighted": unweighted},
        "random_ids": [s.id for s in chosen], "top_up_ids": [s.id for s in extra],
    }
    return record, [*chosen, *extra]

