"""Shared pieces of the lvsmon Grafana dashboards (grafanalib).

Every panel query goes through `q()` so the templating filter
(`instance=~"$instance"`) is applied the same way everywhere, and the
end-to-end test can find every expression in the generated JSON.
"""

from __future__ import annotations

from grafanalib.core import (
    GridPos,
    Stat,
    StateTimeline,
    Target,
    Template,
    Templating,
    TimeSeries,
)

DS = "${datasource}"
INSTANCE = 'instance=~"$instance"'
VS = 'virtual_server=~"$virtual_server"'


def q(expr: str, legend: str = "", ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DS)


def templating(with_virtual_server: bool) -> Templating:
    items = [
        Template(name="datasource", label="Data source", type="datasource", query="prometheus"),
        Template(
            name="instance",
            label="Director",
            dataSource=DS,
            type="query",
            query="label_values(lvsmon_build_info, instance)",
            includeAll=True,
            multi=True,
            default="$__all",
            refresh=2,
            allValue=".*",
        ),
    ]
    if with_virtual_server:
        items.append(
            Template(
                name="virtual_server",
                label="Virtual server",
                dataSource=DS,
                type="query",
                query=f"label_values(lvsmon_virtual_server_info{{{INSTANCE}}}, virtual_server)",
                includeAll=True,
                multi=True,
                default="$__all",
                refresh=2,
                allValue=".*",
            )
        )
    return Templating(list=items)


def timeseries(
    title: str,
    targets: list[Target],
    pos: tuple[int, int, int, int],
    unit: str = "short",
    description: str = "",
) -> TimeSeries:
    x, y, w, h = pos
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DS,
        targets=targets,
        unit=unit,
        gridPos=GridPos(h=h, w=w, x=x, y=y),
        legendDisplayMode="table",
        legendPlacement="right",
        legendCalcs=["lastNotNull", "max"],
    )


def stat(
    title: str,
    target: Target,
    pos: tuple[int, int, int, int],
    unit: str = "none",
    description: str = "",
) -> Stat:
    x, y, w, h = pos
    return Stat(
        title=title,
        description=description,
        dataSource=DS,
        targets=[target],
        format=unit,
        gridPos=GridPos(h=h, w=w, x=x, y=y),
        reduceCalc="lastNotNull",
    )


def timeline(
    title: str, targets: list[Target], pos: tuple[int, int, int, int], description: str = ""
) -> StateTimeline:
    x, y, w, h = pos
    return StateTimeline(
        title=title,
        description=description,
        dataSource=DS,
        targets=targets,
        gridPos=GridPos(h=h, w=w, x=x, y=y),
    )
