"""Field paths into JSON documents, as operators write them in configuration:
`inputs[0].data`, `result.objects` or `images.0.results`."""

from __future__ import annotations

import re
from typing import Any

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def walk(document: Any, path: str) -> Any:
    """The value at `path`, or None when any step is missing. A step is an object key,
    `[n]`, or a bare number (which indexes a list)."""
    value = document
    for name, index in _STEP.findall(path):
        if isinstance(value, list) and (index or name).isascii() and (index or name).isdigit():
            position = int(index or name)
            if position >= len(value):
                return None
            value = value[position]
        elif isinstance(value, dict) and name and name in value:
            value = value[name]
        else:
            return None
    return value
