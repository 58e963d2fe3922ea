"""`lookout serve`: the sidecar in front of an upstream. Loads the data plane only."""

from __future__ import annotations

import argparse

from lookout.cli.options import add_config_options, run_configured
from lookout.sidecar.config import Config


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the sidecar in front of an upstream")
    add_config_options(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    def serve(config: Config) -> int:
        from lookout.sidecar.server import run as run_sidecar

        run_sidecar(config)
        return 0

    return run_configured(args, serve)
