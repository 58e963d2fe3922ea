"""The file-descriptor budget, checked at start-up: every cap lookout sets must fit in
RLIMIT_NOFILE, or an idle-socket flood on one port could starve the others.

lookout raises its soft limit to the hard one (Envoy and the workers inherit it), then
adds up what its caps allow open at once: Envoy's client connections (both data ports
and its admin socket), the upstream clusters' connections, the admin port's cap, the
analysis rings and their wake-up FIFOs, the sample store, and a reserve for the
process's own files. The sum is conservative (Envoy and lookout are separate processes
with a table each); a sum that does not fit stops start-up, naming the settings.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from lookout.sidecar.dataplane.envoy_config import (
    downstream_connection_limit,
    upstream_connection_limit,
)

PROCESS_RESERVE = 128  # logs, the executor's files, the probe, worker metric files
PER_RING = 2  # the ring's FIFO, held by the tap and by its worker
SAMPLE_STORE = 16  # SQLite's database, journal and shared memory, the files in flight


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """What the budget adds up (`settings.of(BudgetSettings, config)`)."""

    max_client_connections: int
    grpc_listen: object  # config.Address or None
    upstream_pool_size: int
    admin_max_connections: int
    envoy_concurrency: int
    sample_dir: str


class BudgetError(ValueError):
    """The caps cannot fit in the descriptor limit; the message names the settings."""


def raise_file_limit() -> int:
    """The soft limit up to the hard one (children inherit it); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def descriptors_needed(settings: BudgetSettings, workers: int) -> dict[str, int]:
    """What each cap allows open at once, by the setting that controls it."""
    clusters = 2 if settings.grpc_listen is not None else 1
    return {
        "max_client_connections": downstream_connection_limit(
            settings.max_client_connections),
        "upstream_pool_size": clusters * upstream_connection_limit(
            settings.upstream_pool_size),
        "admin_max_connections": settings.admin_max_connections,
        "envoy_concurrency": PER_RING * settings.envoy_concurrency * workers,
        "sample_dir": SAMPLE_STORE if settings.sample_dir else 0,
        "reserve": PROCESS_RESERVE,
    }


def check_budget(settings: BudgetSettings, workers: int, limit: int) -> int:
    """Raises BudgetError when the caps cannot fit in `limit` descriptors; returns the
    sum they need."""
    needed = descriptors_needed(settings, workers)
    total = sum(needed.values())
    if limit != resource.RLIM_INFINITY and total > limit:
        parts = " + ".join(f"{count} ({name})" for name, count in needed.items() if count)
        raise BudgetError(
            f"max_client_connections, admin_max_connections: the connection caps need "
            f"{total} file descriptors ({parts}) but RLIMIT_NOFILE allows {limit}; lower "
            f"max_client_connections (Envoy allows 2 x {settings.max_client_connections} "
            f"client connections), admin_max_connections "
            f"({settings.admin_max_connections}) or upstream_pool_size, or raise the "
            f"container's nofile limit")
    return total
