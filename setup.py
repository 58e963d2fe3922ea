"""The package list, computed. The repository's rooms (`sidecar/`, `slo/`, ...) sit at
the top where a reader looks for them, and `lookout/` holds a link to each, so they
install as `lookout.sidecar`, `lookout.slo`, ... with no mapping: mypy, editors and
Python all find `lookout.sidecar.config` at `lookout/sidecar/config.py`, and nothing of
lookout's is a bare top-level module."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["lookout", "lookout.*"]),
    package_data={"lookout.lookout_demo": ["models/*.onnx"],
                  "lookout.sidecar.pipeline.protos": ["*.binpb"],
                  "lookout.sidecar.samples": ["gallery.css"],
                  # the tap Envoy loads (`make tap`, the image's build stage)
                  "lookout.sidecar.dataplane": ["*.so"]},
)
