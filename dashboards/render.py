"""What Grafana does with these dashboards, without Grafana: find every panel query,
interpolate the template variables the way Grafana's Prometheus data source does,
and draw panels from a Prometheus server's range data as a PNG (`make panel-png`).

    python dashboards/render.py --prometheus http://127.0.0.1:9090 --since 5m \\
        --panel "virtual-server.json:Share of connections vs share of weight" \\
        --panel "overview.json:Real servers up / total" --out docs/img/panel.png

The end-to-end test (tests/integration/test_prometheus_e2e.py) evaluates every
expression found here against a real Prometheus; drawing needs matplotlib (the
`docs` extra), which is imported only when drawing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# `$name`, `${name}`, `${name:format}`, `[[name]]`: Grafana's variable syntaxes
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Query:
    board: str  # file name, e.g. "overview.json"
    panel: str  # panel title
    ref: str  # refId
    expr: str  # as in the dashboard, variables not yet interpolated
    legend: str


def boards(directory: Path = HERE) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def queries(directory: Path = HERE) -> Iterator[Query]:
    for name, board in boards(directory).items():
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                yield Query(
                    name, panel["title"], t.get("refId", ""), t["expr"], t.get("legendFormat", "")
                )


def template_queries(directory: Path = HERE) -> Iterator[tuple[str, str, str]]:
    """(board, variable name, query) for every variable of type query."""
    for name, board in boards(directory).items():
        for v in board["templating"]["list"]:
            if v.get("type") == "query":
                query = v["query"]
                yield name, v["name"], query["query"] if isinstance(query, dict) else query


def grafana_intervals(scrape: float, step: float, span: float) -> dict[str, str]:
    """Grafana's built-in interval variables for a panel of `step` resolution over `span`
    seconds with a data source whose scrape interval is `scrape`:
    $__rate_interval = max($__interval + scrape, 4 x scrape)."""
    return {
        "__interval": duration(step),
        "__rate_interval": duration(max(step + scrape, 4 * scrape)),
        "__range": duration(span),
    }


def duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def regex_value(values: Sequence[str] | None, all_value: str = ".*") -> str:
    """A multi-value variable inside a regex matcher: None is "All" (its allValue), else
    the values regex-escaped, alternated; backslashes doubled for the PromQL string."""
    if values is None:
        return all_value
    escaped = [re.escape(v).replace("\\", "\\\\") for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(expr: str, variables: Mapping[str, str]) -> str:
    """Replace every variable; one this mapping lacks is an error, not left in the query."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise KeyError(f"no value for the variable ${name} in {expr!r}")
        return variables[name]

    return VARIABLE.sub(sub, expr)


def label_values_call(query: str) -> tuple[str, str] | None:
    """`label_values(selector, label)` -> (selector, label); None for other forms."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    return (m.group(1), m.group(2)) if m else None


# --- Prometheus HTTP API ---


def api(
    base: str, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]], timeout: float = 10
) -> dict[str, Any]:
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:  # 400/422 carry the error in a JSON body
        body = json.load(exc)
    return body


def query_range(
    base: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    body = api(
        base,
        "/api/v1/query_range",
        {"query": expr, "start": str(start), "end": str(end), "step": str(step)},
    )
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return list(body["data"]["result"])


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or str(labels)


# --- drawing (matplotlib, Grafana's dark theme) ---

CANVAS, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = (
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
)
PERCENT_UNITS = ("percentunit",)
UP, DOWN = "#73bf69", "#f2495c"


@dataclass(frozen=True)
class Series:
    label: str
    times: list[float]
    values: list[float]


def fetch_panel(
    base: str,
    board: str,
    title: str,
    variables: Mapping[str, str],
    start: float,
    end: float,
    step: float,
    directory: Path = HERE,
) -> tuple[dict[str, Any], list[Series]]:
    panel = next((p for p in boards(directory)[board]["panels"] if p["title"] == title), None)
    if panel is None:
        raise KeyError(f"{board} has no panel titled {title!r}")
    series = []
    for t in panel["targets"]:
        for r in query_range(base, interpolate(t["expr"], variables), start, end, step):
            points = [(float(ts), float(v)) for ts, v in r["values"]]
            series.append(
                Series(
                    legend(t.get("legendFormat", ""), r["metric"]),
                    [p[0] for p in points],
                    [p[1] for p in points],
                )
            )
    return panel, sorted(series, key=lambda s: s.label)


def draw(
    panels: Sequence[tuple[dict[str, Any], list[Series]]],
    out: Path,
    marks: Sequence[tuple[float, str]] = (),
    width: float = 12.0,
) -> None:
    """One Grafana-like panel per row; `marks` are (unix time, text) annotations."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    heights = [
        max(1.6, 0.45 * len(s) + 0.8) if p["type"] == "state-timeline" else 3.2 for p, s in panels
    ]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(width, sum(heights) + 0.3),
        squeeze=False,
        height_ratios=heights,
        facecolor=CANVAS,
    )
    times = [t for _, series in panels for s in series for t in s.times]
    span = (datetime.fromtimestamp(min(times)), datetime.fromtimestamp(max(times)))
    for ax, (panel, series) in zip(axes[:, 0], panels, strict=True):
        ax.set_facecolor(PANEL)
        for side in ax.spines.values():
            side.set_color(GRID)
        ax.tick_params(colors=TEXT, labelsize=9)
        ax.set_title(panel["title"], color=TEXT, loc="left", fontsize=12, fontweight="bold")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
        ax.set_xlim(*span)
        if panel["type"] == "state-timeline":
            _timeline(ax, series)
        else:
            _lines(ax, panel, series, MaxNLocator)
        for i, (when, text) in enumerate(marks):
            at = datetime.fromtimestamp(when)
            ax.axvline(at, color="#f2495c", linewidth=1, alpha=0.8, zorder=3)
            if ax is axes[0, 0]:  # label the marks once, above the first panel
                right = (at - span[0]) > (span[1] - span[0]) / 2
                ax.annotate(
                    text,
                    (at, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(-4 if right else 4, -12 - 12 * i),
                    textcoords="offset points",
                    ha="right" if right else "left",
                    color="#f2495c",
                    fontsize=9,
                    bbox={
                        "boxstyle": "square,pad=0.2",
                        "facecolor": PANEL,
                        "edgecolor": "none",
                        "alpha": 0.85,
                    },
                    zorder=4,
                )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, facecolor=CANVAS)
    plt.close(fig)


