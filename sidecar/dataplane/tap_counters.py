"""The tap's exact RED counters (`tap/PROTOCOL.md`, "Counters segment") as Prometheus
families under the catalog's request metrics.

The C filter counts every finished exchange per Envoy worker thread in a table keyed by
the raw model name, route index, code and flags. Nothing here is on the request path:
a scrape sums the areas, maps each raw model name to its label (configured, discovered
or `other`) and turns codes into today's `code` values (`200`, `sidecar_503`, `OK`,
`UNAVAILABLE`). Drops in the analysis rings never touch these numbers.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from lookout.sidecar.dataplane.routes import OTHER_ROUTE
from lookout.sidecar.served_models import ModelLabels
from lookout.slo import catalog

MAGIC = 0x31544E434B4F4F4C  # "LOOKCNT1"
LAYOUT = 1
HEADER_BYTES = 1024
AREA_HEAD_BYTES = 128
SLOT_BYTES = 1216
MAX_BOUNDS = 31
BUCKETS = 32
FLAG_GRPC, FLAG_LOCAL, FLAG_NO_RESPONSE = 1, 2, 4
AREA_FIELDS = ("records", "ring_full", "truncated_budget", "truncated_body", "unrecorded",
               "exchanges", "slots_used", "spans_only")
_SLOT_HEAD = struct.Struct("<QQ64sIII4x6Q")
_BUCKETS = struct.Struct(f"<{4 * BUCKETS}Q")
_EXEMPLAR = struct.Struct("<16sQQQ")
# gRPC's status names by number (grpc.StatusCode's, written out: the lookout process
# imports no grpc without a gRPC port)
_GRPC_NAMES = dict(enumerate((
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED")))


@dataclass(frozen=True, slots=True)
class SlotReading:
    model: str
    route: int
    code: int
    flags: int
    count: int
    duration_sum: float
    upstream_count: int
    upstream_sum: float
    request_bytes_sum: int
    response_bytes_sum: int
    buckets: tuple[int, ...]  # four arrays of BUCKETS, non-cumulative
    exemplar: tuple[str, float, float] | None  # trace id, seconds, unix time


def code_label(code: int, flags: int) -> str:
    """The `code` label as the Python request path wrote it; a client that went away
    before any answer is lookout's 499 (CANCELLED on gRPC)."""
    if flags & FLAG_NO_RESPONSE:
        return "sidecar_CANCELLED" if flags & FLAG_GRPC else "sidecar_499"
    name = _GRPC_NAMES.get(code, "UNKNOWN") if flags & FLAG_GRPC else str(code)
    return f"sidecar_{name}" if flags & FLAG_LOCAL else name


def segment_bytes(threads: int, slots: int) -> int:
    return HEADER_BYTES + threads * (AREA_HEAD_BYTES + slots * SLOT_BYTES)


