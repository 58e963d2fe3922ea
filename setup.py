"""The package list, computed: every folder of the repository's packages is installed
under the `lookout.` namespace (`sidecar/` as `lookout.sidecar`, ...), so nothing of
lookout's is a bare top-level module and no folder list is kept by hand."""

from setuptools import find_packages, setup

# the repository folders that ship, each installed as lookout.<folder>
PARTS = ("sidecar", "shadow_eval", "slo", "alerts", "dashboards", "runbooks", "k8s",
         "canary", "lookout_demo")

setup(
    packages=["lookout", *find_packages(include=["lookout.*"]),
              *(f"lookout.{name}" for name in find_packages(
                  include=[f"{part}{suffix}" for part in PARTS for suffix in ("", ".*")]))],
    package_dir={"lookout": "lookout", **{f"lookout.{part}": part for part in PARTS}},
    package_data={"lookout.lookout_demo": ["models/*.onnx", "drift_baseline.json"],
                  "lookout.sidecar.pipeline.protos": ["*.binpb"],
                  "lookout.sidecar.samples": ["gallery.css"],
                  # the tap Envoy loads (`make tap`, the image's build stage)
                  "lookout.sidecar.dataplane": ["*.so"]},
)
