"""The demo's live view: one line saying what just happened, what the sidecar sees,
its trends over the last minute (so the moment the lights dim shows at a glance), the
proxies beside their trust signal, a row for each drift alarm as it fires, and where the
gallery and the logs are. A value nothing measured is shown as "—", never as 0."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from rich.table import Table

from lookout.lookout_demo.camera import DEFAULT_SCHEDULE, CameraStats, DriftPhase, phase_at
from lookout.lookout_demo.reading import SidecarReading, read_sidecar
from lookout.lookout_demo.story import Measures, Recent, Story, ratio, shown, trust_text
from lookout.sidecar.server import Sidecar

BARS = "▁▂▃▄▅▆▇█"
TREND_POINTS = 60  # one a refresh: the last minute at the demo's one refresh a second


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
        now = "—" if last is None else f"{last:.{digits}f}{unit}"
        return f"{sparkline(self.values, self.low, self.high):<{TREND_POINTS}} {now}"


def percent(numerator: float, denominator: float) -> str:
    share = ratio(numerator, denominator)
    return "—" if share is None else f"{share:.2%}"


class DemoView:
    """The numbers on screen: trends per refresh interval, the other measures over the
    last few seconds (story.RECENT_SECONDS)."""

    def __init__(self, sidecar: Sidecar, stats: CameraStats, duration: float | None,
                 admin: str, gallery: str = "", log_file: str = "",
                 schedule: tuple[DriftPhase, ...] = DEFAULT_SCHEDULE) -> None:
        self.sidecar, self.stats, self.duration, self.admin = sidecar, stats, duration, admin
        self.gallery, self.log_file, self.schedule = gallery, log_file, schedule
        self.started = time.monotonic()
        self.previous = read_sidecar(sidecar)
        self.recent = Recent(self.previous)
        self.story = Story()
        self.trends = {"requests/s": Trend(low=0), "p95 latency": Trend(low=0),
                       "precision proxy": Trend(0, 1), "recall proxy": Trend(0, 1),
                       "detections per frame": Trend(low=0)}
        self.alarms: dict[str, float] = {}  # feature -> elapsed seconds when it fired

    def _drift_state(self, now: SidecarReading) -> str:
        config = self.sidecar.config
        if not config.drift:
            return "drift detection off"
        if not now.drift_ready:
            return ("drift detector calibrating" if config.drift_baseline_path
                    else "drift detector learning its baseline")
        return "no drift alarm"

    def _trend(self, before: SidecarReading, now: SidecarReading, rate: float,
               p95: float | None) -> None:
        interval = Measures.between(before, now)
        for name, value in (("requests/s", rate), ("p95 latency", p95),
                            ("precision proxy", interval.precision),
                            ("recall proxy", interval.recall),
                            ("detections per frame", interval.per_frame)):
            self.trends[name].add(value)

    def rows(self) -> list[tuple[str, str]]:
        elapsed = time.monotonic() - self.started
        phase = phase_at(self.schedule, elapsed)
        now = read_sidecar(self.sidecar)
        before, self.previous = self.previous, now
        recent = self.recent.add(elapsed, now)
        rate, p50, p95 = self.stats.recent()
        measured = bool(rate)
        self._trend(before, now, rate, p95 if measured else None)
        for feature in now.drift_alarms:
            self.alarms.setdefault(feature, elapsed)
        for feature in [f for f in self.alarms if f not in now.drift_alarms]:
            del self.alarms[feature]  # cleared
        drift = self._drift_state(now)
        config = self.sidecar.config
        severity = f" (severity {phase.severity(elapsed):.2f})" if phase.kind else ""
        left = f" of {self.duration:.0f}s" if self.duration else ", Ctrl-C stops"
        latency = f"{p50:.1f} ms / {p95:.1f} ms" if measured else "—"
        rows = [
            ("scene", f"{phase.name}{severity}"),
            ("what just happened", self.story.line(phase, now, recent, self.alarms, drift)),
            ("elapsed", f"{elapsed:.0f}s{left}"),
            ("camera: requests/s", f"{rate:.1f}"),
            ("camera: latency p50 / p95", latency),
            ("camera: error rate", percent(self.stats.errors, self.stats.sent)),
            ("sidecar: requests seen", f"{now.requests:.0f}"),
            ("sidecar: 5xx share", percent(now.server_errors, now.requests)),
            ("mean confidence", shown(recent.confidence, 3)),
            ("flip consistency", shown(recent.flip)),
            ("trend: requests/s", self.trends["requests/s"].render(digits=1)),
            ("trend: p95 latency", self.trends["p95 latency"].render(" ms", 1)),
            ("trend: detections per frame", self.trends["detections per frame"].render()),
            ("trend: precision proxy", self.trends["precision proxy"].render()),
            ("trend: recall proxy", self.trends["recall proxy"].render()),
            ("proxy trust", trust_text(now, config.proxy_trust_window
                                       * config.proxy_trust_baseline_windows)),
            ("drift alarms", f"{len(self.alarms)} firing" if self.alarms else drift),
            *((f"  alarm: {feature}", f"{feature} drift, firing since {at:.0f}s")
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
