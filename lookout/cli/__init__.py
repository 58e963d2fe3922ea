"""The `lookout` command line: one module per command group, each importing what its
commands need only when they run, so `lookout serve` loads the data plane alone."""
