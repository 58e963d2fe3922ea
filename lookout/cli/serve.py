"""`lookout serve`: the sidecar in front of an upstream. Loads the data plane only."""

from __future__ import annotations

import argparse
import sys

from lookout.cli.options import ConfigError, add_config_options, config_from


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the sidecar in front of an upstream")
    add_config_options(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ConfigError as error:
        print(f"lookout: configuration error: {error}", file=sys.stderr)
        return 2
    from lookout.sidecar.runtime.logs import configure_logging
    from lookout.sidecar.server import StartupError
    from lookout.sidecar.server import run as run_sidecar

    configure_logging(config.log_level)
    try:
        run_sidecar(config)
    except StartupError as error:
        print(f"lookout: {error}", file=sys.stderr)
        return 1
    return 0
