"""The gallery's pages, rendered on the server as HTML with no script: filters are a
GET form (so every view is a URL), box toggles are checkboxes styled by CSS. Every
value that came from traffic or the store (class names, routes, models, versions,
strategies, trace ids) goes through `escape`."""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from lookout.sidecar.samples.audit_marks import AuditMark
from lookout.sidecar.samples.query import FORMATS
from lookout.sidecar.samples.store import Page, Sample
from lookout.sidecar.samples.ui_overlay import overlay
from lookout.sidecar.samples.ui_session import gallery_path

STYLESHEET = "/ui/static/gallery.css"
# the gallery's filters, in the form's order: (parameter, label, placeholder)
FILTER_FIELDS = (
    ("since", "since", "1h, 2026-11-22T03:00:00Z or unix seconds"),
    ("until", "until", "as since"),
    ("model", "model", ""),
    ("version", "version", ""),
    ("strategy", "strategy", ""),
    ("class", "class", ""),
    ("status", "status", "503"),
    ("agreement_below", "agreement below", "0.5"),
    ("trace_id", "trace id", "32 hex digits"),
    ("pod", "pod", "the fleet's store only"),
)


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _query_string(params: Mapping[str, str], **changes: str | None) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v}
    return urllib.parse.urlencode(merged)


def layout(title: str, body: str, *, signed_in: bool = True) -> str:
    logout = ('<form class="logout" method="post" action="/ui/logout">'
              '<button type="submit">sign out</button></form>') if signed_in else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)} · lookout</title>'
            f'<link rel="stylesheet" href="{STYLESHEET}"></head><body>'
            f'<header><a class="home" href="/ui/samples">lookout samples</a>'
            f'<nav><a href="/ui/samples">gallery</a> <a href="/ui/compare">compare versions</a>'
            f'</nav>{logout}</header><main>{body}</main></body></html>')


def message_page(title: str, message: str, *, signed_in: bool = False) -> str:
    return layout(title, f'<section class="message"><h1>{escape(title)}</h1>'
                         f'<p>{escape(message)}</p></section>', signed_in=signed_in)


def login_page(next_path: str, error: str = "") -> str:
    failed = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return layout("sign in", f'''<section class="login"><h1>Sign in</h1>{failed}
<form method="post" action="/ui/login">
<input type="hidden" name="next" value="{escape(next_path)}">
<label for="token">admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">sign in</button></form>
<p class="hint">The sidecar's admin token (admin_token_file or LOOKOUT_ADMIN_TOKEN), as for
the sample API. The session lasts 8 hours.</p></section>''', signed_in=False)


def legend(audit: bool = False) -> str:
    """The box styles' key; `audit`: with the annotators' (a page showing audits)."""
    annotators = '<span class="key audit">annotators (audit)</span>' if audit else ""
    return ('<p class="legend"><span class="key primary">primary</span>'
            f'<span class="key reference">reference</span>{annotators}</p>')


def _audit_badge(mark: AuditMark | None) -> str:
    if mark is None:
        return ""
    state = "labelled" if mark.labelled else "sent for labelling"
    return (f'<dt>audit</dt><dd class="audit" title="batch {escape(mark.batch_id)}">'
            f'{state}</dd>')


def filter_form(params: Mapping[str, str], action: str = "/ui/samples",
                extra: Sequence[tuple[str, str, str]] = ()) -> str:
    rows = []
    for name, label, placeholder in (*extra, *FILTER_FIELDS):
        rows.append(f'<label>{escape(label)}<input name="{name}" '
                    f'value="{escape(params.get(name, ""))}" '
                    f'placeholder="{escape(placeholder)}"></label>')
    return (f'<form class="filters" method="get" action="{action}">{"".join(rows)}'
            f'<button type="submit">filter</button> <a href="{action}">clear</a></form>')


def card(sample: Sample, back: str, mark: AuditMark | None = None) -> str:
    """One sample in the list; an audited one is marked (class `audited`, an audit row)
    and shows its annotators' boxes."""
    agreement = "-" if sample.agreement is None else f"{sample.agreement:.2f}"
    link = f"/ui/samples/{sample.id}?{urllib.parse.urlencode({'back': back})}"
    audited = " audited" if mark is not None else ""
    boxes = mark.boxes if mark is not None else ()
    return (f'<a class="card{audited}" href="{escape(link)}" data-sample="{sample.id}">'
            f'<div class="frame"><img src="/ui/samples/{sample.id}/thumbnail" '
            f'width="{sample.thumbnail_width}" height="{sample.thumbnail_height}" '
            f'loading="lazy" alt="sample {sample.id}">'
            f'{overlay(sample, labels=False, audit=boxes)}</div>'
            f'<dl><dt>time</dt><dd>{_when(sample.time)}</dd>'
            f'<dt>model</dt><dd>{escape(sample.model)} {escape(sample.version)}</dd>'
            f'<dt>strategy</dt><dd>{escape(sample.strategy)}</dd>'
            f'<dt>status</dt><dd>{sample.status}</dd>'
            f'<dt>agreement</dt><dd>{agreement}</dd>{_pod(sample)}{_audit_badge(mark)}'
            f'</dl></a>')


