"""`lookout samples prune --store URL --older-than 30d`: delete the fleet's samples of
whole hours that ended before a cut-off, for buckets without lifecycle rules (or to cut
one model's samples sooner). A lifecycle rule on the bucket does the same without a
command and is the better default (docs/SAMPLES.md has one); this deletes by the
partition's hour, listing only the partitions it deletes.

On a directory (`--store DIR`) it deletes that store's samples older than the cut-off.
"""

from __future__ import annotations

import argparse
import sys
import time

from lookout.sidecar.samples.layout import HOUR


def add_command(actions: argparse._SubParsersAction) -> None:
    prune = actions.add_parser("prune", help="delete samples older than a cut-off")
    prune.add_argument("--store", metavar="DIR|URL", required=True,
                       help="the fleet's object store (s3://bucket/prefix, gs://..., az://...) "
                            "or a sample store directory")
    prune.add_argument("--older-than", required=True,
                       help="delete samples of hours that ended this long ago (30d, 12h) or "
                            "before this time (unix seconds, RFC 3339)")
    prune.add_argument("--model", help="only this model's samples")
    prune.add_argument("--version", help="only this version's samples")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")


def run(args: argparse.Namespace) -> int:
    from lookout.cli.samples import SourceError, StoreSource, is_url
    from lookout.sidecar.runtime.times import parse_time

    try:
        cutoff = parse_time(args.older_than, time.time())
    except ValueError as error:
        print(f"lookout samples prune: --older-than: {error}", file=sys.stderr)
        return 1
    try:
        source = StoreSource(args.store)
        if is_url(args.store):
            return _prune_fleet(source.store, cutoff, args)
        return _prune_directory(source.store, cutoff, args)
    except SourceError as error:
        print(f"lookout samples prune: {error}", file=sys.stderr)
        return 1


def _prune_fleet(store, cutoff: float, args: argparse.Namespace) -> int:
    from lookout.sidecar.samples.bucket import explain
    from lookout.sidecar.samples.query import SampleQuery

    try:
        ended = [p for p in store.partitions(SampleQuery(model=args.model, version=args.version,
                                                         until=cutoff))
                 if p.hour + HOUR <= cutoff]
        deleted = 0 if args.dry_run else sum(store.delete(p) for p in ended)
    except Exception as error:
        print(f"lookout samples prune: {store.directory}: {explain(error)}", file=sys.stderr)
        return 1
    verb = "would delete" if args.dry_run else f"deleted {deleted} objects of"
    print(f"{verb} {len(ended)} model-version-hours ending before "
          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(cutoff))}")
    return 0


def _prune_directory(store, cutoff: float, args: argparse.Namespace) -> int:
    if args.model or args.version or args.dry_run:
        print("lookout samples prune: --model, --version and --dry-run apply to an object "
              "store; a directory is pruned by time alone", file=sys.stderr)
        return 1
    now = time.time()
    store.retention_seconds = max(0.0, now - cutoff)
    print(f"deleted {store.enforce_retention(now)} samples")
    return 0
