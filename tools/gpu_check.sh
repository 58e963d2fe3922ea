#!/usr/bin/env bash
# The device check: run on a machine with an NVIDIA GPU (a lent device machine, a GPU
# node), from the repository's root. Installs nothing: it needs python3 with numpy,
# onnxruntime-gpu, nvidia-ml-py, prometheus-client, Pillow and PyYAML, and nvidia-smi.
# Where lookout is not installed it runs from this checkout through a namespace shim
# (the repository's folders under `lookout.`, as setup.py installs them).
#
#   bash tools/gpu_check.sh [OUT_DIR]        # writes OUT_DIR/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
python=${PYTHON:-python3}
if ! "$python" -c "import lookout.sidecar" 2>/dev/null; then
    shim="$(mktemp -d)"
    mkdir "$shim/lookout"
    for entry in lookout/*; do ln -s "$PWD/$entry" "$shim/lookout/"; done
    for part in sidecar shadow_eval slo alerts dashboards runbooks k8s canary lookout_demo; do
        ln -s "$PWD/$part" "$shim/lookout/$part"
    done
    export PYTHONPATH="$shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$python" tools/gpu_check.py --out "$out"
