"""lvsmon overview: every virtual server at a glance, and each director's role."""

from lib import INSTANCE, q, stat, templating, timeseries
from grafanalib.core import Dashboard

RATE = "$__rate_interval"

dashboard = Dashboard(
    title="lvsmon / Overview",
    uid="lvsmon-overview",
    tags=["lvsmon", "lvs"],
    timezone="browser",
    refresh="10s",
    templating=templating(with_virtual_server=False),
    panels=[
        stat(
            "Directors that are master",
            q(f'sum(lvsmon_ha_state{{{INSTANCE}, state="master"}}) or vector(0)'),
            (0, 0, 6, 4),
            description="Directors reporting the master state (failover groups summed).",
        ),
        stat(
            "Virtual servers", q(f"count(lvsmon_virtual_server_info{{{INSTANCE}}})"), (6, 0, 6, 4)
        ),
        stat(
            "Real servers up",
            q(f"sum(lvsmon_real_server_up{{{INSTANCE}}})"),
            (12, 0, 6, 4),
            description="Real servers in service by the health verdict, over all virtual servers.",
        ),
        stat("Real servers total", q(f"count(lvsmon_real_server_up{{{INSTANCE}}})"), (18, 0, 6, 4)),
        timeseries(
            "Connection rate",
            [
                q(
                    f"sum by (virtual_server) (rate(lvsmon_virtual_server_connections_total{{{INSTANCE}}}[{RATE}]))",
                    "{{virtual_server}}",
                )
            ],
            (0, 4, 12, 8),
            unit="cps",
        ),
        timeseries(
            "Active connections",
            [
                q(
                    f"sum by (virtual_server) (lvsmon_real_server_connections_active{{{INSTANCE}}})",
                    "{{virtual_server}}",
                )
            ],
            (12, 4, 12, 8),
        ),
        timeseries(
            "Traffic",
            [
                q(
                    f"sum by (virtual_server) (rate(lvsmon_virtual_server_incoming_bytes_total{{{INSTANCE}}}[{RATE}]))",
                    "{{virtual_server}} in",
                    "A",
                ),
                q(
                    f"sum by (virtual_server) (rate(lvsmon_virtual_server_outgoing_bytes_total{{{INSTANCE}}}[{RATE}]))",
                    "{{virtual_server}} out",
                    "B",
                ),
            ],
            (0, 12, 12, 8),
            unit="Bps",
            description="In: clients to real servers. Out: back to clients.",
        ),
        timeseries(
            "Real servers up / total",
            [
                q(
                    f"sum by (virtual_server) (lvsmon_real_server_up{{{INSTANCE}}})",
                    "{{virtual_server}} up",
                    "A",
                ),
                q(
                    f"count by (virtual_server) (lvsmon_real_server_up{{{INSTANCE}}})",
                    "{{virtual_server}} total",
                    "B",
                ),
            ],
            (12, 12, 12, 8),
        ),
    ],
).auto_panel_ids()
