"""`lookout` command line: serve, demo, shadow, samples, generate, canary, inject, webhook,
demo-upstream, echo-upstream."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields

from canary import cli as canary_cli
from k8s import cli as k8s_cli
from sidecar import __version__, generate_cli, samples_cli, shadow_cli
from sidecar.config import Config, ConfigError, load_config, parse_address


def _add_config_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookout",
        description="Observability and SLO sidecar for YOLO inference servers.",
    )
    parser.add_argument("--version", action="version", version=f"lookout {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the sidecar in front of an upstream")
    _add_config_options(serve)

    demo = commands.add_parser(
        "demo", help="the shipped model behind the sidecar, fed by a drifting synthetic camera"
    )
    demo.add_argument("--duration", type=float, default=None,
                      help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=10.0,
                      help="camera frames per second (default 10)")
    _add_config_options(demo)

    upstream = commands.add_parser(
        "demo-upstream",
        help="serve a YOLOv8-layout ONNX model over /predict and KServe V2 (demo and tests)",
    )
    upstream.add_argument("--model", help="ONNX model with Ultralytics metadata "
                          "(default: the shipped primary model)")
    upstream.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT to listen on")
    upstream.add_argument("--port", type=int, help="port on 127.0.0.1 (short for --listen)")
    upstream.add_argument("--model-name", default="yolo", help="name in KServe V2 paths")

    shadow_cli.add_commands(commands)
    samples_cli.add_commands(commands)
    k8s_cli.add_commands(commands)
    generate_cli.add_command(commands)
    canary_cli.add_commands(commands)

    echo = commands.add_parser("echo-upstream", help="run the built-in echo upstream")
    echo.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT to listen on")
    return parser


def _config_from(args: argparse.Namespace) -> Config:
    cli_values = {spec.name: getattr(args, spec.name) for spec in fields(Config)}
    return load_config(cli_values, config_file=args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "echo-upstream":
        from sidecar import echo_upstream

        address = parse_address(args.listen)
        echo_upstream.run(address.host, address.port)
        return 0

    if args.command == "demo-upstream":
        return _demo_upstream(args)

    if args.command == "shadow":
        return shadow_cli.run(args)

    if args.command == "samples":
        return samples_cli.run(args)

    if args.command == "inject":
        return k8s_cli.run_inject(args)

    if args.command == "webhook":
        return k8s_cli.run_webhook(args)

    if args.command == "generate":
        return generate_cli.run(args)

    if args.command == "canary":
        return canary_cli.run(args)

    try:
        config = _config_from(args)
    except ConfigError as error:
        print(f"lookout: configuration error: {error}", file=sys.stderr)
        return 2

    from sidecar.logs import configure_logging

    configure_logging(config.log_level)
    from sidecar.server import StartupError

    try:
        if args.command == "serve":
            from sidecar.server import run

            run(config)
            return 0
        from lookout_demo.run import run_demo

        return run_demo(config, duration=args.duration, rate=args.rate)
    except StartupError as error:
        print(f"lookout: {error}", file=sys.stderr)
        return 1


def _demo_upstream(args: argparse.Namespace) -> int:
    from lookout_demo import server
    from shadow_eval.runner import ModelLoadError
    from sidecar.logs import configure_logging

    configure_logging("info")
    from lookout_demo.models import PRIMARY

    address = parse_address(f"127.0.0.1:{args.port}" if args.port else args.listen)
    try:
        server.run(args.model or str(PRIMARY), address.host, address.port, args.model_name)
    except ModelLoadError as error:
        print(f"lookout: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