class TapCounters:
    """The counters segment: created (and unlinked at `close`) by lookout, written by
    the tap, read by `/metrics`."""

    def __init__(self, name: str, threads: int, slots: int,
                 latency_bounds: Sequence[float], byte_bounds: Sequence[float]) -> None:
        if len(latency_bounds) > MAX_BOUNDS or len(byte_bounds) > MAX_BOUNDS:
            raise ValueError("the tap keeps at most 31 finite bucket bounds")
        self.name, self.threads, self.slots = name, threads, slots
        self.latency_bounds = tuple(latency_bounds)
        self.byte_bounds = tuple(byte_bounds)
        size = segment_bytes(threads, slots)
        descriptor = os.open(f"/dev/shm/{name.lstrip('/')}",
                             os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(descriptor, 0, size)
            self._map = mmap.mmap(descriptor, size)
        finally:
            os.close(descriptor)
        header = struct.pack("<8Q", MAGIC, LAYOUT, threads, slots, len(latency_bounds),
                             len(byte_bounds), 0, 0)
        self._map[:len(header)] = header
        ns = [round(bound * 1e9) for bound in latency_bounds]
        struct.pack_into(f"<{len(ns)}Q", self._map, 64, *ns)
        struct.pack_into(f"<{len(byte_bounds)}Q", self._map, 320,
                         *(int(bound) for bound in byte_bounds))

    def _u64(self, offset: int) -> int:
        return struct.unpack_from("<Q", self._map, offset)[0]

    @property
    def untapped(self) -> int:
        return self._u64(48)

    def area_totals(self) -> dict[str, int]:
        """Each area's head words, summed over the Envoy worker threads."""
        totals = dict.fromkeys(AREA_FIELDS, 0)
        for thread in range(self.threads):
            start = self._area(thread)
            values = struct.unpack_from(f"<{len(AREA_FIELDS)}Q", self._map, start)
            for name, value in zip(AREA_FIELDS, values, strict=True):
                totals[name] += value
        return totals

    def _area(self, thread: int) -> int:
        return HEADER_BYTES + thread * (AREA_HEAD_BYTES + self.slots * SLOT_BYTES)

    def slots_in_use(self) -> Iterator[SlotReading]:
        for thread in range(self.threads):
            base = self._area(thread) + AREA_HEAD_BYTES
            for index in range(self.slots):
                start = base + index * SLOT_BYTES
                if self._u64(start) != 1:
                    continue
                yield self._read_slot(start)

    def _read_slot(self, start: int) -> SlotReading:
        (_, _, raw_model, route, code, flags, count, duration, upstream_count,
         upstream, request_bytes, response_bytes) = _SLOT_HEAD.unpack_from(self._map, start)
        buckets = _BUCKETS.unpack_from(self._map, start + 144)
        trace_id, exemplar_ns, exemplar_at, sequence = _EXEMPLAR.unpack_from(
            self._map, start + 1168)
        exemplar = (trace_id.hex(), exemplar_ns / 1e9, exemplar_at / 1e9) \
            if sequence else None
        model = raw_model.split(b"\0", 1)[0].decode("utf-8", "replace")
        return SlotReading(model, route, code, flags, count, duration / 1e9,
                           upstream_count, upstream / 1e9, request_bytes, response_bytes,
                           buckets, exemplar)

    def close(self) -> None:
        self._map.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{self.name.lstrip('/')}")


@dataclass
class _Histogram:
    buckets: list[int]
    total: float = 0.0
    exemplars: dict[int, tuple[str, float, float]] | None = None


class RedCollector:
    """`/metrics`'s view of the counters: the catalog's five request metrics, labelled
    as the Python request path labelled them."""

    def __init__(self, counters: TapCounters, routes: Sequence[str],
                 models: ModelLabels,
                 readings: Callable[[], Iterable[SlotReading]] | None = None) -> None:
        """`readings`: the counters as they are exported (the `LabelPublisher`'s, which
        also decides the discovered labels); by default every slot as it stands."""
        self._counters = counters
        self._routes = (*routes, OTHER_ROUTE)
        self._models = models
        self._readings = readings or counters.slots_in_use

    def _labels(self, reading: SlotReading) -> tuple[str, str, str]:
        model, version = self._models.label_name(reading.model or None)
        route = self._routes[reading.route] if reading.route < len(self._routes) \
            else OTHER_ROUTE
        return model, version, route

    def collect(self) -> list[Metric]:
        requests: dict[tuple[str, ...], int] = defaultdict(int)
        histograms: dict[str, dict[tuple[str, str, str], _Histogram]] = {
            spec.name: {} for spec in _HISTOGRAMS}
        for reading in self._readings():
            labels = self._labels(reading)
            requests[(*labels, code_label(reading.code, reading.flags))] += reading.count
            sums = (reading.duration_sum, reading.upstream_sum,
                    float(reading.request_bytes_sum), float(reading.response_bytes_sum))
            for kind, (spec, total) in enumerate(zip(_HISTOGRAMS, sums, strict=True)):
                into = histograms[spec.name].setdefault(labels, _Histogram([0] * BUCKETS))
                part = reading.buckets[kind * BUCKETS:(kind + 1) * BUCKETS]
                into.buckets = [a + b for a, b in zip(into.buckets, part, strict=True)]
                into.total += total
                if kind < 2 and reading.exemplar is not None:
                    self._exemplar(into, reading.exemplar)
        families: list[Metric] = []
        counter = CounterMetricFamily(catalog.REQUESTS.name, catalog.REQUESTS.help,
                                      labels=catalog.REQUESTS.labels)
        for labels, value in requests.items():
            counter.add_metric(list(labels), value)
        families.append(counter)
        for spec in _HISTOGRAMS:
            families.append(self._histogram(spec, histograms[spec.name]))
        return families

    def _exemplar(self, into: _Histogram, exemplar: tuple[str, float, float]) -> None:
        bucket = next((index for index, bound in enumerate(self._counters.latency_bounds)
                       if exemplar[1] <= bound), len(self._counters.latency_bounds))
        kept = into.exemplars or {}
        if bucket not in kept or kept[bucket][2] < exemplar[2]:
            kept[bucket] = exemplar
        into.exemplars = kept

    def _histogram(self, spec: catalog.MetricSpec,
                   values: dict[tuple[str, str, str], _Histogram]) -> Metric:
        bounds = self._counters.latency_bounds if spec.buckets == catalog.LATENCY_BUCKETS \
            else self._counters.byte_bounds
        family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
        for labels, histogram in values.items():
            cumulative, running = [], 0
            for index, bound in enumerate((*bounds, float("inf"))):
                running += histogram.buckets[index]
                exemplar = None
                if histogram.exemplars and index in histogram.exemplars:
                    trace_id, seconds, at = histogram.exemplars[index]
                    exemplar = Exemplar({"trace_id": trace_id}, seconds, at)
                cumulative.append((_bound_text(bound), running, exemplar))
            family.add_metric(list(labels), [(b, v) for b, v, _ in cumulative],
                              histogram.total)
            for sample_index, (_, _, exemplar) in enumerate(cumulative):
                if exemplar is not None:
                    sample = family.samples[-len(cumulative) - 2 + sample_index]
                    family.samples[-len(cumulative) - 2 + sample_index] = \
                        sample._replace(exemplar=exemplar)
        return family


_HISTOGRAMS = (catalog.REQUEST_DURATION, catalog.UPSTREAM_DURATION, catalog.REQUEST_BYTES,
               catalog.RESPONSE_BYTES)


def _bound_text(bound: float) -> str:
    return floatToGoString(bound)


def http_status(reading: SlotReading) -> int:
    if reading.flags & FLAG_GRPC:
        return 200 if reading.code == 0 else 500
    return reading.code
