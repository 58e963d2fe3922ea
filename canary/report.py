"""A judgement as people and pipelines read it: a table on the terminal, or JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from lookout.slo.judge import Judgement, MetricJudgement, MetricOutcome, Verdict

_STYLE = {MetricOutcome.WORSE: "bold red", MetricOutcome.BETTER: "green", MetricOutcome.SAME: "",
          MetricOutcome.NODATA: "yellow"}
_VERDICT_STYLE = {Verdict.PASS: "bold green", Verdict.FAIL: "bold red",
                  Verdict.INCONCLUSIVE: "bold yellow"}


def _number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4g}"


def _shift(metric: MetricJudgement) -> str:
    if metric.shift is None:
        return "-"
    return f"{metric.shift:+.4g} [{metric.shift_low:+.3g}, {metric.shift_high:+.3g}]"


def print_table(judgement: Judgement, title: str, console: Console | None = None) -> None:
    # logs and CI output are not terminals: keep the table whole rather than 80 wide
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=title, title_justify="left")
    for column in ("metric", "baseline", "canary", "shift [CI]", "tolerance", "p", "effect",
                   "events b/c", "outcome"):
        table.add_column(column, justify="left" if column in ("metric", "outcome") else "right")
    for metric in judgement.metrics:
        name = metric.metric + (" *" if metric.critical else "")
        table.add_row(
            name, _number(metric.baseline), _number(metric.canary), _shift(metric),
            _number(metric.tolerance), _number(metric.p_value), _number(metric.effect_size),
            f"{metric.baseline_events:.0f}/{metric.canary_events:.0f}",
            f"[{_STYLE[metric.outcome]}]{metric.outcome.value}[/]"
            if _STYLE[metric.outcome] else metric.outcome.value)
    console.print(table)
    for metric in judgement.metrics:
        if metric.outcome is not MetricOutcome.SAME:
            console.print(f"  {metric.metric}: {metric.reason}")
    for check in judgement.burn:
        state = {True: "ok", False: "[bold red]PAGING RATE[/]", None: "[yellow]nodata[/]"}
        console.print(f"  canary burn rate of SLO {check.slo}: {_number(check.burn_rate)} "
                      f"(pages at {check.page_factor:.3g}; {check.events:.0f} events) "
                      f"{state[check.ok]}")
    console.print("  * critical metric")
    style = _VERDICT_STYLE[judgement.verdict]
    console.print(f"[{style}]{judgement.verdict.value.upper()}[/]: {judgement.reason}")


def gallery_link(args: Any, comparison: Any, end: float) -> str:
    """`--gallery-url`'s compare page over the judged window (`--window` before `end`),
    both versions' frames side by side; empty without a gallery."""
    if not getattr(args, "gallery_url", ""):
        return ""
    from lookout.slo.links import for_canary
    from lookout.slo.spec import parse_duration

    return for_canary(args.gallery_url, comparison.model, comparison.baseline_version,
                      comparison.canary_version, end - parse_duration(args.window, "--window"), end)


def _clean(value: Any) -> Any:
    """JSON has no NaN: absent values are null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json(judgement: Judgement, **context: Any) -> str:
    document = {
        **context,
        "verdict": judgement.verdict.value,
        "reason": judgement.reason,
        "score": judgement.score,
        "metrics": [dataclasses.asdict(metric) for metric in judgement.metrics],
        "burn": [{**dataclasses.asdict(check), "ok": check.ok} for check in judgement.burn],
    }
    return json.dumps(_clean(document), indent=2)
