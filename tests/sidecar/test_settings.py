"""Each subsystem takes its own settings, cut from the one flat configuration."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from lookout.sidecar import settings
from lookout.sidecar.config import Config, load_config
from lookout.sidecar.processes.analysis_pool import ChannelSettings
from lookout.sidecar.served_models import LabelSettings

KINDS = [kind for _, kind in inspect.getmembers(settings, dataclasses.is_dataclass)
         ] + [ChannelSettings, LabelSettings]  # cut beside the subsystem that reads them
CONFIG_FIELDS = {field.name: field.type for field in dataclasses.fields(Config)}


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_settings_are_a_subset_of_the_options_under_the_same_names(kind) -> None:
    for field in dataclasses.fields(kind):
        assert CONFIG_FIELDS.get(field.name) == field.type, (kind.__name__, field.name)
    config = load_config({"shadow_rate": "7", "sample_quality": "55"}, env={})
    built = settings.of(kind, config)
    assert all(getattr(built, f.name) == getattr(config, f.name)
               for f in dataclasses.fields(kind))

