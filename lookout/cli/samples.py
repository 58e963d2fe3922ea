"""`lookout samples list|show|export|prune|serve`: postmortem retrieval of stored input
samples.

Three sources, one output: a running sidecar's admin API (`--url http://pod:9090`, with
the admin token from `--token-file`, `LOOKOUT_ADMIN_TOKEN` or `--token`), a sample
store directory copied out of a dead pod (`--store DIR`), or the fleet's object store
every sidecar uploads to (`--store s3://bucket/prefix`, `gs://...`, `az://...`;
credentials from the standard environment). All give the same JSON, so the same table,
detail view and export come out of any.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lookout.cli import samples_prune, samples_serve
from lookout.sidecar.samples.query import (
    EXPORT_MAX,
    FILTERS,
    FORMATS,
    SOURCES,
    QueryError,
    SampleQuery,
)

if TYPE_CHECKING:  # rich, the store and Pillow load only for the command that uses them
    from rich.console import Console

    from lookout.sidecar.samples.fleet_store import FleetStore

TOKEN_ENV = "LOOKOUT_ADMIN_TOKEN"
TIMEOUT = 30.0


class SourceError(RuntimeError):
    """The samples cannot be had; the message says why."""


class Source(Protocol):
    def list(self, params: dict[str, str]) -> dict[str, Any]: ...

    def show(self, sample_id: str) -> dict[str, Any]: ...

    def image(self, sample_id: str, boxes: str) -> bytes: ...

    def export(self, params: dict[str, str], destination: Path,
               progress: Callable[[int, int | None], None]) -> int: ...


class ApiSource:
    """A running sidecar's admin port."""

    def __init__(self, url: str, token: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise SourceError(f"--url {url!r}: expected http:// or https://")
        self._url = url.rstrip("/")
        self._token = token

    def _open(self, path: str, params: dict[str, str] | None = None):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(f"{self._url}{path}{query}", headers={
            "Authorization": f"Bearer {self._token}"})
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            raise SourceError(f"{self._url}: {error.code} {_error_message(error.read())}") \
                from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SourceError(f"cannot reach {self._url}: {reason}") from None

    def list(self, params: dict[str, str]) -> dict[str, Any]:
        with self._open("/samples", params) as response:
            return json.load(response)

    def show(self, sample_id: str) -> dict[str, Any]:
        with self._open(f"/samples/{urllib.parse.quote(sample_id, safe='')}") as response:
            return json.load(response)

    def image(self, sample_id: str, boxes: str) -> bytes:
        path = f"/samples/{urllib.parse.quote(sample_id, safe='')}/image"
        with self._open(path, {"boxes": boxes} if boxes else None) as response:
            return response.read()

    def export(self, params: dict[str, str], destination: Path,
               progress: Callable[[int, int | None], None]) -> int:
        with self._open("/samples/export", params) as response, \
                open(destination, "wb") as out:
            total = response.headers.get("Content-Length")
            done = 0
            while chunk := response.read(256 * 1024):
                out.write(chunk)
                done += len(chunk)
                progress(done, int(total) if total else None)
            return int(response.headers.get("X-Lookout-Samples", "0"))


def fleet_store(url: str) -> FleetStore:
    """The fleet's object store at `url`; the endpoint and region, when not the
    provider's own, from LOOKOUT_SAMPLE_STORE_ENDPOINT/_REGION or AWS_ENDPOINT_URL."""
    from lookout.sidecar.samples.bucket import BucketOptions, open_bucket
    from lookout.sidecar.samples.fleet_store import FleetStore
    from lookout.sidecar.samples.layout import parse_store_url

    try:
        parsed = parse_store_url(url)
    except ValueError as error:
        raise SourceError(f"--store {url}: {error}") from None
    options = BucketOptions(
        endpoint=os.environ.get("LOOKOUT_SAMPLE_STORE_ENDPOINT")
        or os.environ.get("AWS_ENDPOINT_URL", ""),
        region=os.environ.get("LOOKOUT_SAMPLE_STORE_REGION", ""))
    try:
        return FleetStore(open_bucket(parsed, options), parsed)
    except Exception as error:  # the client refuses its configuration
        raise SourceError(f"--store {url}: {error}") from None


def is_url(where: str) -> bool:
    """`s3://...` and its misspellings (`s3:/x`) are URLs; `./copy` and `/mnt/x` are not."""
    return re.match(r"[a-z][a-z0-9+.-]*:/", where) is not None


class StoreSource:
    """A sample store directory, e.g. a volume copied out of a dead pod (opened without
    the repair pass: a copy made for a postmortem is evidence and is left as it is), or
    the fleet's object store (a URL)."""

    def __init__(self, directory: str) -> None:
        from lookout.sidecar.samples.store import INDEX_NAME, SampleStore, StoreError

        self.store: SampleStore | FleetStore
        self.fleet = is_url(directory)
        if self.fleet:
            self.store = fleet_store(directory)
            return
        if not (Path(directory) / INDEX_NAME).is_file():
            raise SourceError(f"{directory} is not a sample store (no {INDEX_NAME})")
        try:
            self.store = SampleStore(directory, repair=False)
        except StoreError as error:
            raise SourceError(str(error)) from None

    def _query(self, params: dict[str, str]) -> SampleQuery:
        try:
            return SampleQuery.from_params(params)
        except QueryError as error:
            raise SourceError(str(error)) from None

    def _fleet(self, call: Callable[[], Any]) -> Any:
        """A bucket's failure as the command's error: what failed, not a traceback."""
        from lookout.sidecar.samples.bucket import explain
        from lookout.sidecar.samples.store import StoreError

        try:
            return call()
        except (SourceError, QueryError, StoreError):
            raise
        except Exception as error:
            if self.fleet:
                raise SourceError(f"{self.store.directory}: {explain(error)}") from None
            raise

    def list(self, params: dict[str, str]) -> dict[str, Any]:
        page = self._fleet(lambda: self.store.query(self._query(params)))
        return {"samples": [s.to_json() for s in page.samples], "next_cursor": page.next_cursor}

    def _sample(self, sample_id: str):
        sample = self._fleet(lambda: self.store.get(sample_id))
        if sample is None:
            raise SourceError(f"no sample {sample_id!r} in {self.store.directory}")
        return sample

    def show(self, sample_id: str) -> dict[str, Any]:
        return self._sample(sample_id).to_json()

    def image(self, sample_id: str, boxes: str) -> bytes:
        from lookout.sidecar.samples.export import box_layers
        from lookout.sidecar.samples.thumbnails import draw_boxes

        sample = self._sample(sample_id)
        data = self._fleet(lambda: self.store.read(sample))
        wanted = [b for b in boxes.split(",") if b]
        return draw_boxes(data, box_layers(sample, wanted)) if wanted else data

    def export(self, params: dict[str, str], destination: Path,
               progress: Callable[[int, int | None], None]) -> int:
        from lookout.sidecar.samples.export import write_export

        params = dict(params)
        export_format, source = params.pop("format"), params.pop("source")
        most = int(params.pop("limit"))
        query = self._query(params)
        # counting a bucket's samples would cost a listing of its own: no total there
        total = None if self.fleet else min(most, self.store.count())
        with open(destination, "wb") as out:
            return self._fleet(lambda: write_export(
                self.store, self.store.iterate(query, most), out, export_format, source,
                lambda done: progress(done, total)))


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:200]