def _pod(sample: Sample) -> str:
    """Which pod took it: known for the fleet's samples, not for a pod's own store."""
    return f'<dt>pod</dt><dd class="pod">{escape(sample.pod)}</dd>' if sample.pod else ""


def gallery_page(page: Page, params: Mapping[str, str], total: int,
                 marks: Mapping[str, AuditMark] | None = None) -> str:
    """`marks`: the audited samples of the page (`audit_marks.py`)."""
    marks = marks or {}
    here = f"/ui/samples?{_query_string(params)}"
    cards = "".join(card(sample, here, marks.get(sample.id)) for sample in page.samples) or \
        '<p class="empty">No sample matches these filters.</p>'
    paging = []
    if params.get("cursor"):
        paging.append(f'<a href="/ui/samples?{escape(_query_string(params, cursor=None))}">'
                      f'newest</a>')
    if page.next_cursor:
        paging.append(f'<a class="older" rel="next" href="/ui/samples?'
                      f'{escape(_query_string(params, cursor=page.next_cursor))}">older</a>')
    filters = _query_string(params, cursor=None, limit=None)
    exports = " ".join(
        f'<a class="export" href="/ui/export?{escape(_query_string(params, format=kind))}">'
        f'{kind.upper()} export</a>' for kind in FORMATS)
    body = (f'<h1>Samples</h1>{filter_form(params)}'
            f'<div class="toolbar">{legend(bool(marks))}<p class="count">{total} matching, '
            f'{len(page.samples)} shown</p><p class="exports">{exports}</p>'
            f'<p><a href="/ui/compare?{escape(filters)}">compare versions</a></p></div>'
            f'<section class="grid">{cards}</section>'
            f'<nav class="paging">{" ".join(paging)}</nav>')
    return layout("samples", body)


def _detections_table(title: str, layer: str, detections: list[dict[str, Any]] | None) -> str:
    if detections is None:
        return (f'<section class="detections {layer}"><h2>{escape(title)}</h2>'
                f'<p>not run on this sample</p></section>')
    rows = "".join(
        f'<tr><td>{escape(str(d.get("class", "")))}</td><td>{float(d.get("score", 0)):.3f}</td>'
        f'<td>{", ".join(f"{float(v):.0f}" for v in d.get("box", []))}</td></tr>'
        for d in sorted(detections, key=lambda d: -float(d.get("score", 0))))
    return (f'<section class="detections {layer}"><h2>{escape(title)} '
            f'({len(detections)})</h2><table><thead><tr><th>class</th><th>score</th>'
            f'<th>box (x1, y1, x2, y2 px)</th></tr></thead><tbody>{rows}</tbody></table>'
            f'</section>')


def _features_table(features: Mapping[str, Any] | None,
                    standing: Mapping[str, float], against: str) -> str:
    if not features:
        return ""
    rows = []
    for name in sorted(features):
        value = features[name]
        if isinstance(value, float) and math.isnan(value):
            continue
        shown = f"{value:.4g}" if isinstance(value, int | float) else escape(str(value))
        percentile = standing.get(name)
        mark = ""
        if percentile is not None:
            mark = f"{percentile:.0f}"
            if percentile < 1 or percentile > 99:
                mark = f'<strong class="outlier">{mark}</strong>'
        rows.append(f"<tr><td>{escape(name)}</td><td>{shown}</td><td>{mark}</td></tr>")
    return (f'<section class="features"><h2>Drift features</h2><p>percentile {escape(against)}'
            f'</p><table><thead><tr><th>feature</th><th>value</th><th>percentile</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></section>')


