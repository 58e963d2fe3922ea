"""Through the real proxy: shadow evaluation working, or failing in every way we know,
leaves what clients receive unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from PIL import Image

from lookout.lookout_demo.models import model_path
from lookout.lookout_demo.scenes import generate_scene
from lookout.lookout_demo.server import DemoServer
from lookout.shadow_eval.runner import OnnxDetector
from lookout.sidecar.config import load_config
from lookout.sidecar.quality.shadow import State
from lookout.sidecar.server import Sidecar
from lookout.slo import catalog
from tests.support.processes import free_port, python_data_plane

FRAMES = 16


def _jpegs() -> list[bytes]:
    frames = []
    for seed in range(FRAMES):
        buffer = io.BytesIO()
        Image.fromarray(generate_scene(seed).image).save(buffer, "JPEG", quality=90)
        frames.append(buffer.getvalue())
    return frames


async def _post_all(base: str, frames: list[bytes]) -> list[tuple[int, bytes]]:
    async with aiohttp.ClientSession() as session:
        results = []
        for frame in frames:
            async with session.post(base + "/predict", data=frame,
                                    headers={"Content-Type": "image/jpeg"}) as response:
                results.append((response.status, await response.read()))
        return results


async def _scenario(shadow: dict[str, str], breaking=None) -> tuple[Sidecar, bool]:
    """Serve the primary model, put a sidecar with `shadow` options in front, and
    compare what a client gets through it with what it gets directly."""
    frames = _jpegs()
    upstream = web.AppRunner(DemoServer(OnnxDetector.load(model_path("primary"),
                                                          providers=("cpu",))).build())
    await upstream.setup()
    upstream_port = free_port()
    await web.TCPSite(upstream, "127.0.0.1", upstream_port).start()
    shadow = dict(shadow)
    reference = shadow.pop("shadow_model_path")  # checked at start-up, then gone bad
    config = dataclasses.replace(load_config({
        "listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}",
        "upstream": f"http://127.0.0.1:{upstream_port}", "model_name": "m",
        "model_version": "v", "shadow_sample_share": "1", "shadow_rate": "1000",
        "shadow_burst": "1000", "shadow_max_busy_share": "1", "data_plane": "python",
        **shadow}, env={}), shadow_model_path=reference)
    sidecar = Sidecar(config, tracing=_tracing(), analysis_in_process=True)
    try:
        await sidecar.start()
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, sidecar.shadow.wait_started, 60)
        if breaking is not None:
            breaking(sidecar)
        direct = await _post_all(f"http://127.0.0.1:{upstream_port}", frames)
        proxied = await _post_all(f"http://127.0.0.1:{config.listen.port}", frames)
        await asyncio.wait_for(sidecar.queue.join(), 30)
        await loop.run_in_executor(None, sidecar.shadow.drain, 30)
        same = direct == proxied and all(status == 200 for status, _ in direct)
    finally:
        await sidecar.stop()
        await upstream.cleanup()
    return sidecar, same


def _tracing():
    from lookout.sidecar.runtime.tracing import Tracing

    return Tracing(TracerProvider())


def _value(sidecar: Sidecar, spec: catalog.MetricSpec, **labels: str) -> float:
    return sidecar.metrics.registry.get_sample_value(spec.sample_name, labels) or 0.0


def test_working_shadow_evaluates_live_traffic() -> None:
    sidecar, same = asyncio.run(_scenario({"shadow_model_path": str(model_path("reference"))}))
    assert same
    evaluated = _value(sidecar, catalog.SHADOW_EVALUATIONS, model="m", version="v",
                       outcome="ok")
    dropped = _value(sidecar, catalog.SHADOW_EVALUATIONS, model="m", version="v",
                     outcome="dropped")
    assert evaluated > 0 and evaluated + dropped == FRAMES


@pytest.mark.parametrize("problem", ["corrupt", "sha_mismatch", "throws", "queue_overflow"])
def test_shadow_failures_change_no_response(problem, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage" * 64)
    reference = str(model_path("reference"))
    options = {"corrupt": {"shadow_model_path": str(corrupt)},
               "sha_mismatch": {"shadow_model_path": reference,
                                "shadow_model_sha256": "cd" * 32},
               "throws": {"shadow_model_path": reference},
               "queue_overflow": {"shadow_model_path": reference, "shadow_queue_size": "1",
                                  "shadow_batch_size": "1"}}[problem]

    class Exploding:
        def run(self, *args, **kwargs):
            raise RuntimeError("onnxruntime: CUDA failure 700")

    def explode(sidecar: Sidecar) -> None:
        sidecar.shadow.reference.session = Exploding()

    def stall(sidecar: Sidecar) -> None:
        sidecar.shadow.state = State.STOPPED  # the worker leaves: nothing drains the queue
        sidecar.shadow._queue.put_nowait(None)
        sidecar.shadow._thread.join(10)
        sidecar.shadow.state = State.RUNNING

    breaking = {"throws": explode, "queue_overflow": stall}.get(problem)
    sidecar, same = asyncio.run(_scenario(options, breaking))
    assert same
    outcomes = {o: _value(sidecar, catalog.SHADOW_EVALUATIONS, model="m", version="v",
                          outcome=o) for o in ("ok", "error", "dropped")}
    if problem in ("corrupt", "sha_mismatch"):
        assert sidecar.shadow.state is State.DISABLED
        assert _value(sidecar, catalog.COMPONENT_ERRORS, component="shadow") == 1
    elif problem == "throws":
        assert outcomes["error"] > 0 and outcomes["ok"] == 0
        assert _value(sidecar, catalog.COMPONENT_ERRORS, component="shadow") >= 1
    else:
        assert outcomes["dropped"] == FRAMES - 1
        assert _value(sidecar, catalog.QUEUE_DROPPED, queue="shadow") == FRAMES - 1


@pytest.fixture(scope="module", autouse=True)
def _python_request_path() -> Iterator[None]:
    """The Python request path's own behaviour, not yet carried over to Envoy."""
    with python_data_plane():
        yield
