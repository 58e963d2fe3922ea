"""One analysis chain per served model, in one worker (one thread feeds it: the worker's
loop).

Observations arrive labelled with their model by the request path (`served_models`).
Each configured model has its chain from the start; a model discovered in service gets
one on its first observation, built from the pod's settings and the input size the
server's metadata gives; `other` (a model beyond `max_models`, or one the server does
not have) is counted as not analysed, since decoding it would be guesswork. In the lead
worker every chain shares one sample recorder: one store, one writer; and the lead alone
samples the pod's GPUs (one NVML collector per pod, off the request path).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

from lookout.sidecar.chain import AnalysisChain
from lookout.sidecar.pipeline.analysis import Analysis, Outcome
from lookout.sidecar.pipeline.observation import Observation
from lookout.sidecar.runtime.gpu import GpuCollector
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.samples.recorder import SampleRecorder
from lookout.sidecar.served_models import (
    OTHER_MODEL,
    UNKNOWN_VERSION,
    ChainSettings,
    ModelSettings,
    fetch_input_size,
)

log = logging.getLogger(__name__)

ChainBuilder = Callable[[ModelSettings, SidecarMetrics], AnalysisChain]


class ModelChains:
    name = "analysis"  # the `component` label of a failed batch

    def __init__(self, settings: ChainSettings, metrics: SidecarMetrics,
                 build: ChainBuilder | None = None,
                 margins: Callable[[str], float] | None = None) -> None:
        """`build` makes one model's chain (the lead's full chain by default, whose
        trust bands follow `margins`)."""
        self._settings = settings
        self._margins = margins
        self._metrics = metrics
        self.samples: SampleRecorder | None = None
        self.gpu: GpuCollector | None = None
        if build is None:
            if settings.pod.samples.sample_dir:
                self.samples = SampleRecorder(settings.pod.samples, metrics)
            self.gpu = GpuCollector(settings.gpu, metrics)
            build = self._lead_chain
        self._build = build
        self._started = False
        self.chains: dict[str, AnalysisChain] = {
            model.name: build(model, metrics.labelled(model.name, model.version))
            for model in settings.models}
        self.default = self.chains[settings.models[0].name]
        self._other = metrics.labelled(OTHER_MODEL, UNKNOWN_VERSION)

    def _lead_chain(self, model: ModelSettings, metrics: SidecarMetrics) -> AnalysisChain:
        return AnalysisChain.build(model, metrics, self.samples, self._margins)

    def chain_for(self, model: str) -> AnalysisChain | None:
        chain = self.chains.get(model)
        if chain is not None or model == OTHER_MODEL:
            return chain
        pod = self._settings.pod
        size = fetch_input_size(self._settings.upstream, model,
                                self._settings.connect_timeout)
        log.info("analysing discovered model %r (input size %s)", model,
                 size or f"{pod.analysis.input_size}, the default")
        chain = self.chains[model] = self._build(
            pod.discovered(model, size), self._metrics.labelled(model, UNKNOWN_VERSION))
        if self._started:
            chain.start()
        return chain

    def analyse_batch(self, observations: Sequence[Observation]) -> None:
        by_model: dict[str, list[Observation]] = defaultdict(list)
        for observation in observations:
            by_model[observation.model].append(observation)
        for model, group in by_model.items():
            chain = self.chain_for(model)
            if chain is None:
                self._other.observed(Outcome.NOT_ANALYSED, len(group))
            else:
                chain.analyse_batch(group)

    def offer_forwarded(self, analysis: Analysis) -> None:
        """An analysis another worker made: to its model's reference stage."""
        chain = self.chain_for(analysis.observation.model)
        if chain is not None:
            chain.offer_forwarded(analysis)

    @property
    def components(self) -> list[str]:
        names = {name: None for chain in self.chains.values() for name in chain.components}
        if self.samples is not None:
            names[self.samples.name] = None
        return list(names)

    @property
    def queues(self) -> list[str]:
        names = {name: None for chain in self.chains.values() for name in chain.queues}
        return list(names)

    def start(self) -> None:
        for chain in self.chains.values():
            chain.start()
        if self.samples is not None:
            self.samples.start()
        if self.gpu is not None:
            self.gpu.start()
        self._started = True

    def drain_and_close(self, timeout: float) -> None:
        """Every model's chain in its order, then the shared recorder they feed."""
        for chain in list(self.chains.values()):
            chain.drain_and_close(timeout)
        if self.samples is not None:
            self.samples.drain(timeout)
            self.samples.close()
        if self.gpu is not None:
            self.gpu.close()

    def abandon(self) -> None:
        for chain in list(self.chains.values()):
            chain.abandon()
        if self.samples is not None:
            self.samples.close()
        if self.gpu is not None:
            self.gpu.close()
