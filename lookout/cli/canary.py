"""`lookout canary judge|watch|manifests`."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields, replace
from typing import TYPE_CHECKING

from lookout.slo.canary import DEFAULT_METRICS, JudgeSettings, metrics_for
from lookout.slo.spec import SpecError, load_spec, parse_duration

if TYPE_CHECKING:
    from lookout.canary.comparison import CanaryComparison
    from lookout.slo.judge import Judgement

ERROR_EXIT = 3  # 0 pass, 1 fail, 2 inconclusive: the verdicts; 3: could not judge


def add_commands(commands: argparse._SubParsersAction) -> None:
    canary = commands.add_parser("canary", help="judge a canary version against its "
                                 "baseline; roll it back when it is worse")
    canary.set_defaults(run=run)
    actions = canary.add_subparsers(dest="canary_command", required=True)
    judge = actions.add_parser(
        "judge", help="compare two versions' metrics in Prometheus; exit 0 pass, 1 fail, "
                      "2 inconclusive, 3 error")
    _comparison_options(judge)
    judge.add_argument("--at", type=float, default=None, metavar="UNIX_SECONDS",
                       help="judge the window ending then (default: now)")
    judge.add_argument("--json", action="store_true", help="print the judgement as JSON")
    judge.add_argument("--store", metavar="DIR|URL", help="a sample store with audits "
                       "(`lookout audit import`): an audit of the canary version judges its "
                       "precision and recall in place of the proxies")

    watch = actions.add_parser("watch", help="judge every interval; on fail roll the canary "
                                             "back through the Kubernetes API")
    _comparison_options(watch)
    from lookout.canary.watch import add_watch_options

    add_watch_options(watch)

    manifests = actions.add_parser("manifests", help="ServiceAccount, Role and Deployment "
                                   "of `canary watch` (minimum RBAC)")
    from lookout.canary.manifests import add_manifest_options

    add_manifest_options(manifests)


def _comparison_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL",
                        help="Prometheus that scrapes both versions' sidecars")
    parser.add_argument("--gallery-url", default="", metavar="URL",
                        help="the team's sample gallery (`lookout samples serve --store "
                             "s3://...`): the report links both versions' frames there")
    parser.add_argument("--baseline-version", required=True, help="`version` label of the "
                        "version in service")
    parser.add_argument("--canary-version", required=True, help="`version` label of the "
                        "new version")
    parser.add_argument("--slo", metavar="FILE", help="slo.yaml: picks the metrics, the "
                        "model and the SLOs whose canary-alone burn rate must stay under the "
                        "page threshold")
    parser.add_argument("--model", help="`model` label (default: the spec's model)")
    parser.add_argument("--window", default="30m", help="how far back to compare (30m)")
    parser.add_argument("--interval", default="1m",
                        help="one sample per version per interval (1m)")
    parser.add_argument("--metrics", help="comma-separated metric names to judge "
                        "(default: from the spec; without one, all)")
    parser.add_argument("--critical", help="comma-separated metrics whose failure alone "
                        "fails the canary (default: each metric's own setting)")
    defaults = JudgeSettings()
    parser.add_argument("--confidence", type=float, default=defaults.confidence)
    parser.add_argument("--effect-size-floor", type=float, default=defaults.effect_size_floor,
                        help="smallest |Cliff's delta| that can fail a metric")
    parser.add_argument("--min-events", type=float, default=defaults.min_events,
                        help="events each version needs per metric, else nodata")
    parser.add_argument("--min-intervals", type=int, default=defaults.min_intervals,
                        help="intervals with data each version needs per metric")
    parser.add_argument("--pass-score", type=float, default=defaults.pass_score,
                        help="share of metrics not worse a pass needs")
    parser.add_argument("--bearer-token-file", help="token for a Prometheus behind auth")


class UsageError(ValueError):
    """A bad option: exit 3 with this message."""


def settings_from(args: argparse.Namespace) -> JudgeSettings:
    values = {f.name: getattr(args, f.name) for f in fields(JudgeSettings)}
    if not 0.5 <= values["confidence"] < 1:
        raise UsageError(f"--confidence {values['confidence']} must be in [0.5, 1)")
    if not 0 <= values["pass_score"] <= 1:
        raise UsageError(f"--pass-score {values['pass_score']} must be in [0, 1]")
    return JudgeSettings(**values)


def comparison_from(args: argparse.Namespace) -> CanaryComparison:
    """The CanaryComparison the options describe."""
    from lookout.canary.comparison import CanaryComparison  # the judge: numpy and scipy

    try:
        spec = load_spec(args.slo) if args.slo else None
        window = parse_duration(args.window, "--window")
        interval = parse_duration(args.interval, "--interval")
    except SpecError as error:
        raise UsageError(str(error)) from None
    model = args.model or (spec.model if spec and not spec.models else None)
    if not model:
        raise UsageError("--model is required without --slo, or when the spec lists "
                         "several models" + (f" ({', '.join(spec.models)})" if spec else ""))
    if spec is not None and spec.models:
        if model not in spec.models:
            raise UsageError(f"--model {model!r} is not one of the spec's models "
                             f"({', '.join(spec.models)})")
        spec = spec.for_model(model)
    metrics = metrics_for(spec)
    if args.metrics:
        known = {m.name: m for m in (*DEFAULT_METRICS, *metrics)}
        wanted = [name.strip() for name in args.metrics.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise UsageError(f"--metrics: unknown {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        metrics = tuple(known[name] for name in wanted)
    if args.critical is not None:
        critical = {name.strip() for name in args.critical.split(",") if name.strip()}
        unknown = critical - {m.name for m in metrics}
        if unknown:
            raise UsageError(f"--critical: {', '.join(sorted(unknown))} not among the judged "
                             f"metrics")
        metrics = tuple(replace(m, critical=m.name in critical) for m in metrics)
    try:
        return CanaryComparison(model, args.baseline_version, args.canary_version, metrics,
                                window, interval, spec)
    except ValueError as error:
        raise UsageError(str(error)) from None


def prometheus_from(args: argparse.Namespace):
    from pathlib import Path

    from lookout.canary.prometheus import Prometheus

    token = Path(args.bearer_token_file).read_text().strip() if args.bearer_token_file else ""
    return Prometheus(args.prometheus, bearer_token=token)


def apply_audits(judgement: Judgement, store: str, comparison: CanaryComparison,
                 settings: JudgeSettings) -> Judgement:
    """The judgement with the store's newest audits of both versions (`canary/audited.py`).
    Raises ValueError or OSError when the store or its records cannot be read."""
    from lookout.canary.audited import audited_rates, newest_audit, with_audits
    from lookout.cli.samples import SourceError, StoreSource
    from lookout.sidecar.samples.audit_records import AuditRecords

    try:
        records = AuditRecords(StoreSource(store).store).all()
    except SourceError as error:
        raise ValueError(str(error)) from None
    canary, baseline = (audited_rates(newest_audit(records, comparison.model, version))
                        for version in (comparison.canary_version,
                                        comparison.baseline_version))
    return with_audits(judgement, settings, canary, baseline)


def run(args: argparse.Namespace) -> int:
    if args.canary_command == "manifests":
        from lookout.canary.manifests import run_manifests

        return run_manifests(args)
    from lookout.canary.prometheus import PrometheusError

    try:
        comparison = comparison_from(args)
        settings = settings_from(args)
        prometheus = prometheus_from(args)
    except (UsageError, OSError) as error:
        print(f"lookout canary: {error}", file=sys.stderr)
        return ERROR_EXIT
    if args.canary_command == "watch":
        from lookout.canary.watch import run_watch

        return run_watch(args, prometheus, comparison, settings)
    from lookout.canary.comparison import judge_canary
    from lookout.canary.report import gallery_link, print_table, to_json

    end = args.at if args.at is not None else time.time()
    try:
        judgement = judge_canary(prometheus, comparison, settings, end)
    except PrometheusError as error:
        print(f"lookout canary: {error}", file=sys.stderr)
        return ERROR_EXIT
    if args.store:
        try:
            judgement = apply_audits(judgement, args.store, comparison, settings_from(args))
        except (ValueError, OSError) as error:
            print(f"lookout canary: the audits of {args.store}: {error}", file=sys.stderr)
            return ERROR_EXIT
    frames = gallery_link(args, comparison, end)
    if args.json:
        print(to_json(judgement, model=comparison.model,
                      baseline_version=comparison.baseline_version,
                      canary_version=comparison.canary_version, window=args.window,
                      interval=args.interval, end=end,
                      **({"gallery_url": frames} if frames else {})))
    else:
        print_table(judgement, f"{comparison.model}: canary {comparison.canary_version} vs "
                               f"baseline {comparison.baseline_version}, last {args.window} "
                               f"in {args.interval} intervals")
        if frames:
            print(f"frames of both versions: {frames}")
    return judgement.verdict.exit_code
