"""All of lookout's process wiring, in one place: Envoy's supervision (`envoy.py`), the
analysis worker pool and its rings (`analysis_pool.py`), the restart supervisor of the
spawned workers (`supervisor.py`), what one worker is started with (`worker_spec.py`),
one worker's body (`analysis_worker.py`) and its hand-on to the lead (`lead_forward.py`),
the one serialisation between processes (`wire.py`), and the metric files children
record into (`child_metrics.py`). Nothing outside this package starts a process."""
