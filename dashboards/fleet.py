"""The "Fleet" row: directors announcing VIPs over BGP (lvsmon.bgp), side by side.

Each director exports only its own view; the row compares them: who takes what
share of the connections (ECMP should give each about 1/N), who announces
which VIP and why not, BGP sessions, drains, and whether every director
computed the same scheduling table (lvsmon_scheduling_table_fingerprint).
"""

from __future__ import annotations

from grafanalib.core import GridPos, RowPanel
from lib import INSTANCE, q, timeline, timeseries

RATE = "$__rate_interval"


def fleet_row(y: int) -> list[object]:
    conns = f"rate(lvsmon_virtual_server_connections_total{{{INSTANCE}}}[{RATE}])"
    return [
        RowPanel(title="Fleet", gridPos=GridPos(h=1, w=24, x=0, y=y)),
        timeseries(
            "Share of connections per director",
            [
                q(
                    f"sum by (instance) ({conns}) / scalar(sum({conns}))",
                    "{{instance}}",
                )
            ],
            (0, y + 1, 12, 8),
            unit="percentunit",
            description="ECMP spreads flows over the directors that announce: each near 1/N.",
        ),
        timeline(
            "VIP announced",
            [q(f"lvsmon_bgp_vip_announced{{{INSTANCE}}}", "{{instance}} {{vip}}")],
            (12, y + 1, 12, 8),
            description="The announcement timeline: green while the director announces the VIP.",
        ),
        timeseries(
            "Why not announced",
            [
                q(
                    f'lvsmon_bgp_vip_reason{{{INSTANCE}, reason!="serving"}} == 1',
                    "{{instance}} {{vip}} {{reason}} ({{virtual_server}})",
                )
            ],
            (0, y + 9, 8, 8),
            description="One series per VIP held back, named by the reason and virtual server.",
        ),
        timeline(
            "BGP sessions",
            [q(f"lvsmon_bgp_session_up{{{INSTANCE}}}", "{{instance}} {{peer}}")],
            (8, y + 9, 8, 8),
        ),
        timeline(
            "Draining",
            [
                q(
                    f'lvsmon_bgp_drain_state{{{INSTANCE}, state="active"}}',
                    "{{instance}} active",
                )
            ],
            (16, y + 9, 8, 4),
            description="Red while the director drains out or has withdrawn.",
        ),
        timeseries(
            "Distinct scheduling tables",
            [
                q(
                    "count by (virtual_server) (count_values by (virtual_server) "
                    f'("fingerprint", lvsmon_scheduling_table_fingerprint{{{INSTANCE}}}))',
                    "{{virtual_server}}",
                )
            ],
            (16, y + 13, 8, 4),
            description="1 = every director picks the same real server for a flow.",
        ),
    ]
