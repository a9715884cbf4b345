"""Small typed helpers over the grafana-foundation-sdk builders: one function per panel kind, a grid layout, and
the parts every dashboard shares (data source, variables, links, alert annotations).

The SDK's builders are the types; these helpers only fix the house choices (every panel reads the ``$datasource``
variable, queries get ``refId`` A, B, C..., panels are laid out explicitly rather than by the SDK's automatic
placement, which lets a panel run past the grid's 24 columns).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

GRID_WIDTH = 24
TAG = "otel-monitoring"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The Watchdog always fires (it proves the alert path works), so it would mark every moment of every graph.
ALERTS_FIRING = 'ALERTS{alertstate="firing", alertname!="Watchdog"}'

AnyPanel = timeseries.Panel | stat.Panel | table.Panel | heatmap.Panel | bargauge.Panel


@dataclass(frozen=True)
class Query:
    """One PromQL target: ``legend`` is Grafana's legend format (``{{job}}``); ``instant`` for tables and stats."""

    expr: str
    legend: str = ""
    instant: bool = False

    def build(self, ref_id: str) -> prometheus.Dataquery:
        target = prometheus.Dataquery().expr(self.expr).ref_id(ref_id).datasource(DATASOURCE)
        if self.legend:
            target = target.legend_format(self.legend)
        if self.instant:
            return target.instant().format(prometheus_models.PromQueryFormat.TABLE)
        return target.range()


@dataclass
class Placed:
    """A panel and the grid cells it takes."""

    panel: AnyPanel
    width: int
    height: int


def _targets(panel: Any, queries: Sequence[Query], instant: bool = False) -> Any:
    for index, query in enumerate(queries):
        if instant and not query.instant:
            query = Query(query.expr, query.legend, instant=True)
        panel = panel.with_target(query.build(chr(ord("A") + index)))
    return panel


def timeseries_panel(
    title: str,
    *queries: Query,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
) -> Placed:
    """A time series of one or more range queries."""
    panel = timeseries.Panel().title(title).datasource(DATASOURCE).unit(unit).fill_opacity(10 if not stacked else 60)
    if description:
        panel = panel.description(description)
    if stacked:
        from grafana_foundation_sdk.builders import common

        panel = panel.stacking(common.StackingConfig().mode(_stacking_normal()))
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return Placed(_targets(panel, queries), width, height)


def _stacking_normal() -> Any:
    from grafana_foundation_sdk.models import common

    return common.StackingMode.NORMAL


def stat_panel(
    title: str,
    query: Query,
    *,
    unit: str = "short",
    description: str = "",
    width: int = 4,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mappings: dict[str, tuple[str, str]] | None = None,
) -> Placed:
    """One figure (the query's last value); ``thresholds`` colour it, ``mappings`` turn values into words."""
    steps = [models.Threshold(value=value, color=color) for value, color in thresholds]
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .thresholds(builders.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps))
    )
    if description:
        panel = panel.description(description)
    if mappings:
        options = {
            value: models.ValueMappingResult(text=text, color=color) for value, (text, color) in mappings.items()
        }
        panel = panel.mappings([models.ValueMap(options=options)])
    return Placed(_targets(panel, [query]), width, height)


def table_panel(
    title: str,
    *queries: Query,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    merge: bool = False,
) -> Placed:
    """Instant queries as a table, one row per series (labels as columns); ``merge`` joins the queries' rows on
    their shared labels (one column per query, named by its legend)."""
    panel = table.Panel().title(title).datasource(DATASOURCE).unit(unit)
    if description:
        panel = panel.description(description)
    if merge:
        panel = panel.with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
    return Placed(_targets(panel, queries, instant=True), width, height)


def bar_panel(
    title: str, query: Query, *, unit: str = "short", description: str = "", width: int = 12, height: int = 8
) -> Placed:
    """A ranking (top N): one horizontal bar per series of an instant query."""
    panel = bargauge.Panel().title(title).datasource(DATASOURCE).unit(unit).orientation(_horizontal())
    if description:
        panel = panel.description(description)
    return Placed(_targets(panel, [query], instant=True), width, height)


def _horizontal() -> Any:
    from grafana_foundation_sdk.models import common

    return common.VizOrientation.HORIZONTAL


