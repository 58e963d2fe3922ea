"""Shared-memory segments outlive a killed lookout; the next one removes them by their
owner's free lock, and never a living owner's."""

from __future__ import annotations

import os
from pathlib import Path

from lookout.sidecar.processes.shm_segments import SegmentOwner, remove_orphans


def _make(directory: Path, name: str) -> None:
    (directory / name.lstrip("/")).write_bytes(b"\0" * 64)


def test_a_living_owners_segments_stay_and_a_dead_ones_go(tmp_path: Path) -> None:
    living, dead = SegmentOwner(str(tmp_path)), SegmentOwner(str(tmp_path))
    for owner in (living, dead):
        _make(tmp_path, owner.name("counters"))
        _make(tmp_path, owner.name("ring-0-0"))
    _make(tmp_path, "psm_1234")  # not lookout's naming: never touched
    assert remove_orphans(str(tmp_path)) == []
    os.close(dead._lock)  # the process died: the kernel lets its lock go
    removed = remove_orphans(str(tmp_path))
    assert sorted(removed) == sorted(name.lstrip("/") for name in (
        dead.name("counters"), dead.name("ring-0-0")))
    left = sorted(os.listdir(tmp_path))
    assert left == sorted([living.name("counters").lstrip("/"),
                           living.name("ring-0-0").lstrip("/"),
                           f"{living.instance}.lock", "psm_1234"])
    successor = SegmentOwner(str(tmp_path))
    assert successor.removed == []
    living.close()
    successor.close()
    assert sorted(os.listdir(tmp_path)) == sorted([living.name("counters").lstrip("/"),
                                                   living.name("ring-0-0").lstrip("/"),
                                                   "psm_1234"])


def test_no_shared_memory_directory_is_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_orphans(str(tmp_path / "absent")) == []
