"""`lookout`: the command table. Each group adds its commands and names the function
that runs each; what a command needs is imported when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lookout.cli import audit, canary, demo, generate, kubernetes, samples, serve, shadow
from lookout.sidecar import __version__

GROUPS = (serve, demo, shadow, samples, audit, generate, kubernetes, canary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookout",
        description="Observability and SLO sidecar for YOLO inference servers.",
    )
    parser.add_argument("--version", action="version", version=f"lookout {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
