"""`lookout audit export|import|show`: audited quality. Draw a random batch of one model
version's samples, send it for labelling with the primary's boxes pre-filled (a COCO zip,
or a Label Studio project), read the labels back into audited precision and recall with
intervals and the proxies' measured bias, and list what was audited.

The store is a sample store directory or the fleet's object store (`--store
s3://bucket/prefix`), as for `lookout samples`; the audit records live beside the
samples (`audits/`), so every reader of the store sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from lookout.cli import audit_export, audit_import

LABEL_STUDIO_TOKEN_ENV = "LABEL_STUDIO_TOKEN"


def add_commands(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="audited precision/recall from labelled "
                                "random samples")
    audit.set_defaults(run=run)
    actions = audit.add_subparsers(dest="audit_command", required=True)
    audit_export.add_command(actions)
    audit_import.add_command(actions)
    show = actions.add_parser("show", help="the audits of a store, newest first")
    store_option(show)
    show.add_argument("--model", help="only this model's audits")
    show.add_argument("--json", action="store_true", help="print the records")


def store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR|URL", required=True, help="a sample store "
                        "directory, or the fleet's object store (s3://bucket/prefix, ...)")


def label_studio_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", help=f"Label Studio's API token (or {LABEL_STUDIO_TOKEN_ENV};"
                        f" a token on the command line shows in `ps`)")


def label_studio_token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get(LABEL_STUDIO_TOKEN_ENV, "")
    if not token:
        raise ValueError(f"--label-studio needs --token or {LABEL_STUDIO_TOKEN_ENV}")
    return token


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "export":
        return audit_export.run(args)
    if args.audit_command == "import":
        return audit_import.run(args)
    return show(args)


def show(args: argparse.Namespace) -> int:
    from lookout.cli.samples import SourceError, StoreSource
    from lookout.sidecar.samples.audit_records import AuditRecordError, AuditRecords

    try:
        records = AuditRecords(StoreSource(args.store).store).all()
    except (SourceError, AuditRecordError, OSError) as error:
        print(f"lookout audit show: {error}", file=sys.stderr)
        return 1
    records = [r for r in records if args.model in (None, r.get("model"))]
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    for record in records:
        print(summary_line(record))
    return 0


def _rate(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("audited") is None:
        return "-"
    low, high = entry.get("interval") or (float("nan"), float("nan"))
    bias = entry.get("bias")
    shown = f"{entry['audited']:.3f} [{low:.3f}, {high:.3f}]"
    return shown + (f" proxy bias {bias:+.3f}" if bias is not None else "")


def summary_line(record: dict[str, Any]) -> str:
    """One audit as a line: batch, model version, size, status, the every-class rates."""
    sizes = record.get("sizes", {})
    head = (f"{record['batch_id']}  {record.get('model')} {record.get('version')}  "
            f"{sizes.get('random', 0)} random + {sizes.get('top_up', 0)} top-up  "
            f"{record.get('status')}")
    summary = record.get("summary") or {}
    if record.get("status") != "estimated":
        return head
    labels = record.get("labels", {})
    return (f"{head} ({labels.get('random', 0)} labelled)  precision "
            f"{_rate(summary.get('precision'))}  recall {_rate(summary.get('recall'))}")