def _annotations_table(mark: AuditMark) -> str:
    if not mark.labelled:
        return (f'<section class="detections audit"><h2>Annotators (audit '
                f'{escape(mark.batch_id)})</h2><p>not labelled yet</p></section>')
    rows = "".join(f'<tr><td>{escape(label)}</td>'
                   f'<td>{", ".join(f"{v:.0f}" for v in box)}</td></tr>'
                   for label, *box in mark.boxes)
    return (f'<section class="detections audit"><h2>Annotators (audit '
            f'{escape(mark.batch_id)}, {len(mark.boxes)})</h2><table><thead><tr>'
            f'<th>class</th><th>box (x1, y1, x2, y2 thumbnail px)</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


def sample_page(sample: Sample, back: str, trace_url: str | None,
                standing: Mapping[str, float], against: str,
                mark: AuditMark | None = None) -> str:
    """`mark`: the sample's audit, if it was drawn for one: its annotators' boxes are
    drawn as a third style, with a toggle, a legend entry and a table of their own."""
    layers = [("primary", "primary boxes"), ("reference", "reference boxes")]
    if mark is not None:
        layers.append(("audit", "annotators' boxes"))
    toggles = "".join(
        f'<input type="checkbox" id="show-{name}" checked>'
        f'<label for="show-{name}" class="toggle {name}">{label}</label>'
        for name, label in (*layers, ("labels", "labels")))
    agreement = "not measured" if sample.agreement is None else f"{sample.agreement:.3f}"
    if sample.trace_id and trace_url:
        trace = (f'<a class="trace" href="{escape(trace_url)}" rel="noreferrer">'
                 f'{escape(sample.trace_id)}</a>')
    else:
        trace = escape(sample.trace_id or "none")
    downloads = [f'<a href="/ui/samples/{sample.id}/thumbnail" download>thumbnail</a>']
    if sample.original_file is not None:
        downloads.append(f'<a class="original" href="/ui/samples/{sample.id}/original" '
                         f'download>original ({sample.width}x{sample.height})</a>')
    facts = (f'<dl class="facts"><dt>time</dt><dd>{_when(sample.time)}</dd>'
             f'<dt>model</dt><dd>{escape(sample.model)}</dd>'
             f'<dt>version</dt><dd>{escape(sample.version)}</dd>'
             f'<dt>strategy</dt><dd>{escape(sample.strategy)}</dd>'
             f'<dt>route</dt><dd>{escape(sample.route)}</dd>'
             f'<dt>status</dt><dd>{sample.status}</dd>'
             f'<dt>latency</dt><dd>{sample.latency * 1000:.1f} ms</dd>'
             f'<dt>agreement</dt><dd class="agreement">{agreement}</dd>'
             f'<dt>trace</dt><dd>{trace}</dd>'
             f'<dt>image</dt><dd>{sample.width}x{sample.height}</dd>{_pod(sample)}'
             f'{_audit_badge(mark)}</dl>')
    safe_back = gallery_path(back)
    body = (f'<p><a href="{escape(safe_back)}">back to the gallery</a></p>'
            f'<h1>Sample {sample.id}</h1><div class="sample">'
            f'<div class="viewer">{toggles}{legend(mark is not None)}<div class="frame large">'
            f'<img src="/ui/samples/{sample.id}/thumbnail" width="{sample.thumbnail_width}" '
            f'height="{sample.thumbnail_height}" alt="sample {sample.id}">'
            f'{overlay(sample, audit=mark.boxes if mark is not None else ())}'
            f'</div><p class="downloads">download: {" ".join(downloads)}</p></div>'
            f'<div class="about">{facts}</div></div><div class="side-by-side">'
            f'{_detections_table("Primary", "primary", sample.primary_detections)}'
            f'{_detections_table("Reference", "reference", sample.reference_detections)}'
            f'{_annotations_table(mark) if mark is not None else ""}'
            f'</div>{_features_table(sample.features, standing, against)}')
    return layout(f"sample {sample.id}", body)


def histogram(counts: Sequence[int], missing: int, layer: str) -> str:
    """The agreement distribution as SVG bars (attributes only: no inline style)."""
    most = max(counts) if any(counts) else 1
    width, height, bar = 300, 100, 300 / len(counts)
    bars = []
    for index, count in enumerate(counts):
        tall = height * count / most
        low, high = index / len(counts), (index + 1) / len(counts)
        bars.append(f'<rect class="{layer}" x="{index * bar + 1:.1f}" y="{height - tall:.1f}" '
                    f'width="{bar - 2:.1f}" height="{tall:.1f}"><title>{low:.1f}-{high:.1f}: '
                    f'{count}</title></rect>')
    return (f'<svg class="histogram" viewBox="0 0 {width} {height + 14}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="agreement">'
            f'{"".join(bars)}<text x="0" y="{height + 12}" font-size="10">0</text>'
            f'<text x="{width - 8}" y="{height + 12}" font-size="10">1</text></svg>'
            f'<p class="counts" data-counts="{",".join(map(str, counts))}">'
            f'{sum(counts)} with an agreement, {missing} without</p>')


def compare_page(params: Mapping[str, str],
                 sides: Sequence[tuple[str, str, Page, list[int], int]]) -> str:
    """`sides`: (role, version, newest page, agreement counts, without agreement)."""
    columns = []
    for role, version, page, counts, missing in sides:
        if not version:
            columns.append(f'<section class="side {role}"><h2>{role}</h2>'
                           f'<p>choose a version above</p></section>')
            continue
        scored = sum(counts)
        mean = (sum((i + 0.5) / len(counts) * c for i, c in enumerate(counts)) / scored
                if scored else None)
        gallery = _query_string(params, baseline=None, canary=None, version=version)
        here = f"/ui/compare?{_query_string(params)}"
        cards = "".join(card(sample, here) for sample in page.samples)
        columns.append(
            f'<section class="side {role}" data-version="{escape(version)}">'
            f'<h2>{role}: {escape(version)}</h2>'
            f'{histogram(counts, missing, role)}'
            f'<p>mean agreement {"-" if mean is None else f"{mean:.2f}"} (from the bins)</p>'
            f'<p><a href="/ui/samples?{escape(gallery)}">all of them in the gallery</a></p>'
            f'<div class="grid small">{cards}</div></section>')
    form = filter_form(params, "/ui/compare", extra=(
        ("baseline", "baseline version", "v1"), ("canary", "canary version", "v2")))
    body = (f'<h1>Compare two versions</h1>{form}{legend()}'
            f'<div class="compare">{"".join(columns)}</div>')
    return layout("compare versions", body)

