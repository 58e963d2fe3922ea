"""A synthetic camera: generated scenes sent at a steady rate, with a drift schedule
(lights dimming, then blur) so the demo shows what degradation looks like in the
sidecar's signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp

from lookout.lookout_demo.perturbations import perturb
from lookout.lookout_demo.scenes import generate_scene

DEMO_SEED = 500_000  # away from the training and evaluation seeds


@dataclass(frozen=True, slots=True)
class DriftPhase:
    """From `start` seconds on, frames get `kind` at a severity ramping linearly from
    `severity_from` to `severity_to` over `ramp` seconds (no kind: clean frames)."""

    name: str
    start: float
    kind: str | None = None
    severity_from: float = 0.0
    severity_to: float = 0.0
    ramp: float = 1.0

    def severity(self, elapsed: float) -> float:
        progress = min(max((elapsed - self.start) / self.ramp, 0.0), 1.0)
        return self.severity_from + (self.severity_to - self.severity_from) * progress


DEFAULT_SCHEDULE = (
    DriftPhase("warm-up: clean frames", 0.0),
    DriftPhase("lights dimming", 20.0, "dark", 0.1, 0.8, 15.0),
    DriftPhase("lens blur", 40.0, "defocus_blur", 0.2, 0.9, 15.0),
)


def phase_at(schedule: tuple[DriftPhase, ...], elapsed: float) -> DriftPhase:
    return [phase for phase in schedule if phase.start <= elapsed][-1]


@dataclass
class CameraStats:
    """What the camera saw of its own requests (the client's view)."""

    sent: int = 0
    errors: int = 0
    window: deque = field(default_factory=lambda: deque(maxlen=2000))  # (time, latency)

    def record(self, latency: float, ok: bool) -> None:
        self.sent += 1
        self.errors += 0 if ok else 1
        self.window.append((time.monotonic(), latency))

    def recent(self, seconds: float = 10.0) -> tuple[float, float, float]:
        """(requests per second, p50 ms, p95 ms) over the last `seconds`."""
        now = time.monotonic()
        recent = [(at, lat) for at, lat in self.window if at >= now - seconds]
        if not recent:
            return 0.0, 0.0, 0.0
        latencies = sorted(lat for _, lat in recent)
        span = min(seconds, max(now - recent[0][0], 1.0))
        rate = len(latencies) / span
        return (rate, latencies[len(latencies) // 2] * 1000,
                latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] * 1000)


def encode_frame(index: int, schedule: tuple[DriftPhase, ...], elapsed: float) -> bytes:
    scene = generate_scene(DEMO_SEED + index)
    phase = phase_at(schedule, elapsed)
    if phase.kind is not None:
        scene = perturb(scene, phase.kind, phase.severity(elapsed), seed=index)
    return scene.jpeg()


def _yield_by(niceness: int) -> None:
    """Lower the calling thread's priority (Linux: a thread's own; elsewhere the
    process's); not permitted: it stays as it is."""
    with contextlib.suppress(OSError):
        os.nice(niceness)


async def drive(url: str, rate: float, duration: float | None, stats: CameraStats,
                schedule: tuple[DriftPhase, ...] = DEFAULT_SCHEDULE,
                niceness: int = 0) -> None:
    """POST frames to `url` at `rate` per second until `duration` (None: forever). The
    frames are drawn in a thread of their own lowered by `niceness`: given the analysis
    workers' own, a busy machine slows the camera with the analysis instead of letting
    it run ahead of it."""
    started = time.monotonic()
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, "lookout-demo-camera", _yield_by, (niceness,)) as painter:
        async with aiohttp.ClientSession() as session:
            index = 0
            while duration is None or time.monotonic() - started < duration:
                elapsed = time.monotonic() - started
                frame = await loop.run_in_executor(painter, encode_frame, index, schedule,
                                                   elapsed)
                sent = time.monotonic()
                try:
                    async with session.post(url, data=frame, headers={
                            "Content-Type": "image/jpeg"}) as response:
                        await response.read()
                        ok = response.status < 500
                except aiohttp.ClientError:
                    ok = False
                stats.record(time.monotonic() - sent, ok)
                index += 1
                next_at = started + index * interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
