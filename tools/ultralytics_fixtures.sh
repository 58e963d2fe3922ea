#!/usr/bin/env bash
# Maintainer only: regenerate tests/data/ultralytics/ with real Ultralytics, in an
# environment of its own (torch is not a lookout dependency). On x86_64 machines of this
# workplace torch 2.14.1 and torchvision 0.29.1 come from the local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=tools/.ultralytics-venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
    "$VENV/bin/pip" install -q "ultralytics>=8.3" onnx
fi
# no network: no font or asset downloads, no pip installs from Ultralytics' checks
YOLO_OFFLINE=1 "$VENV/bin/python" tools/ultralytics_fixtures.py