def _lines(ax: Any, panel: Mapping[str, Any], series: Sequence[Series], locator: Any) -> None:
    """A time series panel: "x weight"/"x total" lines dashed, in the colour of their "x"."""
    from datetime import datetime

    ax.grid(True, color=GRID, linewidth=0.8)
    percent = panel.get("fieldConfig", {}).get("defaults", {}).get("unit") in PERCENT_UNITS
    colours: dict[str, str] = {}
    for s in series:
        key, _, kind = s.label.rpartition(" ")
        dashed = kind in ("weight", "total")
        colour = colours.setdefault(key or s.label, PALETTE[len(colours) % len(PALETTE)])
        values = [v * 100 for v in s.values] if percent else s.values
        ax.plot(
            [datetime.fromtimestamp(t) for t in s.times],
            values,
            color=colour,
            linewidth=1.8,
            linestyle="--" if dashed else "-",
            label=s.label,
        )
    if percent:
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0f}%")
    elif all(float(v).is_integer() for s in series for v in s.values):
        ax.yaxis.set_major_locator(locator(integer=True))
    ax.set_ylim(bottom=0)
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9, labelcolor=TEXT
    )


def _timeline(ax: Any, series: Sequence[Series]) -> None:
    """A state timeline of 0/1 series: one row each, green while 1 (up), red while 0."""
    import matplotlib.dates as mdates
    from datetime import datetime

    for row, s in enumerate(reversed(series)):
        spans: list[tuple[float, float, float]] = []  # (start, end, value)
        for t, v in zip(s.times, s.values, strict=True):
            if spans and spans[-1][2] == v and t - spans[-1][1] < 5:
                spans[-1] = (spans[-1][0], t, v)
            else:
                spans.append((t, t, v))
        for start, end, v in spans:
            # the bar runs to the next sample (a step), in matplotlib's date numbers
            left, right = mdates.date2num(
                [
                    datetime.fromtimestamp(start),  # type: ignore[no-untyped-call]
                    datetime.fromtimestamp(end + 1),
                ]
            )
            ax.broken_barh([(left, right - left)], (row + 0.15, 0.7), color=UP if v >= 1 else DOWN)
            ax.annotate(
                "up" if v >= 1 else "down",
                (left, row + 0.5),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                color=CANVAS,
                fontsize=8,
            )
    ax.set_yticks([i + 0.5 for i in range(len(series))], [s.label for s in reversed(series)])
    ax.set_ylim(0, len(series))
    ax.tick_params(axis="y", length=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prometheus", required=True, help="base URL of the Prometheus server")
    parser.add_argument("--panel", action="append", required=True, metavar="BOARD.json:TITLE")
    parser.add_argument("--since", default="10m", help="how far back (s, m, h), ending now")
    parser.add_argument("--start", type=float, help="unix time (overrides --since)")
    parser.add_argument("--end", type=float, help="unix time (default: now)")
    parser.add_argument("--step", type=float, default=1.0, help="seconds between points")
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=15.0,
        help="the data source's scrape interval, for $__rate_interval",
    )
    parser.add_argument("--instance", action="append", help="director(s); default: All")
    parser.add_argument("--virtual-server", action="append", help="default: All")
    parser.add_argument("--mark", action="append", default=[], metavar="UNIXTIME:TEXT")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    end = args.end or time.time()
    unit = {"s": 1, "m": 60, "h": 3600}
    start = args.start or end - float(args.since[:-1]) * unit.get(args.since[-1], 1)
    variables = {
        "instance": regex_value(args.instance),
        "virtual_server": regex_value(args.virtual_server),
        **grafana_intervals(args.scrape_interval, args.step, end - start),
    }
    panels = []
    for spec in args.panel:
        board, _, title = spec.partition(":")
        panels.append(fetch_panel(args.prometheus, board, title, variables, start, end, args.step))
    marks = [(float(t), text) for t, _, text in (m.partition(":") for m in args.mark)]
    draw(panels, args.out, marks)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
