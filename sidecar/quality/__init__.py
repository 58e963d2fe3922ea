"""Shadow evaluation and drift monitoring wired to the sidecar, and the feature store."""
