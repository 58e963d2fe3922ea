"""One analysis worker process: everything that parses, decodes or infers.

It reads the tap's exchange records from its rings (`channel.py`: one from each Envoy
worker thread), analyses them and records what it measures into the sidecar's
worker-metrics directory. Worker 0 is the lead: it also owns
the state that must see the whole stream once (the shadow evaluator and its one compute
budget, the drift detector's windows, the one sample-store writer), fed by its own
analyses and by those the other workers forward through a ring each. The others forward
what the lead's stages need (the image and detections, never the bodies).

It runs at a lower CPU priority than Envoy, so on a shared core the data plane is
scheduled first. SIGINT (a terminal's Ctrl-C reaches the whole group) is ignored: the
lookout process decides when workers stop. SIGTERM, or lookout closing the ring, means
finish what is queued, let the lead's stages drain (samples committed), exit 0. A worker
whose lookout process has gone exits on its own.

It is started with its `WorkerSpec` (`worker_spec.py`): the settings cut for it in the
lookout process, never the whole configuration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable

from lookout.sidecar.chain import AnalysisChain
from lookout.sidecar.dataplane.exchange_spans import ExchangeSpans
from lookout.sidecar.dataplane.tap_record import TapDecoder
from lookout.sidecar.model_chains import ModelChains
from lookout.sidecar.pipeline.analysis import Analysis, Outcome
from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.pipeline.parse_errors import Reason
from lookout.sidecar.processes import wire
from lookout.sidecar.processes.child_metrics import record_into
from lookout.sidecar.processes.label_file import FollowedLabels
from lookout.sidecar.processes.lead_forward import Forwarder
from lookout.sidecar.processes.margin_file import COMPONENT as MARGINS_COMPONENT
from lookout.sidecar.processes.margin_file import FollowedMargins
from lookout.sidecar.processes.worker_spec import WorkerSpec
from lookout.sidecar.runtime.logs import FailureLog, configure_logging
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.served_models import ModelLabels

log = logging.getLogger(__name__)

NICENESS = 10
BATCH = 64
PARENT_CHECK_SECONDS = 1.0
# after its last record a worker polls its rings this often for this long before it
# sleeps on their wake pipes: under traffic, records never cost Envoy a wake-up (a
# record waits at most 5 ms: 50 of them at 10,000 requests a second)
POLL_SECONDS, AWAKE_SECONDS = 0.005, 0.25
STAGE_DRAIN_SECONDS = 10.0
FORWARD_QUEUE = "lead_worker"
RECORD_COMPONENT = "record"  # a ring record that does not decode


class AnalysisWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        settings = spec.settings
        self.spec = spec
        self.metrics = SidecarMetrics(settings.labels.model_name,
                                      settings.labels.model_version, process_metrics=False)
        self.inboxes = [Ring.attach(address) for address in spec.inboxes]
        self.forwards = [Ring.attach(address) for address in spec.forwards]
        self.stopping = threading.Event()
        self._failures = FailureLog(log)
        self.spans = ExchangeSpans.from_env(os.environ)  # checked by lookout at start-up
        components: list[str] = []
        if spec.lead:
            margins = FollowedMargins(
                spec.margins_path, lambda: self.metrics.component_error(MARGINS_COMPONENT)
            ).factor if spec.margins_path else None
            self.chains = ModelChains(settings.chains, self.metrics, margins=margins)
            queues = [*self.chains.queues, FORWARD_QUEUE]
            components = [MARGINS_COMPONENT] if spec.margins_path else []
        else:
            forwarder = Forwarder(self.forwards[0],
                                  lambda: self.metrics.queue_dropped(FORWARD_QUEUE)) \
                if any(model.feeds_lead for model in settings.chains.models) else None
            self.chains = ModelChains(settings.chains, self.metrics, lambda model, metrics:
                                      AnalysisChain.forwarding(model, metrics, forwarder))
            queues = [FORWARD_QUEUE]
        self.metrics.initialise(queues=queues,
                                components=[*self.chains.components, *components])
        for model in settings.chains.models:  # each model's series from 0
            self.metrics.labelled(model.name, model.version).initialise(
                reasons=list(Reason), outcomes=list(Outcome))
        lost = sum(ring.abandon_claimed() for ring in self.inboxes)
        if lost:  # what the worker before this one held when it died
            self.metrics.observed(Outcome.LOST, lost)
            log.warning("analysis worker %d: %d observations were lost with the worker "
                        "before this one", spec.index, lost)
        if spec.lead:
            for ring in self.forwards:
                ring.abandon_claimed()

    def _decoders(self) -> list[Callable[[memoryview], list]]:
        """How each inbox's tap records become observations (`tap/PROTOCOL.md`): one
        decoder per ring, where the bodies sent ahead of their records wait."""
        settings = self.spec.settings
        labels = FollowedLabels.of(settings.labels, path=self.spec.labels_path) \
            if self.spec.labels_path else ModelLabels.of(settings.labels)
        return [TapDecoder(settings.routes, labels, pending_bytes=inbox.capacity,
                           spans=self.spans).decode for inbox in self.inboxes]

    def run(self) -> None:
        self.chains.start()
        decoders = self._decoders()
        rings = [*self.inboxes, *(self.forwards if self.spec.lead else [])]
        idle_since = time.monotonic()
        while True:
            busy = False
            for inbox, decode in zip(self.inboxes, decoders, strict=True):
                busy |= self._analyse(inbox, decode)
            if self.spec.lead:
                busy |= self._take_forwarded()
            if busy:
                idle_since = time.monotonic()
                continue
            if self._finished():
                break
            if os.getppid() != self.spec.parent_pid:
                log.warning("analysis worker %d: lookout's process is gone; exiting",
                            self.spec.index)
                return
            if time.monotonic() - idle_since < AWAKE_SECONDS:
                time.sleep(POLL_SECONDS)  # awake: the producers make no system call for us
            else:
                self._sleep(rings)
        self.stop()

    @staticmethod
    def _sleep(rings: list[Ring]) -> None:
        """Block until a producer wakes us (`channel.py`): say so first, then look once
        more, so a record put in between is not left waiting for the timeout."""
        for ring in rings:
            ring.consumer_sleeps(True)
        if not any(ring.waiting for ring in rings):
            select.select([ring.wake_fd for ring in rings], [], [], PARENT_CHECK_SECONDS)
        for ring in rings:
            ring.consumer_sleeps(False)
            ring.clear_wakeups()

    def _finished(self) -> bool:
        """Told to stop and nothing left: lookout closed (or SIGTERM), and for the lead
        every forwarding worker has closed its ring too."""
        if not (self.stopping.is_set() or all(ring.closing for ring in self.inboxes)):
            return False
        forwarded = self.forwards if self.spec.lead else []
        return all(ring.closing and not ring.waiting for ring in forwarded) \
            and not any(ring.waiting for ring in self.inboxes)

    def _analyse(self, inbox: Ring, decode: Callable[[memoryview], list]) -> bool:
        batch: list = []
        taken = 0
        while len(batch) < BATCH:
            try:
                observations = inbox.take(decode)
            except ValueError:  # a record this worker cannot read: counted, skipped
                inbox.finish()
                self.metrics.component_error(RECORD_COMPONENT)
                self._failures.exception("record", "an exchange record could not be read")
                continue
            if observations is None:
                break
            taken += 1
            batch.extend(observations)
        if not taken:
            return False
        if not batch:
            inbox.finish(taken)
            return True
        try:
            self.chains.analyse_batch(batch)
        finally:
            inbox.finish(taken)
        return True

    def _take_forwarded(self) -> bool:
        busy = False
        for ring in self.forwards:
            for _ in range(BATCH):
                record = ring.take()
                if record is None:
                    break
                busy = True
                try:
                    self.chains.offer_forwarded(wire.loads(record, Analysis))
                except Exception:
                    self.metrics.component_error(self.chains.default.reference.name)
                    self._failures.exception("forwarded", "reference stage failed on a "
                                             "forwarded analysis")
                finally:
                    ring.finish()
        return busy

    def stop(self) -> None:
        self.chains.drain_and_close(STAGE_DRAIN_SECONDS)
        if self.spans is not None:
            self.spans.close()
        if not self.spec.lead:
            self.forwards[0].close_writing()


def run(spec: WorkerSpec) -> None:
    """The process's body, once `worker_spec.main` has imported this module."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    record_into(spec.metrics_dir)
    configure_logging(spec.settings.log_level)
    with contextlib.suppress(OSError):  # not permitted here: scheduling stays as it is
        os.nice(NICENESS)
    worker = AnalysisWorker(spec)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    worker.run()
