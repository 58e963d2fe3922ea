"""The newest audits of the store as gauges on `/metrics`, so dashboards and alerts see
what the labels found beside the live proxies.

Read off the request path: `AuditGauges.refresh` runs in a thread of the lookout process
every `AUDIT_REFRESH_SECONDS` and `collect` only hands out what the last refresh built.
A refresh that fails (a store that is down, a record that is not JSON) is counted in
`lookout_component_errors_total{component="audit"}`, logged, and the last good gauges
stay: an audit's numbers do not go stale in a minute.

Labels stay bounded: only the pod's own models are exported, at most
`MAX_AUDITED_VERSIONS` versions each (the newest audits), and the classes the model is
configured with (else the first `MAX_AUDIT_CLASSES` of the audit, by name). A class
outside them is left out rather than pooled into `other`, since its interval cannot be
pooled from the record (only the every-class row `all` is exact).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from lookout.sidecar.samples.audit_records import ALL_CLASSES, RATES
from lookout.slo import catalog

log = logging.getLogger(__name__)

COMPONENT = "audit"
AUDIT_REFRESH_SECONDS = 60.0
MAX_AUDITED_VERSIONS = 3
MAX_AUDIT_CLASSES = 100
# quantity label -> how it is read from one rate's entry of the record
QUANTITIES = ("audited", "lower", "upper", "proxy")


def newest_audits(records: Iterable[Mapping[str, Any]], models: Mapping[str, Sequence[str]]
                  ) -> list[Mapping[str, Any]]:
    """The newest estimated audit per (model, version) of the pod's models, at most
    `MAX_AUDITED_VERSIONS` versions a model, newest first."""
    chosen: dict[tuple[str, str], Mapping[str, Any]] = {}
    versions: dict[str, int] = {}
    ordered = sorted((r for r in records if r.get("status") == "estimated"
                      and r.get("model") in models and r.get("estimates")),
                     key=lambda r: -float(r.get("estimated") or r.get("created") or 0))
    for record in ordered:
        model, version = str(record["model"]), str(record.get("version", ""))
        if (model, version) in chosen or versions.get(model, 0) >= MAX_AUDITED_VERSIONS:
            continue
        chosen[(model, version)] = record
        versions[model] = versions.get(model, 0) + 1
    return list(chosen.values())


def audit_time(record: Mapping[str, Any]) -> float:
    """When the audited traffic ends (the window's `until`), so time() - it is how old
    the evidence is, whenever the labels came back."""
    window = record.get("window") or {}
    return float(window.get("until") or record.get("created") or 0.0)


def _classes(estimates: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    audited = sorted(name for name in estimates if name != ALL_CLASSES)
    kept = [name for name in audited if name in names] if names \
        else audited[:MAX_AUDIT_CLASSES]
    return [ALL_CLASSES, *kept] if ALL_CLASSES in estimates else kept


def _quantities(entry: Mapping[str, Any]) -> dict[str, float]:
    interval = entry.get("interval") or (None, None)
    values = {"audited": entry.get("audited"), "lower": interval[0], "upper": interval[1],
              "proxy": entry.get("proxy")}
    return {name: float(value) for name, value in values.items() if value is not None}


def audit_families(records: Iterable[Mapping[str, Any]],
                   models: Mapping[str, Sequence[str]]) -> list[Metric]:
    """The catalog's audit gauges for `records` (`models`: each exported model's class
    names, empty when not configured)."""
    estimate = GaugeMetricFamily(catalog.AUDIT_ESTIMATE.name, catalog.AUDIT_ESTIMATE.help,
                                 labels=catalog.AUDIT_ESTIMATE.labels)
    timestamp = GaugeMetricFamily(catalog.AUDIT_TIMESTAMP.name, catalog.AUDIT_TIMESTAMP.help,
                                  labels=catalog.AUDIT_TIMESTAMP.labels)
    images = GaugeMetricFamily(catalog.AUDIT_IMAGES.name, catalog.AUDIT_IMAGES.help,
                               labels=catalog.AUDIT_IMAGES.labels)
    for record in newest_audits(records, models):
        model, version = str(record["model"]), str(record.get("version", ""))
        timestamp.add_metric([model, version], audit_time(record))
        images.add_metric([model, version], float((record.get("labels") or {}).get("random", 0)))
        estimates = record["estimates"]
        for name in _classes(estimates, models[model]):
            for rate in RATES:
                for quantity, value in _quantities(estimates[name].get(rate) or {}).items():
                    estimate.add_metric([model, version, name, rate, quantity], value)
    return [estimate, timestamp, images]


class AuditGauges:
    """A metrics source (`SidecarMetrics.add_source`) of the store's newest audits."""

    def __init__(self, models: Mapping[str, Sequence[str]], failed: Callable[[], None]
                 ) -> None:
        """`models`: each exported model's class names; `failed`: counts a failed
        refresh."""
        self._models = dict(models)
        self._failed = failed
        self._families: list[Metric] = audit_families((), self._models)

    def refresh_from(self, read: Callable[[], Iterable[Mapping[str, Any]]]
                     ) -> list[Mapping[str, Any]] | None:
        """The gauges of the records `read` returns now, and those records for other
        readers (None when they could not be read); never raises (fail-open)."""
        try:
            records = list(read())
            self._families = audit_families(records, self._models)
        except Exception as error:  # any failure is counted, never raised (fail-open)
            self._failed()
            log.warning("audit gauges: cannot read the audit records: %s", error)
            return None
        return records

    def collect(self) -> list[Metric]:
        return self._families
