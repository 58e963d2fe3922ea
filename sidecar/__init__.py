"""lookout's data plane: the reverse proxy, its telemetry and the observation pipeline."""

__version__ = "0.1.0"
