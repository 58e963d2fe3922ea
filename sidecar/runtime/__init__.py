"""The plumbing every part uses: the metrics registry, tracing, logs, the worker queue, times."""
