"""The body of one request-path child process (`request_processes` > 1): the data port on
the shared port, its metrics on a Unix socket for the main process's /metrics, and
nothing else. It imports what `serve`'s own request path imports, no more.

SIGTERM (sent by the main process when the pod stops) drains its connections within
`shutdown_grace` and flushes its spans. SIGINT is ignored: a terminal's Ctrl-C reaches
the whole group and the main process decides when children stop. A child whose main
process has gone exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal

from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.request_path import ObservationRings, RequestPath
from lookout.sidecar.request_processes import RequestProcessSpec
from lookout.sidecar.runtime.event_loop import run_event_loop, tune_runtime
from lookout.sidecar.runtime.logs import configure_logging
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.runtime.tracing import build_tracing, flush_spans

log = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 1.0


async def _serve_metrics(path: str, metrics: SidecarMetrics) -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(pickle.dumps((os.getpid(), metrics.collect()),
                                      pickle.HIGHEST_PROTOCOL))
            await writer.drain()
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # the socket of the process this one replaces
    return await asyncio.start_unix_server(answer, path)


async def _serve(spec: RequestProcessSpec) -> None:
    config = spec.config
    metrics = SidecarMetrics(config.model_name, config.model_version, process_metrics=False)
    rings = ObservationRings([Ring.attach(address) for address in spec.inboxes], metrics) \
        if spec.inboxes else None
    tracing = build_tracing()
    path = RequestPath(config, metrics, tracing, rings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def check_parent() -> None:
        if os.getppid() != spec.parent_pid:
            log.warning("request-path process %d: the main process is gone; exiting",
                        spec.index)
            stop.set()
        else:
            loop.call_later(PARENT_CHECK_SECONDS, check_parent)

    await path.start(reuse_port=True)
    await path.start_grpc(reuse_port=True)
    exposition = await _serve_metrics(spec.metrics_socket, metrics)
    check_parent()
    tune_runtime()
    await stop.wait()
    exposition.close()
    await path.stop(config.shutdown_grace)
    await loop.run_in_executor(None, flush_spans, tracing)


def run(spec: RequestProcessSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(spec.config.log_level)
    run_event_loop(spec.config.event_loop, _serve(spec))
