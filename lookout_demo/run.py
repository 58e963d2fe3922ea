"""`lookout demo`: the demo inference server running the shipped primary model, the
sidecar in front of it, and a synthetic camera whose frames drift (lights dimming, then
blur) — with a live terminal view of what the sidecar sees. Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.live import Live

from lookout.lookout_demo.baseline import DRIFT_BASELINE
from lookout.lookout_demo.camera import CameraStats, drive
from lookout.lookout_demo.models import PRIMARY, REFERENCE
from lookout.lookout_demo.reading import SidecarReading, read_sidecar, reading_of_text
from lookout.lookout_demo.server import DemoServer
from lookout.lookout_demo.view import DemoView
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.config import Config
from lookout.sidecar.samples.ui_session import Sessions
from lookout.sidecar.server import Sidecar, read_admin_token

MODEL_NAME = "tiny-yolo"
WORKER_NICENESS = 10  # the analysis workers' (they lower their own priority by this)
MODEL_VERSION = "primary-1"


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def scrape(admin: str) -> SidecarReading:
    """The sidecar's totals, read over HTTP from the admin port like Prometheus would."""
    async with aiohttp.ClientSession() as session, session.get(admin + "/metrics") as response:
        return reading_of_text(await response.text())


@contextlib.contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """Standard error, of this process and of the analysis workers it starts, into
    `path`, so that no log line lands inside the live view; restored afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


READY_TIMEOUT = 90.0  # seconds the camera waits for the analysis at most


async def analysis_ready(sidecar: Sidecar) -> float:
    """Wait until the drift detector is calibrated and the reference model loaded, so
    the story's clock starts when the sidecar can tell it: calibration holds the lead
    worker's interpreter for seconds on a busy machine, and frames sent meanwhile would
    queue up and reach the detector late. Returns the seconds waited (READY_TIMEOUT at
    most: a detector that cannot start must not keep the camera off)."""
    config, started = sidecar.config, time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        reading = read_sidecar(sidecar)
        if (reading.drift_ready or not config.drift) and (reading.reference_ready or not (
                config.shadow_model_path or config.shadow_reference_url)):
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - started


def gallery_link(admin: str, config: Config) -> str:
    """The gallery's one-time sign-in link for the demo's own admin token."""
    code = Sessions(read_admin_token(config)).link_code()
    return f"{admin}/ui/login/link?{urlencode({'code': code})}"


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
    console.print("waiting for the drift detector (calibrating from the shipped baseline) "
                  "and the reference model to load...", soft_wrap=True, highlight=False)
    try:
        waited = await analysis_ready(sidecar)
    except BaseException:  # Ctrl-C while waiting: stop what was started
        await sidecar.stop()
        await server.cleanup()
        raise
    console.print(f"ready after {waited:.0f}s: the camera starts", highlight=False)
    stats = CameraStats()
    # above the view, on one line, so a terminal makes it a link: it does not change
    console.print(f"sample gallery, sign in once with: {gallery_link(admin, config)}",
                  soft_wrap=True, highlight=False)
    view = DemoView(sidecar, stats, duration, admin, f"{admin}/ui/samples",
                    os.environ.get(LOG_ENV, ""))
    # the camera draws its frames at the analysis workers' priority: on a busy machine
    # it slows down with the analysis, and the story stays in step with the scenes
    camera = asyncio.create_task(drive(data + "/predict", rate, duration, stats,
                                       niceness=WORKER_NICENESS))
    try:
        if console.is_terminal:
            with Live(view.table(), console=console, refresh_per_second=1,
                      redirect_stderr=False, vertical_overflow="crop") as live:
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
        if sidecar.workers is not None:  # let analysis catch up
            await asyncio.wait_for(sidecar.workers.join(), 10)
        final = await scrape(admin)
        console.print(f"done: {stats.sent} frames sent; {admin}/metrics shows "
                      f"{final.requests:.0f} requests, {final.detections:.0f} detections in "
                      f"{final.analysed:.0f} analysed frames, "
                      f"{final.shadow_primary:.0f} primary boxes shadow-evaluated, "
                      f"{final.samples:.0f} input samples stored",
                      soft_wrap=True)
        if config.sample_dir:
            console.print(f"browse them: lookout samples serve --store {config.sample_dir} "
                          f"(the gallery), or lookout samples list --store "
                          f"{config.sample_dir}", soft_wrap=True)
        await sidecar.stop()
        await server.cleanup()


LOG_ENV = "LOOKOUT_DEMO_LOG"  # where the live view says the logs are


def run_demo(config: Config, duration: float | None, rate: float) -> int:
    if not any(name in os.environ for name in
               ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")  # no collector in a demo
    config = _with_demo_model(config)
    logs: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if sys.stdout.isatty():  # a live view: the logs go to a file it names
        path = Path(tempfile.gettempdir()) / f"lookout-demo-{os.getpid()}.log"
        os.environ[LOG_ENV] = str(path)
        logs = logs_to(path)
    with logs, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config, duration, rate))
    if os.environ.get(LOG_ENV):
        print(f"the sidecar's logs: {os.environ[LOG_ENV]}")
    return 0


def _with_demo_model(config: Config) -> Config:
    """The shipped models and demo-sized drift windows, and the shipped model's labels,
    unless the user chose otherwise."""
    from dataclasses import replace

    changes: dict[str, object] = {}
    if not config.model_path:
        changes["model_path"] = str(PRIMARY)
    if not (config.shadow_model_path or config.shadow_reference_url):
        # the shipped reference model on half the frames, with half its thread's wall
        # time to infer in (a demo is there to show it), and a trust band learnt within
        # the camera's clean warm-up: 8 windows of 10 evaluated images (on demo scenes
        # about one clean window in 12 then falls outside the band; the deepest
        # dimming's mirror test leaves it). A short queue: an image waiting for the
        # reference reaches the drift detector only once evaluated, so a long one on a
        # busy machine would hold the alarm back by as many seconds as it holds images
        changes.update(shadow_model_path=str(REFERENCE), shadow_sample_share=0.5,
                       shadow_max_busy_share=0.5, shadow_queue_size=16, flip_share=0.2,
                       proxy_trust_window=10,
                       proxy_trust_baseline_windows=8)
    defaults = Config()
    if not config.drift_baseline_path and \
            config.drift_baseline_size == defaults.drift_baseline_size:
        # the shipped baseline of clean scenes (tools/make_demo_baseline.py): the
        # detector calibrates at start, not after learning from the warm-up; a window of
        # 2.5 s of frames alarms within seconds of the lights dimming, and a demo-sized
        # false-alarm target (minutes of frames, not days) keeps the calibration's
        # simulation at its floor, a few seconds even on a busy laptop
        changes.update(drift_baseline_path=str(DRIFT_BASELINE), drift_window=25,
                       drift_false_alarm_images=5_000)
    if not config.sample_dir:  # keep samples where the user can browse them afterwards
        changes["sample_dir"] = tempfile.mkdtemp(prefix="lookout-demo-samples-")
    if not config.admin_token and not config.admin_token_file:  # the gallery's, this run's
        changes["admin_token"] = secrets.token_urlsafe(24)
    if config.model_name == "yolo":
        changes["model_name"] = MODEL_NAME
    if config.model_version == "unknown":
        changes["model_version"] = MODEL_VERSION
    return replace(config, **changes)
