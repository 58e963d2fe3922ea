"""Names for lookout's shared-memory segments, and the removal of what a killed lookout
left behind.

The analysis channel and the tap's counters live in `/dev/shm`, which in a pod is a
memory-backed `emptyDir` that outlives the container: a sidecar killed outright (the
OOM killer, a liveness probe's SIGKILL) leaves its segments there, and its successor
would find the volume full and could not start. So each lookout holds an exclusive
`flock` on `lookout-<instance>.lock` while it lives and names its segments
`lookout-<instance>-...`; at start-up, an instance whose lock anyone can take is gone,
and its segments go with its lock file. A lock is taken before its file gets its name,
so a sweeper never sees a living instance's lock free.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets

SHM_PATH = "/dev/shm"
_PREFIX, _LOCK = "lookout-", ".lock"

log = logging.getLogger("lookout.sidecar")


class SegmentOwner:
    """This process's segment names, and the lock that says they are in use."""

    def __init__(self, directory: str = SHM_PATH) -> None:
        self.directory = directory
        self.instance = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.removed = remove_orphans(directory)
        if self.removed:
            log.warning("removed %d shared-memory segments a killed lookout left in %s",
                        len(self.removed), directory)
        self._lock = _hold(directory, self.instance)

    def name(self, what: str) -> str:
        """A segment's name as `shm_open` takes it."""
        return f"/{self.instance}-{what}"

    def close(self) -> None:
        """After the segments themselves are gone."""
        if self._lock < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, self.instance + _LOCK))
        os.close(self._lock)
        self._lock = -1


def _hold(directory: str, instance: str) -> int:
    making = os.path.join(directory, f".{instance}.locking")
    descriptor = os.open(making, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.rename(making, os.path.join(directory, instance + _LOCK))
    return descriptor


def remove_orphans(directory: str = SHM_PATH) -> list[str]:
    """The segments (and lock files) of every instance whose lock is free: removed."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for entry in entries:
        if not (entry.startswith(_PREFIX) and entry.endswith(_LOCK)):
            continue
        path = os.path.join(directory, entry)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another lookout's sweep got there first
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            owned = entry.removesuffix(_LOCK) + "-"
            for segment in os.listdir(directory):
                if segment.startswith(owned):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, segment))
                        removed.append(segment)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(descriptor)
    return removed