def add_commands(commands: argparse._SubParsersAction) -> None:
    samples = commands.add_parser("samples", help="list, show and export stored input samples")
    samples.set_defaults(run=run)
    actions = samples.add_subparsers(dest="samples_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--url", help="a sidecar's admin address, e.g. http://pod:9090")
        where.add_argument("--store", metavar="DIR|URL", help="a sample store directory, or "
                           "the fleet's object store (s3://bucket/prefix, gs://..., az://...)")
        parser.add_argument("--token", help=f"admin token (prefer --token-file or {TOKEN_ENV}: "
                            f"a token on the command line shows in `ps`)")
        parser.add_argument("--token-file", help="file holding the admin token")

    def filters(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since", help="start: 1h (ago), unix seconds or RFC 3339")
        parser.add_argument("--until", help="end, in the same forms")
        for name in FILTERS:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=f"filter_{name}")

    listing = actions.add_parser("list", help="samples, newest first")
    common(listing)
    filters(listing)
    listing.add_argument("--limit", type=int, default=50, help="samples per page (1-1000)")
    listing.add_argument("--cursor", help="continue after a previous page")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    listing.add_argument("--wide", action="store_true", help="every column, whatever the "
                         "terminal's width (ids are never cut either way)")

    show = actions.add_parser("show", help="one sample's details, optionally its image")
    common(show)
    show.add_argument("id")
    show.add_argument("--image", metavar="FILE", help="save the thumbnail here")
    show.add_argument("--boxes", default="", help="draw detections on the saved image: "
                      "primary, reference or both (primary,reference)")
    show.add_argument("--json", action="store_true", help="print the API's JSON")

    export = actions.add_parser("export", help="a zip for relabelling (COCO or YOLO)")
    common(export)
    filters(export)
    export.add_argument("--format", choices=FORMATS, default="coco")
    export.add_argument("--source", choices=SOURCES, default="primary",
                        help="whose detections become the pre-annotations")
    export.add_argument("--limit", type=int, default=EXPORT_MAX,
                        help=f"most samples (up to {EXPORT_MAX})")
    export.add_argument("-o", "--output", required=True, help="zip file to write")

    samples_prune.add_command(actions)
    samples_serve.add_command(actions)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip()
    return args.token or os.environ.get(TOKEN_ENV, "")


