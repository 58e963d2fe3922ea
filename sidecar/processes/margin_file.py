"""The trust bands' margin factors, shared between processes through one small file.

The lookout process reads the audit records (`samples/audit_trust.py` decides each
model's factor) and writes the factors here, atomically, the way it publishes the
discovered labels (`label_file.py`); the lead analysis worker's trust signal looks at
the file when a window closes, re-reading it only when its (inode, mtime) changed. The
file holds a pickle, the one serialisation between lookout's processes (`wire.py`).

Fail-open: no file means factor 1 for every model; a file that cannot be read means
factor 1 too, counted by the `failed` callback, since a narrowed band is a refinement
and never a reason to stop judging."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from lookout.sidecar.processes import wire

log = logging.getLogger(__name__)

MARGINS_FILE = "trust-margins.pickle"  # in lookout's private directory
COMPONENT = "trust_margins"  # the `component` label of an unreadable file


def write_margins(path: str, factors: Mapping[str, float]) -> None:
    staged = f"{path}.{os.getpid()}.new"
    with open(staged, "wb") as file:
        file.write(wire.dumps({"factors": {str(m): float(f) for m, f in factors.items()}}))
    os.replace(staged, path)


def read_margins(path: str) -> dict[str, float]:
    """The factors in the file; OSError or ValueError when it cannot be read."""
    with open(path, "rb") as file:
        document = wire.loads(file.read(), dict)
    found = document.get("factors")
    if not isinstance(found, dict):
        raise ValueError(f"{path}: no factors")
    return {str(model): float(factor) for model, factor in found.items()}


class FollowedMargins:
    """The factors as the lookout process last published them."""

    def __init__(self, path: str, failed: Callable[[], None] = lambda: None) -> None:
        self._path = path
        self._failed = failed
        self._identity: tuple[int, int] | None = None
        self._factors: dict[str, float] = {}
        self._warned = False  # one warning until the file reads again

    def factor(self, model: str) -> float:
        """`model`'s margin factor (1 unless an audit narrowed it); a stat when called,
        a read only when the file changed."""
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            self._identity, self._factors = None, {}
            return 1.0
        except OSError as error:
            return self._unreadable(error)
        identity = (status.st_ino, status.st_mtime_ns)
        if identity != self._identity:
            try:
                self._factors = read_margins(self._path)
            except (OSError, ValueError) as error:
                return self._unreadable(error)
            self._identity, self._warned = identity, False
        return self._factors.get(model, 1.0)

    def _unreadable(self, error: Exception) -> float:
        self._identity, self._factors = None, {}
        self._failed()
        if not self._warned:
            self._warned = True
            log.warning("trust margins: cannot read %s (%s): the bands keep their margin",
                        self._path, error)
        return 1.0
