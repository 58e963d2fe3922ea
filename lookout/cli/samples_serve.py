"""`lookout samples serve --store DIR|URL`: the gallery over a sample store copied out of
a pod, or over the fleet's object store (`s3://bucket/prefix`: every pod's samples,
alive or gone), on this machine's loopback.

A directory is opened without its repair pass (a copy made for a postmortem is
evidence); nothing is written to either.

Run for a team (the `gallery_url` that alerts, dashboards, runbooks and the canary
judge link to), it takes the team's token from `--token-file` and may then listen
beyond loopback, behind the team's TLS ingress; without one it makes a token nobody
holds, prints a one-time login link, and stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import sys
from pathlib import Path
from urllib.parse import urlencode

DEFAULT_LISTEN = "127.0.0.1:8787"


class ServeError(ValueError):
    """The gallery cannot be served as asked; the message says why."""


def loopback_address(text: str, anywhere: bool = False) -> tuple[str, int]:
    """host:port on loopback: the gallery shows user traffic, and this command has no
    TLS and a token nobody else holds, so it never listens beyond this machine unless
    `anywhere` (a team token was given)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if anywhere and (port.isascii() and port.isdigit() and 0 <= int(port) <= 65535):
        return host or "0.0.0.0", int(port)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ServeError(f"--listen {text}: the local gallery listens on loopback only "
                         f"(127.0.0.1 or [::1]); a gallery for a team needs --token-file")
    if not (port.isascii() and port.isdigit() and 0 <= int(port) <= 65535):
        raise ServeError(f"--listen {text}: expected host:port")
    return host, int(port)


def add_command(actions: argparse._SubParsersAction) -> None:
    serve = actions.add_parser("serve", help="the gallery over a store directory or the "
                               "fleet's object store, on loopback")
    serve.add_argument("--store", metavar="DIR|URL", required=True,
                       help="a sample store directory, or the fleet's object store "
                            "(s3://bucket/prefix, gs://..., az://...)")
    serve.add_argument("--listen", default=DEFAULT_LISTEN,
                       help=f"loopback address to serve on (default {DEFAULT_LISTEN}; "
                            f"port 0: any free one)")
    serve.add_argument("--trace-url-template", default="",
                       help="trace viewer URL with {trace_id}, for the samples' trace links")
    serve.add_argument("--token-file", default="",
                       help="the team's gallery token (a mounted Secret): sign-in takes it, "
                            "and --listen may then be beyond loopback")
    serve.add_argument("--drift-baseline", default="",
                       help="drift baseline to rank the samples' features against")


async def _serve(args: argparse.Namespace, host: str, port: int) -> None:
    from aiohttp import web

    from lookout.cli.samples import SourceError, StoreSource
    from lookout.sidecar.config import parse_trace_url_template
    from lookout.sidecar.samples.admin_token import AdminToken
    from lookout.sidecar.samples.door import Door
    from lookout.sidecar.samples.ui import SampleUi

    try:
        template = parse_trace_url_template(args.trace_url_template)
    except ValueError as error:
        raise ServeError(f"--trace-url-template: {error}") from None
    try:
        store = StoreSource(args.store).store
    except SourceError as error:
        raise ServeError(str(error)) from None
    gallery = SampleUi(Door(AdminToken(_token(args.token_file), args.token_file)),
                       lambda: store, True, template, args.drift_baseline)
    app = web.Application()
    gallery.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    shown = f"[{host}]" if ":" in host else host
    print(f"gallery of {args.store} at http://{shown}:{bound}/ui/samples", flush=True)
    print(f"sign in once with: http://{shown}:{bound}/ui/login/link?"
          f"{urlencode({'code': gallery.sessions.link_code()})}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _token(path: str) -> str:
    if not path:
        return secrets.token_urlsafe(32)
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ServeError(f"--token-file {path}: cannot read it ({error.strerror})") from None
    if len(token) < 16:
        raise ServeError(f"--token-file {path}: a token of at least 16 characters, please")
    return token


def run(args: argparse.Namespace) -> int:
    try:
        host, port = loopback_address(args.listen, anywhere=bool(args.token_file))
        asyncio.run(_serve(args, host, port))
    except ServeError as error:
        print(f"lookout samples serve: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
