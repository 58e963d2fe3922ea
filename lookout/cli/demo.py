"""`lookout demo` and `lookout demo-upstream`: the shipped model behind the sidecar."""

from __future__ import annotations

import argparse
import sys

from lookout.cli.options import add_config_options, run_configured
from lookout.sidecar.config import Config


def add_commands(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="the shipped model behind the sidecar, fed by a drifting synthetic camera"
    )
    demo.add_argument("--duration", type=float, default=None,
                      help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=10.0,
                      help="camera frames per second (default 10)")
    add_config_options(demo)
    demo.set_defaults(run=run_demo)

    upstream = commands.add_parser(
        "demo-upstream",
        help="serve a YOLOv8-layout ONNX model over /predict and KServe V2 (demo and tests)",
    )
    upstream.add_argument("--model", help="ONNX model with Ultralytics metadata "
                          "(default: the shipped primary model)")
    upstream.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT to listen on")
    upstream.add_argument("--port", type=int, help="port on 127.0.0.1 (short for --listen)")
    upstream.add_argument("--model-name", default="yolo", help="name in KServe V2 paths")
    upstream.set_defaults(run=run_upstream)


def run_demo(args: argparse.Namespace) -> int:
    def demo(config: Config) -> int:
        from lookout.lookout_demo.run import run_demo as run_world

        return run_world(config, duration=args.duration, rate=args.rate)

    return run_configured(args, demo)


def run_upstream(args: argparse.Namespace) -> int:
    from lookout.lookout_demo import server
    from lookout.lookout_demo.models import PRIMARY
    from lookout.shadow_eval.runner import ModelLoadError
    from lookout.sidecar.config import parse_address
    from lookout.sidecar.runtime.logs import configure_logging

    configure_logging("info")
    address = parse_address(f"127.0.0.1:{args.port}" if args.port else args.listen)
    try:
        server.run(args.model or str(PRIMARY), address.host, address.port, args.model_name)
    except ModelLoadError as error:
        print(f"lookout: {error}", file=sys.stderr)
        return 1
    return 0