def heatmap_panel(title: str, query: Query, *, description: str = "", width: int = 12, height: int = 8) -> Placed:
    """A latency heatmap from bucket rates (``le`` as the legend, Prometheus's histogram format)."""
    target = Query(query.expr, "{{le}}").build("A").format(prometheus_models.PromQueryFormat.HEATMAP)
    panel = heatmap.Panel().title(title).datasource(DATASOURCE).with_target(target)
    if description:
        panel = panel.description(description)
    return Placed(panel, width, height)


def data_link(title: str, uid: str, variables: Sequence[tuple[str, str]]) -> builders.DashboardLink:
    """A link from a panel's series to dashboard ``uid`` with ``var-<name>`` taken from the series' labels
    (``variables``: (variable, label) pairs) and the time range kept."""
    params = "&".join(f"var-{name}=${{__field.labels.{label}}}" for name, label in variables)
    url = f"/d/{uid}?${{__url_time_range}}" + (f"&{params}" if params else "")
    return builders.DashboardLink(title).type(models.DashboardLinkType.LINK).url(url)


def with_data_links(placed: Placed, *links: builders.DashboardLink) -> Placed:
    placed.panel = placed.panel.data_links(list(links))
    return placed


@dataclass(frozen=True)
class Variable:
    """A template variable fed by ``label_values(<selector>, <label>)``."""

    name: str
    label: str
    selector: str
    source_label: str
    description: str = ""

    @property
    def query(self) -> str:
        return f"label_values({self.selector}, {self.source_label})"

    def build(self) -> builders.QueryVariable:
        variable = (
            builders.QueryVariable(self.name)
            .label(self.label)
            .query(self.query)
            .datasource(DATASOURCE)
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            # Every query matches with =~, so "All" is any value, including series without the label.
            .all_value(".*")
            .current(models.VariableOption(text="All", value="$__all", selected=True))
        )
        if self.description:
            variable = variable.description(self.description)
        return variable


@dataclass
class DashboardSpec:
    """What one dashboard is made of, before it becomes Grafana JSON."""

    uid: str
    title: str
    description: str
    area: str
    variables: Sequence[Variable]
    sections: Sequence[tuple[str, Sequence[Placed]]]
    links: Sequence[str] = field(default_factory=tuple)
    """UIDs of the dashboards linked from the top bar (variables and time range carried over)."""


def _layout(dashboard: builders.Dashboard, sections: Sequence[tuple[str, Sequence[Placed]]]) -> builders.Dashboard:
    next_id = 1
    y = 0
    for title, panels in sections:
        row = builders.Row(title).id(next_id).grid_pos(models.GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        dashboard = dashboard.with_row(row)
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for placed in panels:
            if x + placed.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            grid = models.GridPos(h=placed.height, w=placed.width, x=x, y=y)
            dashboard = dashboard.with_panel(placed.panel.id(next_id).grid_pos(grid))
            next_id += 1
            x += placed.width
            line_height = max(line_height, placed.height)
        y += line_height
    return dashboard


def _links(uids: Sequence[str], titles: dict[str, str]) -> list[cogbuilder.Builder[models.DashboardLink]]:
    links: list[cogbuilder.Builder[models.DashboardLink]] = [
        builders.DashboardLink(titles[uid])
        .type(models.DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .icon("dashboard")
        .include_vars(True)
        .keep_time(True)
        for uid in uids
    ]
    everything = builders.DashboardLink("otel-monitoring").type(models.DashboardLinkType.DASHBOARDS)
    links.append(everything.tags([TAG]).as_dropdown(True).include_vars(True).keep_time(True))
    return links


def build_dashboard(spec: DashboardSpec, titles: dict[str, str]) -> dict[str, Any]:
    """The Grafana dashboard JSON (a dict) of ``spec``; ``titles`` maps every UID to its title for the links."""
    dashboard = (
        builders.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags([TAG, spec.area])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(builders.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .annotation(
            builders.AnnotationQuery()
            .name("Alerts firing")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr(ALERTS_FIRING)
        )
        .links(_links(spec.links, titles))
    )
    for variable in spec.variables:
        dashboard = dashboard.with_variable(variable.build())
    built: dict[str, Any] = json.loads(json.dumps(_layout(dashboard, spec.sections).build(), cls=JSONEncoder))
    # What the SDK's AnnotationQuery has no setter for: how Grafana titles and tags a Prometheus annotation.
    for annotation in built["annotations"]["list"]:
        annotation.update(titleFormat="{{alertname}}", tagKeys="alertname,severity,job,instance", step="30s")
    return built
