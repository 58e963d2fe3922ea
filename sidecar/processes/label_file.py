"""The discovered model labels, shared between processes through one small file.

The lookout process decides which discovered names are labels (it sees every exchange
in the tap's exact counters) and writes them here, atomically (a new file renamed over
the old); the analysis workers label their observations from the same file, so a
model's RED metrics and its detection metrics carry the same `model` label. A follower
looks at the file at most once a second, by its (inode, mtime). The file holds a
pickle, the one serialisation between lookout's processes (`wire.py`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from lookout.sidecar.processes import wire
from lookout.sidecar.served_models import ModelLabels

FOLLOW_SECONDS = 1.0
LABELS_FILE = "model-labels.pickle"  # in lookout's private directory


def write_labels(path: str, discovered: Mapping[str, str]) -> None:
    staged = f"{path}.{os.getpid()}.new"
    with open(staged, "wb") as file:
        file.write(wire.dumps({"discovered": dict(discovered)}))
    os.replace(staged, path)


def read_labels(path: str) -> dict[str, str] | None:
    """The discovered labels in the file; None while there is none (or it is unreadable)."""
    try:
        with open(path, "rb") as file:
            document = wire.loads(file.read(), dict)
    except (OSError, ValueError):
        return None
    found = document.get("discovered")
    if not isinstance(found, dict):
        return None
    return {str(name): str(version) for name, version in found.items()}


class FollowedLabels(ModelLabels):
    """Labels as the lookout process decided them: never admits or releases itself."""

    def __init__(self, *args: Any, path: str,
                 clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self._path = path
        self._follow_clock = clock
        self._looked = -FOLLOW_SECONDS
        self._identity: tuple[int, int] | None = None

    def _follow(self) -> None:
        now = self._follow_clock()
        if now - self._looked < FOLLOW_SECONDS:
            return
        self._looked = now
        try:
            status = os.stat(self._path)
        except OSError:
            return
        identity = (status.st_ino, status.st_mtime_ns)
        if identity == self._identity:
            return
        discovered = read_labels(self._path)
        if discovered is not None:
            self._identity = identity
            self.adopt(discovered)

    def label_name(self, name: str | None) -> tuple[str, str]:
        if name is not None and not self.single:
            self._follow()
        return super().label_name(name)

    def answered(self, name: str | None, status: int, count: int = 1
                 ) -> tuple[str, str] | None:
        labels = self.label_name(name)
        return labels if name is not None and labels[0] == name else None
