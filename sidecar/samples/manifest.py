"""A flush's manifest: one JSON object a line per sample, everything the fleet's gallery
and `lookout samples` filter and show, with the pod's name and the object keys.

JSON Lines rather than Parquet: a flush holds tens of samples, and at that size JSON
Lines is cheaper to write and to read back (`bench/samples_store.py` measures both;
docs/SAMPLES.md has the figures), needs nothing beyond orjson, and a person can read a
manifest with `aws s3 cp ... -`. A line this version does not understand (a newer
field) is kept, its unknown keys ignored; a line that is not JSON is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import orjson

from lookout.sidecar.samples.store import Sample

_FIELDS = {f.name for f in fields(Sample)}


def encode(samples: Iterable[Sample]) -> bytes:
    """Each sample as it is stored (its `file` keys already the object keys)."""
    lines = []
    for sample in samples:
        row: dict[str, Any] = {name: getattr(sample, name) for name in _FIELDS}
        row["classes"] = list(sample.classes)
        lines.append(orjson.dumps(row))
    return b"\n".join(lines) + b"\n"


def decode(data: bytes) -> tuple[list[Sample], int]:
    """The samples of a manifest, and how many lines could not be read."""
    samples, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            row = {key: value for key, value in row.items() if key in _FIELDS}
            row["classes"] = tuple(row.get("classes") or ())
            samples.append(Sample(**row))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            bad += 1
    return samples, bad
