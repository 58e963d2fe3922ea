"""The sidecar's options as flags, shared by `serve` and `demo`."""

from __future__ import annotations

import argparse
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


__all__ = ["ConfigError", "add_config_options", "config_from"]
