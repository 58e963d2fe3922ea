"""The demo's live view: what the sidecar sees, its trends over the last minutes (so the
moment the lights dim shows at a glance), a row for each drift alarm as it fires, and
where the gallery and the logs are."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from lookout.lookout_demo.camera import DEFAULT_SCHEDULE, CameraStats, phase_at
from lookout.sidecar.server import Sidecar
from lookout.slo import catalog

BARS = "▁▂▃▄▅▆▇█"
TREND_POINTS = 60  # one a refresh: the last minute at the demo's one refresh a second


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
    flip_boxes: float = 0.0
    flip_matched: float = 0.0
    samples: float = 0.0
    drift_windows: float = 0.0
    drift_alarms: list[str] = field(default_factory=list)


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


def reading_of(families: Iterable) -> SidecarReading:
    reading = SidecarReading()
    for family in families:
        for sample in family.samples:
            if sample.name == catalog.DRIFT_ALARM.name and sample.value:
                reading.drift_alarms.append(sample.labels["feature"])
            field_name = _TOTALS.get(sample.name)
            if field_name is None:
                continue
            setattr(reading, field_name, getattr(reading, field_name) + sample.value)
            code = sample.labels.get("code", "")
            if field_name == "requests" and code.removeprefix(
                    catalog.SIDECAR_CODE_PREFIX).startswith("5"):
                reading.server_errors += sample.value
    return reading


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def sparkline(values: Iterable[float | None], low: float | None = None,
              high: float | None = None) -> str:
    """Values as block characters, scaled to [low, high] (their own range when not
    given); a missing value (nothing measured in that interval) is a space."""
    points = list(values)
    present = [v for v in points if v is not None]
    if not present:
        return ""
    low = min(present) if low is None else low
    high = max(present) if high is None else high
    span = high - low
    out = []
    for value in points:
        if value is None:
            out.append(" ")
        else:
            level = 0 if span <= 0 else round((min(max(value, low), high) - low) / span * 7)
            out.append(BARS[level])
    return "".join(out)


class Trend:
    """The last TREND_POINTS values of one measure."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.values: deque[float | None] = deque(maxlen=TREND_POINTS)
        self.low, self.high = low, high

    def add(self, value: float | None) -> None:
        self.values.append(value)

    def render(self, unit: str = "", digits: int = 2) -> str:
        last = next((v for v in reversed(self.values) if v is not None), None)
        now = "-" if last is None else f"{last:.{digits}f}{unit}"
        return f"{sparkline(self.values, self.low, self.high):<{TREND_POINTS}} {now}"


class DemoView:
    """The numbers on screen, each computed over the last refresh interval."""

    def __init__(self, sidecar: Sidecar, stats: CameraStats, duration: float | None,
                 admin: str, gallery: str = "", log_file: str = "") -> None:
        self.sidecar, self.stats, self.duration, self.admin = sidecar, stats, duration, admin
        self.gallery, self.log_file = gallery, log_file
        self.started = time.monotonic()
        self.previous = read_sidecar(sidecar)
        self.trends = {"requests/s": Trend(low=0), "p95 latency": Trend(low=0),
                       "precision proxy": Trend(0, 1), "recall proxy": Trend(0, 1),
                       "detections per frame": Trend(low=0)}
        self.alarms: dict[str, float] = {}  # feature -> elapsed seconds when it fired

    def rows(self) -> list[tuple[str, str]]:
        elapsed = time.monotonic() - self.started
        phase = phase_at(DEFAULT_SCHEDULE, elapsed)
        now = read_sidecar(self.sidecar)
        before, self.previous = self.previous, now
        rate, p50, p95 = self.stats.recent()
        severity = f" (severity {phase.severity(elapsed):.2f})" if phase.kind else ""
        left = f" of {self.duration:.0f}s" if self.duration else ", Ctrl-C stops"
        analysed = now.analysed - before.analysed
        per_frame = ratio(now.detections - before.detections, analysed)
        confidence = ratio(now.confidence_sum - before.confidence_sum,
                           now.confidence_count - before.confidence_count)
        matched = now.shadow_matched - before.shadow_matched
        primary = now.shadow_primary - before.shadow_primary
        reference = now.shadow_reference - before.shadow_reference
        precision, recall = ratio(matched, primary), ratio(matched, reference)
        flip = ratio(2 * (now.flip_matched - before.flip_matched),
                     now.flip_boxes - before.flip_boxes)
        for name, value in (("requests/s", rate), ("p95 latency", p95),
                            ("precision proxy", precision if primary else None),
                            ("recall proxy", recall if reference else None),
                            ("detections per frame", per_frame if analysed else None)):
            self.trends[name].add(value)
        for feature in now.drift_alarms:
            self.alarms.setdefault(feature, elapsed)
        for feature in [f for f in self.alarms if f not in now.drift_alarms]:
            del self.alarms[feature]  # cleared
        if not self.sidecar.config.drift:
            alarms = "off"
        elif not now.drift_windows:
            alarms = "learning the baseline"
        else:
            alarms = f"{len(self.alarms)} firing" if self.alarms else "none"
        rows = [
            ("scene", f"{phase.name}{severity}"),
            ("elapsed", f"{elapsed:.0f}s{left}"),
            ("camera: requests/s", f"{rate:.1f}"),
            ("camera: latency p50 / p95", f"{p50:.1f} ms / {p95:.1f} ms"),
            ("camera: error rate", f"{ratio(self.stats.errors, self.stats.sent):.2%}"),
            ("sidecar: requests seen", f"{now.requests:.0f}"),
            ("sidecar: 5xx share", f"{ratio(now.server_errors, now.requests):.2%}"),
            ("mean confidence", f"{confidence:.3f}"),
            ("flip consistency", f"{flip:.2f}"),
            ("trend: requests/s", self.trends["requests/s"].render(digits=1)),
            ("trend: p95 latency", self.trends["p95 latency"].render(" ms", 1)),
            ("trend: precision proxy", self.trends["precision proxy"].render()),
            ("trend: recall proxy", self.trends["recall proxy"].render()),
            ("trend: detections per frame", self.trends["detections per frame"].render()),
            ("drift alarms", alarms),
            *((f"  alarm: {feature}", f"firing since {at:.0f}s")
              for feature, at in sorted(self.alarms.items(), key=lambda item: item[1])),
            ("samples stored", f"{now.samples:.0f}"),
            ("parse failures / queue drops", f"{now.parse_failures:.0f} / {now.dropped:.0f}"),
            ("metrics", f"{self.admin}/metrics"),
        ]
        if self.gallery:
            rows.append(("sample gallery", f"{self.gallery} (sign-in link above)"))
        if self.log_file:
            rows.append(("logs", self.log_file))
        return rows

    def table(self) -> Table:
        table = Table(title="lookout demo", show_header=False, min_width=60)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in self.rows():
            table.add_row(key, value)
        return table
