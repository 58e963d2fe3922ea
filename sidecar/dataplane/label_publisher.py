"""Discovered model labels decided from the tap's exact counters, in the lookout
process, and published to the analysis workers (`label_file.py`).

Each refresh (once a second, and before every scrape) sums each raw model name's
exchanges and 2xx answers over Envoy's threads; what is new since the last refresh
admits a name (its second 2xx) or keeps its label alive, and names idle for
`model_label_idle_seconds` give their slots back. A released name's counts up to its
release were exported under its own label; `readings()` subtracts them, so its later
traffic counts as `other` from zero and no series jumps.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

from lookout.sidecar.dataplane.tap_counters import SlotReading, TapCounters, http_status
from lookout.sidecar.processes.label_file import write_labels
from lookout.sidecar.served_models import ModelLabels

Key = tuple[str, int, int, int]  # raw model, route, code, flags


def _key(reading: SlotReading) -> Key:
    return reading.model, reading.route, reading.code, reading.flags


def _combine(a: SlotReading, b: SlotReading, sign: int) -> SlotReading:
    return dataclasses.replace(
        a, count=a.count + sign * b.count,
        duration_sum=a.duration_sum + sign * b.duration_sum,
        upstream_count=a.upstream_count + sign * b.upstream_count,
        upstream_sum=a.upstream_sum + sign * b.upstream_sum,
        request_bytes_sum=a.request_bytes_sum + sign * b.request_bytes_sum,
        response_bytes_sum=a.response_bytes_sum + sign * b.response_bytes_sum,
        buckets=tuple(x + sign * y for x, y in zip(a.buckets, b.buckets, strict=True)),
        exemplar=a.exemplar or b.exemplar)


class LabelPublisher:
    def __init__(self, counters: TapCounters, labels: ModelLabels, path: str) -> None:
        self._counters = counters
        self._labels = labels
        self._path = path
        self._seen: dict[str, tuple[int, int]] = {}  # raw name -> (exchanges, 2xx)
        self._released: dict[Key, SlotReading] = {}  # what released labels reported
        self._published: dict[str, str] | None = None
        self._lock = threading.Lock()  # the event loop refreshes; a scrape's thread reads
        self.refresh()

    def _summed(self) -> dict[Key, SlotReading]:
        """The counters by key, summed over Envoy's threads."""
        summed: dict[Key, SlotReading] = {}
        for reading in self._counters.slots_in_use():
            key = _key(reading)
            before = summed.get(key)
            summed[key] = reading if before is None else _combine(before, reading, 1)
        return summed

    def refresh(self) -> None:
        with self._lock:  # one reading at a time: each is compared with the last
            self._refresh(self._summed())

    def _refresh(self, summed: dict[Key, SlotReading]) -> None:
        totals: dict[str, tuple[int, int]] = {}
        for (model, *_), reading in summed.items():
            if model:
                exchanges, answered = totals.get(model, (0, 0))
                ok = reading.count if 200 <= http_status(reading) < 300 else 0
                totals[model] = (exchanges + reading.count, answered + ok)
        for model, (exchanges, answered) in totals.items():
            before = self._seen.get(model, (0, 0))
            if exchanges > before[0]:
                new_ok = answered - before[1]
                self._labels.answered(model, 200 if new_ok else 0, max(new_ok, 1))
        self._seen = totals
        released = set(self._labels.release_idle())
        for key, reading in summed.items():
            if key[0] in released:
                self._released[key] = reading
        discovered = {name: self._labels.known[name] for name in self._labels.discovered}
        if discovered != self._published:
            write_labels(self._path, discovered)
            self._published = discovered

    def readings(self) -> Iterator[SlotReading]:
        """The counters as `/metrics` exports them: summed over threads, less what a
        released label had already reported."""
        with self._lock:
            summed = self._summed()
            self._refresh(summed)
            released = dict(self._released)
        for key, reading in summed.items():
            reported = released.get(key)
            if reported is None:
                yield reading
            elif reading.count > reported.count:
                yield _combine(reading, reported, -1)
