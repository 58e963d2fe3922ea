"""The SLO spec: `slo.yaml` in lookout's own format, or OpenSLO v1 `SLO` objects.

Validation errors name the field (`slos[1].threshold`) and say what would be accepted,
so a spec is fixed from the message alone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from lookout.slo.catalog import PROXY_BIAS_MARGIN, REQUEST_DURATION
from lookout.slo.promql import QueryError, check_counter_query


class SpecError(ValueError):
    """The spec is invalid; the message names the field."""


class Kind(StrEnum):
    AVAILABILITY = "availability"
    LATENCY = "latency"
    QUALITY = "quality"
    DRIFT = "drift"
    RATIO = "ratio"  # OpenSLO ratioMetric: the user's own good/bad and total queries


_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def parse_duration(text: Any, where: str) -> int:
    """`28d`, `6h`, `30m` -> seconds."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise SpecError(f"{where}: {text!r} is not a duration such as 30m, 6h, 28d or 4w")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration (`1h30m` as `90m`)."""
    seconds = round(seconds)
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class RatioQueries:
    """OpenSLO input: PromQL for good (or bad) and total events. `{{window}}` in a query is
    replaced by the window; a query without it is a counter selector, wrapped in
    `sum(rate(...[window]))`."""

    total: str
    good: str = ""
    bad: str = ""


@dataclass(frozen=True, slots=True)
class SLO:
    name: str
    kind: Kind
    objective: float  # e.g. 0.999: the share of good events
    description: str = ""
    threshold: float | None = None  # latency: seconds, a bucket boundary
    route: str = ""  # latency/availability: restrict to one route label value
    proxy: str = ""  # quality: precision or recall
    ratio: RatioQueries | None = None

    @property
    def budget(self) -> float:
        """The error budget as a share of events."""
        return 1.0 - self.objective


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    service: str
    model: str
    slos: tuple[SLO, ...]
    version: str = ""  # restrict to one version label value; empty: all
    period_seconds: int = 28 * 86400
    low_traffic_min_events: int = 100
    # LookoutProxyBiasHigh: how far outside an audit's 95% interval a proxy may lie
    proxy_bias_margin: float = PROXY_BIAS_MARGIN
    window_scale: float = 1.0  # tests only: shrink every window (the period too)
    runbook_base_url: str = "https://github.com/lookout-sre/lookout/blob/main/runbooks"
    # where people reach a sidecar's admin port, for the gallery links (slo/links.py)
    gallery_url: str = "http://127.0.0.1:9090"
    traces: str = "tempo"  # the trace store the debug dashboard searches: tempo or jaeger
    labels: Mapping[str, str] = field(default_factory=dict)
    # a multi-model pod's models (`model: [a, b]`): every SLO holds for each of them,
    # and `model` is the first; empty for a one-model spec
    models: tuple[str, ...] = ()

    @property
    def all_models(self) -> tuple[str, ...]:
        return self.models or (self.model,)

    def for_model(self, model: str) -> ServiceSpec:
        """This spec for one of its models: what per-model rules are generated from."""
        return dataclasses.replace(self, model=model, models=())

    def min_events(self, slo: SLO) -> int:
        """The low-traffic guard: events a burn-rate decision on `slo` must rest on.
        Drift SLOs count time slices, not traffic, so they have no guard."""
        return 0 if slo.kind is Kind.DRIFT else self.low_traffic_min_events

    def selector(self, route: str = "") -> str:
        """The label matchers that pick this service's series."""
        matchers = [f'model="{self.model}"' if len(self.all_models) == 1 else
                    f'model=~"{"|".join(re.escape(m) for m in self.all_models)}"']
        if self.version:
            matchers.append(f'version="{self.version}"')
        if route:
            matchers.append(f'route="{route}"')
        return ",".join(matchers)


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise SpecError(f"{where}.{key}: required")
    return mapping[key]


def _objective(value: Any, where: str) -> float:
    try:
        objective = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {value!r} is not a number") from None
    if objective > 1 and objective < 100:  # written as a percentage
        objective /= 100
    if not 0 < objective < 1:
        raise SpecError(f"{where}: {value!r} must be between 0 and 1 (or 0 and 100 as a "
                        f"percentage), exclusive")
    return objective


