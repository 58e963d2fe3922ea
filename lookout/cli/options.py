"""The sidecar's options as flags, shared by `serve` and `demo`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields

from lookout.sidecar.config import Config, ConfigError, load_config


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML file of options (also LOOKOUT_CONFIG)")
    help_by_name = Config.option_help()
    for spec in fields(Config):
        flag = "--" + spec.name.replace("_", "-")
        env = f"LOOKOUT_{spec.name.upper()}"
        default = spec.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(flag, dest=spec.name, metavar="VALUE",
                            help=f"{help_by_name[spec.name]} (env {env}, default {shown})")


def config_from(args: argparse.Namespace) -> Config:
    """The merged configuration; raises ConfigError naming the bad key."""
    cli_values = {spec.name: getattr(args, spec.name) for spec in fields(Config)}
    return load_config(cli_values, config_file=args.config)


def run_configured(args: argparse.Namespace, body: Callable[[Config], int]) -> int:
    """Load the configuration (exit 2 naming the bad key), set up logging, run `body`
    (exit 1 when the sidecar cannot start)."""
    try:
        config = config_from(args)
    except ConfigError as error:
        print(f"lookout: configuration error: {error}", file=sys.stderr)
        return 2
    from lookout.sidecar.runtime.logs import configure_logging
    from lookout.sidecar.server import StartupError

    configure_logging(config.log_level)
    try:
        return body(config)
    except StartupError as error:
        print(f"lookout: {error}", file=sys.stderr)
        return 1
