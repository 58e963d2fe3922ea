"""The settings each part of the sidecar, and each process it starts, is given: cut from
the one `Config` here, in lookout's own process. `per_model` runs here, once; an analysis
worker is started with its `WorkerSettings` (pickled at spawn), never the configuration.

With `server.py`, this is the composition: the only modules of `sidecar/` that receive a
`Config` (besides its loader, `config.py` and `preflight.py`); `tests/test_layout.py`
holds them to that."""

from __future__ import annotations

from lookout.sidecar.config import Config, per_model
from lookout.sidecar.processes.worker_spec import WorkerSettings
from lookout.sidecar.served_models import ChainSettings, LabelSettings, ModelSettings
from lookout.sidecar.settings import (
    AnalysisSettings,
    DriftSettings,
    GpuSettings,
    SampleSettings,
    ShadowSettings,
    of,
)


def model_settings(config: Config) -> ModelSettings:
    """One model's settings, from its own configuration (an entry of `per_model`)."""
    return ModelSettings(of(AnalysisSettings, config), of(ShadowSettings, config),
                         of(DriftSettings, config) if config.drift else None,
                         of(SampleSettings, config), config.model_sha256)


def served_models(config: Config) -> tuple[ModelSettings, ...]:
    """Every served model's settings, the default model's first."""
    return tuple(model_settings(model) for model in per_model(config).values())


def chain_settings(config: Config, models: tuple[ModelSettings, ...] | None = None
                   ) -> ChainSettings:
    """What one worker's analysis chains are built from (`models`: `served_models`,
    when the caller already has them)."""
    return ChainSettings(served_models(config) if models is None else models,
                         model_settings(config), of(GpuSettings, config), config.upstream,
                         config.connect_timeout)


def worker_settings(config: Config, models: tuple[ModelSettings, ...] | None = None
                    ) -> WorkerSettings:
    """What every analysis worker is started with."""
    return WorkerSettings(chain_settings(config, models), of(LabelSettings, config),
                          config.routes, config.log_level)