def _source(args: argparse.Namespace) -> Source:
    if args.store:
        return StoreSource(args.store)
    token = _token(args)
    if not token:
        raise SourceError(f"--url needs the admin token: --token-file, {TOKEN_ENV} or --token")
    return ApiSource(args.url, token)


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = {key: str(value) for key in ("since", "until", "cursor", "limit")
              if (value := getattr(args, key, None)) is not None}
    params.update({name: value for name in FILTERS
                   if (value := getattr(args, f"filter_{name}", None))})
    return params


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    from rich.console import Console

    if args.samples_command == "serve":
        return samples_serve.run(args)
    if args.samples_command == "prune":
        return samples_prune.run(args)
    console = console or Console()
    try:
        source = _source(args)
        if args.samples_command == "list":
            _list(source, args, console)
        elif args.samples_command == "show":
            _show(source, args, console)
        else:
            _export(source, args, console)
    except (SourceError, OSError) as error:
        print(f"lookout samples: {error}", file=sys.stderr)
        return 1
    return 0


def _detections(sample: dict[str, Any], key: str) -> str:
    found = sample.get(key)
    return "-" if found is None else str(len(found))


# the listing's columns, the most telling first: (heading, width it needs, its cell)
LIST_COLUMNS: tuple[tuple[str, int, Callable[[dict[str, Any]], str]], ...] = (
    ("id", 32, lambda s: s["id"]),
    ("time (UTC)", 23, lambda s: s["time_utc"][:23].replace("T", " ")),
    ("strategy", 12, lambda s: s["strategy"]),
    ("status", 6, lambda s: str(s["status"])),
    ("agreement", 9, lambda s: "-" if s["agreement"] is None else f"{s['agreement']:.2f}"),
    ("version", 8, lambda s: s["version"]),
    ("latency", 8, lambda s: f"{s['latency_seconds'] * 1000:.0f} ms"),
    ("primary", 7, lambda s: _detections(s, "primary_detections")),
    ("reference", 9, lambda s: _detections(s, "reference_detections")),
    ("model", 10, lambda s: s["model"]),
    ("trace id", 32, lambda s: s["trace_id"] or "-"),
)
COLUMN_GAP = 3  # rich's padding and rule between columns


def list_columns(width: int, wide: bool) -> list[tuple[str, int, Callable]]:
    """The columns that fit `width` whole, in LIST_COLUMNS' order (all with `wide`):
    a column is dropped, never cut, and the id always stays."""
    if wide:
        return list(LIST_COLUMNS)
    chosen, used = [], 1
    for column in LIST_COLUMNS:
        if used + column[1] + COLUMN_GAP <= width or not chosen:
            chosen.append(column)
            used += column[1] + COLUMN_GAP
    return chosen


def _list(source: Source, args: argparse.Namespace, console: Console) -> None:
    page = source.list(_params(args))
    if args.json:
        console.print_json(json.dumps(page))
        return
    from rich.table import Table

    columns = list_columns(console.width, args.wide)
    table = Table()
    for heading, width, _ in columns:
        # whole values: a column that does not fit was left out above, never cut here
        table.add_column(heading, min_width=min(width, len(heading)), no_wrap=True,
                         overflow="ignore")
    for s in page["samples"]:
        table.add_row(*(cell(s) for _, _, cell in columns))
    if args.wide:
        console.width = max(console.width, sum(w + COLUMN_GAP for _, w, _ in columns) + 1)
    console.print(table, crop=False, soft_wrap=True)
    left_out = [heading for heading, *_ in LIST_COLUMNS if heading not in
                {c[0] for c in columns}]
    if left_out:
        console.print(f"(not shown at this width: {', '.join(left_out)}; --wide shows all)")
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}")


def _show(source: Source, args: argparse.Namespace, console: Console) -> None:
    sample = source.show(args.id)
    if args.image:
        Path(args.image).write_bytes(source.image(args.id, args.boxes))
    if args.json:
        console.print_json(json.dumps(sample))
        return
    for key in ("id", "time_utc", "trace_id", "model", "version", "strategy", "route",
                "status", "latency_seconds", "agreement"):
        console.print(f"[bold]{key}[/bold]: {sample[key]}")
    image, thumb = sample["image"], sample["thumbnail"]
    console.print(f"[bold]image[/bold]: {image['width']}x{image['height']}"
                  f"{' (original kept)' if image['original_kept'] else ''}; thumbnail "
                  f"{thumb['width']}x{thumb['height']} {thumb['media_type']}")
    for key in ("primary_detections", "reference_detections"):
        for detection in _rows(sample.get(key)):
            console.print(f"  {key.split('_')[0]:9} {detection}")
    if sample.get("features"):
        console.print("[bold]features[/bold]: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sample["features"].items()))
    if args.image:
        console.print(f"image written to {args.image}")


def _rows(detections: list[dict[str, Any]] | None) -> Iterator[str]:
    for d in detections or []:
        box = ", ".join(f"{v:.0f}" for v in d["box"])
        yield f"{d['class']:>12} {d['score']:.2f} [{box}]"


def _export(source: Source, args: argparse.Namespace, console: Console) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    params = {**_params(args), "format": args.format, "source": args.source}
    columns = [TextColumn("exporting"), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if args.url else \
        [TextColumn("{task.completed}/{task.total} samples")]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("export", total=None)

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        count = source.export(params, Path(args.output), advance)
    console.print(f"{count} samples written to {args.output} ({args.format})")
