"""The floor module bench/envoy_parts.py loads in the tap's place (bench/floor_module.c):
Envoy refuses a module that lacks any hook its ABI calls, so the floor must define every
hook the tap does, or the bench's floor variants would only measure a refusal."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lookout.sidecar.dataplane.abi import module_abi
from tests.support.processes import require_tool


def _hooks(library: Path) -> set[str]:
    listing = subprocess.run(["nm", "-D", "--defined-only", str(library)], check=True,
                             capture_output=True, text=True).stdout
    return {line.split()[-1] for line in listing.splitlines()
            if line.split()[-1].startswith("envoy_dynamic_module_on_")}


def test_the_floor_module_builds_with_every_hook_the_tap_has(tmp_path: Path) -> None:
    require_tool("gcc")
    require_tool("nm")
    from bench.envoy_parts import FLOOR_NAME, modules_folder

    folder = modules_folder(tmp_path)
    tap = next(folder.glob("liblookout_tap.so")).resolve()
    floor = folder / f"lib{FLOOR_NAME}.so"
    assert _hooks(tap), "the tap defines no hooks: nothing was compared"
    assert _hooks(floor) == _hooks(tap)
    assert module_abi(tap) in floor.read_bytes().decode("latin-1")
