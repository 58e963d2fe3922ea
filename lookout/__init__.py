"""lookout: an observability and SLO sidecar for GPU YOLO inference containers.

This package is the composition root. `lookout.cli` is the command line; the parts it
composes live beside it in the namespace: `lookout.sidecar` (the running sidecar),
`lookout.shadow_eval`, `lookout.slo`, `lookout.alerts`, `lookout.dashboards`,
`lookout.runbooks`, `lookout.canary`, `lookout.k8s` and `lookout.lookout_demo`. Nothing
below the command line imports it.
"""
