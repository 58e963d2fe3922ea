"""Links into the sample gallery (`/ui/samples` on a sidecar's admin port) from where
on-call already is: alert annotations, runbooks and dashboards. One builder, so the
parameters they carry are the gallery's own (`sidecar/samples/query.py`).

The admin port is not behind the Service; `gallery_url` in the spec says where people
reach it (an internal ingress, or `kubectl port-forward pod/<pod> 9090`, the default)."""

from __future__ import annotations

from urllib.parse import urlencode

from lookout.slo.spec import Kind, ServiceSpec

# the sampling strategy that keeps the frames an alert of each kind is about
STRATEGY_FOR = {Kind.AVAILABILITY: "error", Kind.LATENCY: "slow",
                Kind.QUALITY: "disagreement", Kind.DRIFT: "drift"}


def at(seconds: float) -> str:
    """Prometheus's template for the time of the rule's evaluation less `seconds`, in
    unix seconds (one of the gallery's time forms)."""
    return (f'{{{{ with query "time() - {round(seconds)}" }}}}'
            f'{{{{ . | first | value | printf "%.0f" }}}}{{{{ end }}}}')


def gallery(spec: ServiceSpec, **params: str) -> str:
    """The gallery with `params` (already in their final form: values may hold Grafana
    or Prometheus template syntax, so they are not URL-encoded here) and the spec's
    model (and version, when it names one)."""
    fixed = {"model": spec.model, **({"version": spec.version} if spec.version else {})}
    query = "&".join(f"{key}={value}" for key, value in {**fixed, **params}.items() if value)
    return f"{spec.gallery_url}/ui/samples?{query}"


def for_alert(spec: ServiceSpec, kind: Kind | None, window_seconds: float) -> str:
    """An alert's gallery link: its kind's strategy, over the window it looked at,
    ending when Prometheus evaluated it (annotations are templated at each evaluation)."""
    return gallery(spec, strategy=STRATEGY_FOR.get(kind, "") if kind else "",
                   since=at(window_seconds), until=at(0))


def for_dashboard(spec: ServiceSpec) -> str:
    """A dashboard's gallery link: its time range and its model/version variables (as
    Grafana writes a multi-value variable in csv: `a,b`, or `.*` for All, both of which
    the gallery reads)."""
    return gallery(spec, model="${model:csv}", version="${version:csv}",
                   since="${__from:date:seconds}", until="${__to:date:seconds}")


def for_canary(gallery_url: str, model: str, baseline: str, canary: str, since: float,
               until: float) -> str:
    """The canary judge's link: both versions side by side over the window it judged.
    With `gallery_url` at `lookout samples serve --store s3://...` (the fleet's gallery)
    it still opens after the canary's pods were rolled back and deleted."""
    query = urlencode({"model": model, "baseline": baseline, "canary": canary,
                       "since": f"{since:.0f}", "until": f"{until:.0f}"})
    return f"{gallery_url.rstrip('/')}/ui/compare?{query}"


def for_runbook(spec: ServiceSpec, kind: Kind | None, look_back: str = "1h") -> str:
    return gallery(spec, strategy=STRATEGY_FOR.get(kind, "") if kind else "", since=look_back)