def _latency_threshold(value: Any, where: str) -> float:
    try:
        threshold = float(str(value).removesuffix("s").removesuffix("m")) / (
            1000 if str(value).endswith("ms") else 1)
    except ValueError:
        raise SpecError(f"{where}: {value!r} is not a latency such as 0.25, 250ms") from None
    if threshold in REQUEST_DURATION.buckets:
        return threshold
    below = max((b for b in REQUEST_DURATION.buckets if b < threshold), default=None)
    above = min((b for b in REQUEST_DURATION.buckets if b > threshold), default=None)
    nearest = " or ".join(f"{b:g}" for b in (below, above) if b is not None)
    raise SpecError(f"{where}: {threshold:g}s is not a bucket boundary of "
                    f"{REQUEST_DURATION.name}, so the share under it cannot be "
                    f"counted exactly; the nearest boundaries are {nearest}")


def _slo(entry: Any, where: str) -> SLO:
    if not isinstance(entry, Mapping):
        raise SpecError(f"{where}: expected a mapping with name, kind and objective")
    name = str(_require(entry, "name", where))
    if not _NAME.match(name):
        raise SpecError(f"{where}.name: {name!r} must be lower-case letters, digits and "
                        f"dashes (it becomes a label value and a file name)")
    kind_text = str(_require(entry, "kind", where))
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise SpecError(f"{where}.kind: {kind_text!r} is not one of "
                        f"{', '.join(k.value for k in Kind if k is not Kind.RATIO)}") from None
    objective = _objective(_require(entry, "objective", where), f"{where}.objective")
    threshold, proxy = None, ""
    if kind is Kind.LATENCY:
        threshold = _latency_threshold(_require(entry, "threshold", where), f"{where}.threshold")
    if kind is Kind.QUALITY:
        proxy = str(_require(entry, "proxy", where))
        if proxy not in ("precision", "recall"):
            raise SpecError(f"{where}.proxy: {proxy!r} is not precision or recall")
    known = {"name", "kind", "objective", "description", "threshold", "route", "proxy"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    return SLO(name, kind, objective, str(entry.get("description", "")), threshold,
               str(entry.get("route", "")), proxy)


def parse_spec(document: Any, source: str = "slo.yaml") -> ServiceSpec:
    """lookout's own format; see docs/SLO.md."""
    if not isinstance(document, Mapping):
        raise SpecError(f"{source}: expected a mapping with service, model and slos")
    if str(document.get("apiVersion") or "").startswith("openslo/"):
        return from_openslo([document], source)
    slos_raw = _require(document, "slos", source)
    if not isinstance(slos_raw, Sequence) or isinstance(slos_raw, str) or not slos_raw:
        raise SpecError(f"{source}.slos: expected a non-empty list")
    slos = tuple(_slo(entry, f"slos[{i}]") for i, entry in enumerate(slos_raw))
    names = [s.name for s in slos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"slos: duplicate name(s) {', '.join(duplicates)}")
    known = {"service", "model", "version", "period", "slos", "low_traffic_min_events",
             "proxy_bias_margin", "window_scale", "runbook_base_url", "gallery_url", "traces",
             "labels"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise SpecError(f"{source}: unknown field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    return ServiceSpec(**_common(document, source), slos=slos)


def _models(value: Any, source: str) -> tuple[str, ...]:
    """`model: yolo11n`, or `model: [primary, coarse]` for a multi-model pod."""
    models = tuple(str(m) for m in value) if isinstance(value, list) else (str(value),)
    if not models or not all(models) or len(set(models)) != len(models):
        raise SpecError(f"{source}.model: {value!r} must be a model name or a list of "
                        f"distinct names")
    return models


def _common(document: Mapping[str, Any], source: str) -> dict[str, Any]:
    models = _models(_require(document, "model", source), source)
    values: dict[str, Any] = {
        "service": str(_require(document, "service", source)),
        "model": models[0], "models": models if len(models) > 1 else (),
        "version": str(document.get("version", "") or ""),
    }
    if "period" in document:
        values["period_seconds"] = parse_duration(document["period"], "period")
    if "low_traffic_min_events" in document:
        minimum = document["low_traffic_min_events"]
        if not isinstance(minimum, int) or minimum < 0:
            raise SpecError(f"low_traffic_min_events: {minimum!r} must be a whole number >= 0")
        values["low_traffic_min_events"] = minimum
    if "proxy_bias_margin" in document:
        margin = document["proxy_bias_margin"]
        if isinstance(margin, bool) or not isinstance(margin, int | float) \
                or not 0 <= margin < 1:
            raise SpecError(f"proxy_bias_margin: {margin!r} must be a number in [0, 1), "
                            f"e.g. 0.05")
        values["proxy_bias_margin"] = float(margin)
    if "window_scale" in document:
        scale = document["window_scale"]
        if not isinstance(scale, int | float) or not 0 < scale <= 1:
            raise SpecError(f"window_scale: {scale!r} must be in (0, 1]")
        values["window_scale"] = float(scale)
    if "runbook_base_url" in document:
        values["runbook_base_url"] = str(document["runbook_base_url"]).rstrip("/")
    if "gallery_url" in document:
        url = str(document["gallery_url"]).rstrip("/")
        if not url.startswith(("http://", "https://")) or "?" in url or "#" in url:
            raise SpecError(f"gallery_url: {url!r} must be an http:// or https:// base URL "
                            f"of a sidecar's admin port, without query or fragment")
        values["gallery_url"] = url
    if "traces" in document:
        if document["traces"] not in ("tempo", "jaeger"):
            raise SpecError(f"traces: {document['traces']!r} must be tempo or jaeger")
        values["traces"] = document["traces"]
    labels = document.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise SpecError("labels: expected a mapping of label: value")
    values["labels"] = {str(k): str(v) for k, v in labels.items()}
    return values


def _openslo_query(ratio: Mapping[str, Any], part: str, where: str) -> str:
    entry = ratio.get(part) or {}
    query = str(((entry.get("metricSource") or {}).get("spec") or {}).get("query", ""))
    if query:
        try:
            check_counter_query(query)
        except QueryError as error:
            raise SpecError(f"{where}.{part}.metricSource.spec.query: {error}") from None
    return query


def from_openslo(documents: Sequence[Mapping[str, Any]], source: str) -> ServiceSpec:
    """OpenSLO v1 `SLO` objects with a `ratioMetric` indicator; the service name comes
    from `spec.service`, the model from the `lookout.io/model` label (or the service)."""
    slos, first = [], None
    for index, document in enumerate(documents):
        where = f"{source}[{index}]"
        if document.get("kind") != "SLO":
            continue
        first = first or document
        spec = _require(document, "spec", where)
        metadata = document.get("metadata") or {}
        name = str(_require(metadata, "name", f"{where}.metadata"))
        indicator = (spec.get("indicator") or {}).get("spec") or spec.get("indicatorSpec") or {}
        ratio = indicator.get("ratioMetric")
        if not isinstance(ratio, Mapping):
            raise SpecError(f"{where}.spec.indicator.spec.ratioMetric: required (only ratio "
                            f"metrics with Prometheus queries are supported)")

        at = f"{where}.spec.indicator.spec.ratioMetric"
        queries = RatioQueries(total=_openslo_query(ratio, "total", at),
                               good=_openslo_query(ratio, "good", at),
                               bad=_openslo_query(ratio, "bad", at))
        if not queries.total or not (queries.good or queries.bad):
            raise SpecError(f"{where}.spec.indicator.spec.ratioMetric: needs total and good "
                            f"or bad, each with metricSource.spec.query")
        objectives = spec.get("objectives") or []
        if not objectives:
            raise SpecError(f"{where}.spec.objectives: required")
        target = objectives[0].get("target", objectives[0].get("targetPercent"))
        slos.append(SLO(name, Kind.RATIO, _objective(target, f"{where}.spec.objectives[0]"),
                        str(spec.get("description", "")), ratio=queries))
    if first is None:
        raise SpecError(f"{source}: no OpenSLO object of kind SLO")
    spec = first["spec"]
    labels = (first.get("metadata") or {}).get("labels") or {}
    windows = spec.get("timeWindow") or [{}]
    period = windows[0].get("duration", "28d") if windows else "28d"
    document = {"service": spec.get("service") or "service",
                # a multi-model pod: `lookout.io/model: primary,coarse`
                "model": [m.strip() for m in str(labels.get(
                    "lookout.io/model", spec.get("service") or "service")).split(",")],
                "period": period}
    return ServiceSpec(**_common(document, source), slos=tuple(slos))


MAX_SPEC_BYTES = 4 * 1024**2


def load_spec(path: str | Path) -> ServiceSpec:
    path = Path(path)
    try:
        with path.open("rb") as source:  # /dev/zero or a log file must not fill memory
            raw = source.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 1024**2} MiB; a spec is "
                            "a few KB (is this the right file?)")
        documents = [d for d in yaml.safe_load_all(raw.decode("utf-8")) if d is not None]
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise SpecError(f"{path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML ({error})") from None
    if not documents:
        raise SpecError(f"{path}: empty")
    if str(documents[0].get("apiVersion", "")).startswith("openslo/"):
        return from_openslo(documents, str(path))
    if len(documents) > 1:
        raise SpecError(f"{path}: one lookout spec per file (or OpenSLO objects)")
    return parse_spec(documents[0], str(path))
