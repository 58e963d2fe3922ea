"""`lookout demo`: the demo inference server running the shipped primary model, the
sidecar in front of it, and a synthetic camera whose frames drift (lights dimming, then
blur) — with a live terminal view of what the sidecar sees. Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from lookout.lookout_demo.camera import DEFAULT_SCHEDULE, CameraStats, drive, phase_at
from lookout.lookout_demo.models import PRIMARY, REFERENCE
from lookout.lookout_demo.server import DemoServer
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.config import Config
from lookout.sidecar.server import Sidecar
from lookout.slo import catalog

MODEL_NAME = "tiny-yolo"
MODEL_VERSION = "primary-1"


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
    return _reading(sidecar.metrics.collect())


async def scrape(admin: str) -> SidecarReading:
    """The same totals, read over HTTP from the admin port like Prometheus would."""
    async with aiohttp.ClientSession() as session, session.get(admin + "/metrics") as response:
        return _reading(text_string_to_metric_families(await response.text()))


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


def _reading(families) -> SidecarReading:
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


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


class DemoView:
    """The numbers on screen, computed over the last refresh interval."""

    def __init__(self, sidecar: Sidecar, stats: CameraStats, duration: float | None,
                 admin: str) -> None:
        self.sidecar, self.stats, self.duration, self.admin = sidecar, stats, duration, admin
        self.started = time.monotonic()
        self.previous = read_sidecar(sidecar)

    def rows(self) -> list[tuple[str, str]]:
        elapsed = time.monotonic() - self.started
        phase = phase_at(DEFAULT_SCHEDULE, elapsed)
        now = read_sidecar(self.sidecar)
        before, self.previous = self.previous, now
        rate, p50, p95 = self.stats.recent()
        severity = f" (severity {phase.severity(elapsed):.2f})" if phase.kind else ""
        left = f" of {self.duration:.0f}s" if self.duration else ", Ctrl-C stops"
        per_frame = _ratio(now.detections - before.detections, now.analysed - before.analysed)
        confidence = _ratio(now.confidence_sum - before.confidence_sum,
                            now.confidence_count - before.confidence_count)
        matched = now.shadow_matched - before.shadow_matched
        precision = _ratio(matched, now.shadow_primary - before.shadow_primary)
        recall = _ratio(matched, now.shadow_reference - before.shadow_reference)
        flip = _ratio(2 * (now.flip_matched - before.flip_matched),
                      now.flip_boxes - before.flip_boxes)
        if not self.sidecar.config.drift:
            alarms = "off"
        elif not now.drift_windows:
            alarms = "learning the baseline"
        else:
            alarms = ", ".join(sorted(now.drift_alarms)) or "none"
        return [
            ("scene", f"{phase.name}{severity}"),
            ("elapsed", f"{elapsed:.0f}s{left}"),
            ("camera: requests/s", f"{rate:.1f}"),
            ("camera: latency p50 / p95", f"{p50:.1f} ms / {p95:.1f} ms"),
            ("camera: error rate", f"{_ratio(self.stats.errors, self.stats.sent):.2%}"),
            ("sidecar: requests seen", f"{now.requests:.0f}"),
            ("sidecar: 5xx share", f"{_ratio(now.server_errors, now.requests):.2%}"),
            ("detections per frame", f"{per_frame:.2f}"),
            ("mean confidence", f"{confidence:.3f}"),
            ("shadow: precision / recall proxy", f"{precision:.2f} / {recall:.2f}"),
            ("flip consistency", f"{flip:.2f}"),
            ("drift alarms", alarms),
            ("samples stored", f"{now.samples:.0f}"),
            ("parse failures / queue drops", f"{now.parse_failures:.0f} / {now.dropped:.0f}"),
            ("metrics", f"{self.admin}/metrics"),
        ]

    def table(self) -> Table:
        table = Table(title="lookout demo", show_header=False, min_width=60)
        for key, value in self.rows():
            table.add_row(key, value)
        return table


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def run(config: Config, duration: float | None, rate: float) -> None:
    upstream = urlsplit(config.upstream)
    server = web.AppRunner(DemoServer(OnnxDetector.load(PRIMARY), "yolo").build(),
                           access_log=None)
    await server.setup()
    await web.TCPSite(server, upstream.hostname, upstream.port or 80).start()
    sidecar = Sidecar(config)
    await sidecar.start()
    data = f"http://{_local(config.listen.host)}:{config.listen.port}"
    admin = f"http://{_local(config.admin.host)}:{config.admin.port}"
    console = Console()
    console.print(f"demo upstream (primary model) on {config.upstream}; lookout data port "
                  f"{data}, admin {admin}", soft_wrap=True)
    stats = CameraStats()
    view = DemoView(sidecar, stats, duration, admin)
    camera = asyncio.create_task(drive(data + "/predict", rate, duration, stats))
    try:
        if console.is_terminal:
            with Live(view.table(), console=console, refresh_per_second=1) as live:
                while not camera.done():
                    await asyncio.sleep(1.0)
                    live.update(view.table())
        else:  # logs and CI: a plain line every 5 s
            while not camera.done():
                await asyncio.wait({camera}, timeout=5.0)
                console.print("  ".join(f"{k}: {v}" for k, v in view.rows()[:12]),
                              soft_wrap=True)
        await camera
    finally:
        camera.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await camera
        await asyncio.wait_for(sidecar.queue.join(), 10)  # let analysis catch up
        final = await scrape(admin)
        console.print(f"done: {stats.sent} frames sent; {admin}/metrics shows "
                      f"{final.requests:.0f} requests, {final.detections:.0f} detections in "
                      f"{final.analysed:.0f} analysed frames, "
                      f"{final.shadow_primary:.0f} primary boxes shadow-evaluated, "
                      f"{final.samples:.0f} input samples stored",
                      soft_wrap=True)
        if config.sample_dir:
            console.print(f"browse them: lookout samples list --store {config.sample_dir}",
                          soft_wrap=True)
        await sidecar.stop()
        await server.cleanup()


def run_demo(config: Config, duration: float | None, rate: float) -> int:
    if not any(name in os.environ for name in
               ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")  # no collector in a demo
    config = _with_demo_model(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config, duration, rate))
    return 0


def _with_demo_model(config: Config) -> Config:
    """The shipped models and demo-sized drift windows, and the shipped model's labels,
    unless the user chose otherwise."""
    from dataclasses import replace

    changes: dict[str, object] = {}
    if not config.model_path:
        changes["model_path"] = str(PRIMARY)
    if not config.shadow_model_path:  # the shipped reference model, on half the frames
        changes.update(shadow_model_path=str(REFERENCE), shadow_sample_share=0.5,
                       flip_share=0.2)
    defaults = Config()
    if config.drift_baseline_size == defaults.drift_baseline_size:
        # the camera's clean warm-up is 20 s of 10 frames: learn the baseline from it
        # and a demo-sized false-alarm target (a minute of frames, not a day of them)
        changes.update(drift_baseline_size=150, drift_window=25,
                       drift_false_alarm_images=20_000)
    if not config.sample_dir:  # keep samples where the user can browse them afterwards
        changes["sample_dir"] = tempfile.mkdtemp(prefix="lookout-demo-samples-")
    if config.model_name == "yolo":
        changes["model_name"] = MODEL_NAME
    if config.model_version == "unknown":
        changes["model_version"] = MODEL_VERSION
    return replace(config, **changes)
