"""The one serialisation between lookout's Python processes: pickle, at its highest
protocol. What crosses: an analysis a worker forwards to the lead (a ring record), the
discovered labels lookout's process publishes to the workers (a file), the trust bands'
margin factors it publishes to the lead (a file), and each
worker's spec (pickled by multiprocessing at spawn). The tap's records and counters are
not Python's: they are the C layouts of `tap/PROTOCOL.md`.

Only lookout's own processes write what is read here (private rings and a private
directory), which is what makes pickle acceptable."""

from __future__ import annotations

import pickle
from typing import TypeVar

T = TypeVar("T")


def dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes | memoryview, kind: type[T]) -> T:
    """A `kind` read back; ValueError for anything else, or for bytes that are not a
    pickle at all."""
    try:
        value = pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
            TypeError) as error:
        raise ValueError(f"not a pickled {kind.__name__}: {error}") from None
    if not isinstance(value, kind):
        raise ValueError(f"expected a {kind.__name__}, read a {type(value).__name__}")
    return value
