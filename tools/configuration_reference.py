"""Writes docs/CONFIGURATION.md from the option declarations in `sidecar/config.py`, so
the reference cannot drift from what `lookout serve` accepts (tests/test_docs.py
compares the file with what this prints).

    python -m tools.configuration_reference > docs/CONFIGURATION.md
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields

from lookout.sidecar.config import ENV_PREFIX, Config

HEAD = """# Configuration

One typed configuration, merged from defaults < YAML file (`--config FILE` or
`LOOKOUT_CONFIG`) < `LOOKOUT_*` environment variables < command-line flags. Every value
is validated at start-up; an invalid one stops the process (exit 2) with a message
naming the key, its source and what is accepted. `lookout serve --help` lists them all.

This file is generated from the option declarations (`sidecar/config.py`):
`python -m tools.configuration_reference > docs/CONFIGURATION.md`.

| option | env | default | meaning |
| --- | --- | --- | --- |
"""

TAIL = """
Sizes accept `KiB`/`MiB`/`GiB` (and `KB`/`MB`/`GB`); lists are comma-separated in the
environment and YAML lists in the file.

## The descriptor budget

At start-up lookout raises `RLIMIT_NOFILE` to the hard limit and adds up what its caps
allow open at once: Envoy's client connections (2 x `max_client_connections` + 64), the
upstream clusters' connections (`upstream_pool_size`, at least 4,096 a cluster; two with
`grpc_listen`), `admin_max_connections`, two per analysis ring (`envoy_concurrency` x
analysis workers), 16 for the sample store and 128 for the processes' own files. When
the sum does not fit, start-up stops (exit 1) naming the settings to lower, or the
container's `nofile` limit to raise: with the defaults and one analysis worker the sum
is 6,594 (10,690 with a gRPC port). See SECURITY.md for the admin port's limits.
"""

_BINARY_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))
_LONG_DEFAULT = 40  # a default longer than this is named, not printed


def _bytes(value: int) -> str:
    for unit, size in _BINARY_UNITS:
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def shown_default(option: Field[object]) -> str:
    """The default as an operator would type it, with its unit."""
    value = option.default if option.default is not MISSING else None
    if value is None or value == "" or value == ():
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if "_bytes" in option.name and isinstance(value, int):
        return f"`{_bytes(value)}`"
    if isinstance(value, int | float):
        seconds = str(option.metadata["help"]).startswith("seconds")
        return f"`{_number(value)}`" + (" s" if seconds else "")
    text = option.metadata["separator"].join(value) if isinstance(value, tuple) \
        else str(value)
    if len(text) > _LONG_DEFAULT or "\n" in text:
        return "(built in: `lookout serve --help`)"
    return f"`{text}`"


def row(option: Field[object]) -> str:
    meaning = " ".join(str(option.metadata["help"]).split()).replace("|", "\\|")
    return (f"| `{option.name}` | `{ENV_PREFIX}{option.name.upper()}` | "
            f"{shown_default(option)} | {meaning} |")


def reference() -> str:
    return HEAD + "\n".join(row(option) for option in fields(Config)) + "\n" + TAIL


def main() -> None:
    print(reference(), end="")


if __name__ == "__main__":
    main()
