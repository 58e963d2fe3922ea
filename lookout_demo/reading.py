"""What the demo's view reads of the sidecar: its totals, as /metrics exports them
(the lookout process's registry merged with the analysis workers'), so the view shows
only what a Prometheus scrape would."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from lookout.sidecar.server import Sidecar
from lookout.slo import catalog


@dataclass
class SidecarReading:
    requests: float = 0.0
    server_errors: float = 0.0
    detections: float = 0.0
    analysed: float = 0.0
    confidence_sum: float = 0.0
    confidence_count: float = 0.0
    parse_failures: float = 0.0
    dropped: float = 0.0
    shadow_primary: float = 0.0
    shadow_reference: float = 0.0
    shadow_matched: float = 0.0
    shadow_evaluated: float = 0.0  # images the reference model compared (outcome ok)
    flip_boxes: float = 0.0
    flip_matched: float = 0.0
    samples: float = 0.0
    drift_windows: float = 0.0
    drift_ready: bool = False  # the detector is calibrated: its thresholds are exported
    drift_alarms: list[str] = field(default_factory=list)
    reference_ready: bool = False  # the reference model is loaded (its model_info)
    trusted: bool | None = None  # lookout_proxy_trust; None while the band is learnt
    distrust: list[str] = field(default_factory=list)  # its reasons, when not trusted


def read_sidecar(sidecar: Sidecar) -> SidecarReading:
    """Totals from the sidecar's own registry: the numbers /metrics exports."""
    return reading_of(sidecar.metrics.collect())


def reading_of_text(text: str) -> SidecarReading:
    return reading_of(text_string_to_metric_families(text))


_TOTALS = {  # sample name -> SidecarReading field it adds to
    catalog.REQUESTS.sample_name: "requests",
    catalog.DETECTIONS_PER_REQUEST.sum_name: "detections",
    catalog.DETECTIONS_PER_REQUEST.count_name: "analysed",
    catalog.DETECTION_CONFIDENCE.sum_name: "confidence_sum",
    catalog.DETECTION_CONFIDENCE.count_name: "confidence_count",
    catalog.PARSE_FAILURES.sample_name: "parse_failures",
    catalog.QUEUE_DROPPED.sample_name: "dropped",
    catalog.SHADOW_PRIMARY_BOXES.sample_name: "shadow_primary",
    catalog.SHADOW_REFERENCE_BOXES.sample_name: "shadow_reference",
    catalog.SHADOW_MATCHED_BOXES.sample_name: "shadow_matched",
    catalog.FLIP_BOXES.sample_name: "flip_boxes",
    catalog.FLIP_MATCHED_BOXES.sample_name: "flip_matched",
    catalog.SAMPLES_STORED.sample_name: "samples",
    catalog.DRIFT_WINDOWS.sample_name: "drift_windows",
}


def _state(reading: SidecarReading, name: str, labels: dict[str, str], value: float) -> None:
    """The gauges and labelled counters that say what state something is in."""
    if name == catalog.DRIFT_ALARM.name and value:
        reading.drift_alarms.append(labels["feature"])
    elif name == catalog.DRIFT_THRESHOLD.name:
        reading.drift_ready = True
    elif name == catalog.PROXY_TRUST.name:
        reading.trusted = bool(value)
    elif name == catalog.PROXY_DISTRUST.name and value:
        reading.distrust.append(labels["reason"])
    elif name == catalog.SHADOW_EVALUATIONS.sample_name and labels.get("outcome") == "ok":
        reading.shadow_evaluated += value
    elif name == catalog.MODEL_INFO.name and labels.get("role") == "reference":
        reading.reference_ready = True


def reading_of(families: Iterable[Metric]) -> SidecarReading:
    reading = SidecarReading()
    for family in families:
        for sample in family.samples:
            _state(reading, sample.name, sample.labels, sample.value)
            field_name = _TOTALS.get(sample.name)
            if field_name is None:
                continue
            setattr(reading, field_name, getattr(reading, field_name) + sample.value)
            code = sample.labels.get("code", "")
            if field_name == "requests" and code.removeprefix(
                    catalog.SIDECAR_CODE_PREFIX).startswith("5"):
                reading.server_errors += sample.value
    return reading
