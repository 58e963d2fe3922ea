"""Panel builders shared by the three dashboards: one data source variable, one label
selector, a grid that places panels row by row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafanalib.core import (
    GridPos,
    Heatmap,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    TimeSeries,
)

from lookout.slo import catalog

DATASOURCE = "${datasource}"
SELECTOR = 'namespace=~"$namespace",model=~"$model",version=~"$version"'
RATE = "$__rate_interval"


class ExemplarTarget(Target):
    """A target whose exemplars (trace ids) Grafana draws and links to the trace."""

    def to_json_data(self) -> dict[str, Any]:
        return {**super().to_json_data(), "exemplar": True}


def targets(queries: list[tuple[str, str]], exemplar: bool = False) -> list[Target]:
    kind = ExemplarTarget if exemplar else Target
    return [kind(expr=expr, legendFormat=legend, refId=chr(ord("A") + i),
                 datasource=DATASOURCE) for i, (expr, legend) in enumerate(queries)]


@dataclass
class Grid:
    """Places panels left to right, wrapping at Grafana's 24 columns."""

    x: int = 0
    y: int = 0
    row_height: int = 0
    panels: list[Any] = field(default_factory=list)

    def add(self, panel: Any, width: int = 12, height: int = 8) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        panel.gridPos = GridPos(h=height, w=width, x=self.x, y=self.y)
        panel.id = len(self.panels) + 1
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def timeseries(title: str, queries: list[tuple[str, str]], unit: str = "short",
               exemplar: bool = False, description: str = "") -> TimeSeries:
    return TimeSeries(title=title, dataSource=DATASOURCE, targets=targets(queries, exemplar),
                      unit=unit, description=description)


def stat(title: str, queries: list[tuple[str, str]], unit: str = "none",
         description: str = "") -> Stat:
    return Stat(title=title, dataSource=DATASOURCE, targets=targets(queries), format=unit,
                reduceCalc="lastNotNull", description=description)


def table(title: str, queries: list[tuple[str, str]], description: str = "") -> Table:
    instant = targets(queries)
    for target in instant:
        target.instant = True
        target.format = "table"
    return Table(title=title, dataSource=DATASOURCE, targets=instant, description=description)


def heatmap(title: str, query: str, description: str = "") -> Heatmap:
    target = Target(expr=query, legendFormat="{{le}}", refId="A", datasource=DATASOURCE,
                    format="heatmap")
    return Heatmap(title=title, dataSource=DATASOURCE, targets=[target], dataFormat="tsbuckets",
                   description=description)


def templating(traces: str | None = None) -> Templating:
    """Data source, namespace, model, version: every query filters on the last three.
    With `traces` (a Grafana plugin id: tempo or jaeger), also the traces' data source
    and the service name the sidecars export spans under."""
    info = catalog.MODEL_INFO.name

    def variable(name: str, query: str) -> Template:
        return Template(name=name, label=name, query=query, dataSource=DATASOURCE,
                        includeAll=True, multi=True, allValue=".*", default="All",
                        refresh=2, sort=1)

    return Templating([
        Template(name="datasource", label="data source", query="prometheus", type="datasource",
                 default="Prometheus"),
        variable("namespace", f"label_values({info}, namespace)"),
        variable("model", f'label_values({info}{{namespace=~"$namespace"}}, model)'),
        variable("version", f'label_values({info}{{namespace=~"$namespace",model=~"$model"}}, '
                            f"version)"),
        *([Template(name="traces", label="traces data source", query=traces,
                    type="datasource", default=traces.capitalize()),
           Template(name="service_name", label="service.name (regex)", query=".+",
                    type="textbox", default=".+")] if traces else []),
    ])
