"""Checks at start-up for configuration that would otherwise only fail later, in a
worker, hours into the run: a drift detector that can never be built, a model file that
is not ONNX, a pinned baseline that cannot be read. Each refusal names the key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lookout.shadow_eval.limits import FEATURES, MIN_BASELINE_VALUES

if TYPE_CHECKING:  # config.py calls preflight as it loads: a run-time import would cycle
    from lookout.sidecar.config import Config


class PreflightError(ValueError):
    """A configured value cannot work; the message names the key and what to change."""


def check_drift(config: Config) -> None:
    """The detector needs MIN_BASELINE_VALUES values per feature, and a per-window false
    alarm probability below 1, or drift would be disabled at run time."""
    if not config.drift:
        return
    if config.drift_baseline_path:
        from lookout.shadow_eval.baseline import Baseline, BaselineError  # numpy: only here

        try:
            rows = Baseline.load(config.drift_baseline_path).rows
        except BaselineError as error:
            raise PreflightError(f"drift_baseline_path: {error}") from None
        if len(rows) < MIN_BASELINE_VALUES:
            raise PreflightError(
                f"drift_baseline_path: {config.drift_baseline_path} holds {len(rows)} images; "
                f"the drift detector needs at least {MIN_BASELINE_VALUES}")
    elif config.drift_baseline_size < MIN_BASELINE_VALUES:
        raise PreflightError(
            f"drift_baseline_size: {config.drift_baseline_size} images cannot calibrate the "
            f"drift detector, which needs at least {MIN_BASELINE_VALUES} per feature; set "
            f"{MIN_BASELINE_VALUES} or more, or drift: false")
    if config.drift_window >= len(FEATURES) * config.drift_false_alarm_images:
        raise PreflightError(
            f"drift_window: {config.drift_window} values per window with "
            f"drift_false_alarm_images {config.drift_false_alarm_images} leaves no false "
            f"alarm probability to test at; raise drift_false_alarm_images or shrink the "
            f"window")


def check_model_file(key: str, path: str) -> None:
    if not path:
        return
    from lookout.shadow_eval.names import ModelMetadataError, check_onnx_file

    try:
        check_onnx_file(Path(path))
    except ModelMetadataError as error:
        raise PreflightError(f"{key}: {error}") from None


def check_reference(config: Config) -> None:
    """One reference model, local or remote, and a remote one named."""
    if config.shadow_model_path and config.shadow_reference_url:
        raise PreflightError("shadow_reference_url: set either a local reference model "
                             "(shadow_model_path) or a remote one, not both")
    if config.shadow_reference_url and not config.shadow_reference_model:
        raise PreflightError(f"shadow_reference_model: shadow_reference_url "
                             f"{config.shadow_reference_url} needs the model's V2 name")
    if config.shadow_reference_model and not config.shadow_reference_url:
        raise PreflightError("shadow_reference_url: shadow_reference_model "
                             f"{config.shadow_reference_model!r} is served where? set the "
                             "server's URL")


def preflight(config: Config) -> None:
    """Every start-up check, on a loaded configuration."""
    check_drift(config)
    check_reference(config)
    check_model_file("model_path", config.model_path)
    check_model_file("shadow_model_path", config.shadow_model_path)
