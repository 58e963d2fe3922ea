"""Prometheus registry built from the catalog, with O(1) recording for the request path."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from lookout.slo import catalog
from lookout.slo.catalog import MetricSpec, MetricType


def _build(spec: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.type is MetricType.COUNTER:
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.type is MetricType.GAUGE:  # the mode matters only in worker processes
        return Gauge(spec.name, spec.help, spec.labels, registry=registry,
                     multiprocess_mode="livemax")
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


class SidecarMetrics:
    """Every catalog metric registered in one registry, plus cached label children, and
    the other sources (analysis workers) that one `collect` merges in.

    Label children are cached in small dicts because prometheus_client's own `labels()`
    lookup costs several microseconds per call.
    """

    def __init__(self, model: str, version: str, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model = model
        self.version = version
        self._by_name: dict[str, MetricWrapperBase] = {
            spec.name: _build(spec, self.registry) for spec in catalog.ALL
        }
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self._queue_dropped: dict[str, Counter] = {}
        self._component_errors: dict[str, Counter] = {}
        self._observations: dict[str, Counter] = {}
        self._parse_failures: dict[str, Counter] = {}
        self._sources: list[Collector] = []
        self._views: dict[tuple[str, str], SidecarMetrics] = {}

    def labelled(self, model: str, version: str) -> SidecarMetrics:
        """The same registry under other `model` and `version` labels: what one model of
        a multi-model pod records through. Views are kept, so children stay cached."""
        if (model, version) == (self.model, self.version):
            return self
        key = (model, version)
        view = self._views.get(key)
        if view is None:
            view = copy.copy(self)
            view.model, view.version = model, version
            view._observations = {}
            view._parse_failures = {}
            self._views[key] = view
        return view

    def add_source(self, source: Collector) -> None:
        """Another process's metrics, exported under the same names by `collect`."""
        self._sources.append(source)

    def collect(self) -> list[Metric]:
        """The registry and every source as one exposition: what /metrics serves."""
        if not self._sources:
            return list(self.registry.collect())
        return merge([self.registry, *self._sources])

    def sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        wanted = labels or {}
        for family in self.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == wanted:
                    return sample.value
        return None

    def __getitem__(self, spec: MetricSpec) -> MetricWrapperBase:
        return self._by_name[spec.name]

    def set_model_info(self, sha256: str = "", role: str = "primary", served_name: str = "",
                       served_version: str = "") -> None:
        self[catalog.MODEL_INFO].labels(self.model, self.version, sha256, role, served_name,
                                        served_version).set(1)

    def queue_dropped(self, queue: str, count: int = 1) -> None:
        child = self._queue_dropped.get(queue)
        if child is None:
            child = self._queue_dropped[queue] = self[catalog.QUEUE_DROPPED].labels(queue)
        child.inc(count)

    def component_error(self, component: str, count: int = 1) -> None:
        child = self._component_errors.get(component)
        if child is None:
            child = self[catalog.COMPONENT_ERRORS].labels(component)
            self._component_errors[component] = child
        child.inc(count)

    def observed(self, outcome: str, count: int = 1) -> None:
        child = self._observations.get(outcome)
        if child is None:
            child = self[catalog.OBSERVATIONS].labels(self.model, self.version, outcome)
            self._observations[outcome] = child
        child.inc(count)

    def client_refused(self, reason: str, count: int = 1) -> None:
        self[catalog.CLIENT_REFUSED].labels(reason).inc(count)

    def parse_failure(self, reason: str, count: int = 1) -> None:
        child = self._parse_failures.get(reason)
        if child is None:
            child = self[catalog.PARSE_FAILURES].labels(self.model, self.version, reason)
            self._parse_failures[reason] = child
        child.inc(count)

    def initialise(self, queues: Iterable[str] = (), components: Iterable[str] = (),
                   reasons: Iterable[str] = (), refusals: Iterable[str] = (),
                   outcomes: Iterable[str] = ()) -> None:
        """Export the known label values at 0 from the start: `rate()` then reads 0 where
        it would otherwise read nothing, and a dashboard tells "no failures" from "no
        data"."""
        for queue in queues:
            self.queue_dropped(queue, 0)
        for component in components:
            self.component_error(component, 0)
        for reason in reasons:
            self.parse_failure(reason, 0)
        for reason in refusals:
            self.client_refused(reason, 0)
        for outcome in outcomes:
            self.observed(outcome, 0)

    def set_upstream_up(self, up: bool) -> None:
        self[catalog.UPSTREAM_UP].set(1 if up else 0)


def merge(sources: Iterable[Collector]) -> list[Metric]:
    """One family per name, whichever sources report it: samples with the same name and
    labels are added (a counter the proxy and a worker both keep), the rest are listed.
    A source that exports nothing yet for a family adds nothing to it."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple, int]] = {}
    for source in sources:
        for family in source.collect():
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
                values[family.name] = {}
            index = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                at = index.get(key)
                if at is None:
                    index[key] = len(merged.samples)
                    merged.samples.append(sample)
                elif not sample.name.endswith("_created"):
                    before = merged.samples[at]
                    merged.samples[at] = before._replace(
                        value=before.value + sample.value,
                        exemplar=before.exemplar or sample.exemplar)
    return list(families.values())

