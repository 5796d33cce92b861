"""lvsmon virtual server drill-down: how each real server takes its share, and why."""

from lib import INSTANCE, VS, q, templating, timeline, timeseries
from grafanalib.core import Dashboard

RATE = "$__rate_interval"
SEL = f"{INSTANCE}, {VS}"

dashboard = Dashboard(
    title="lvsmon / Virtual server",
    uid="lvsmon-virtual-server",
    tags=["lvsmon", "lvs"],
    timezone="browser",
    refresh="10s",
    templating=templating(with_virtual_server=True),
    panels=[
        timeseries(
            "Share of connections vs share of weight",
            [
                q(
                    f"sum by (virtual_server, real_server) (rate(lvsmon_real_server_connections_total{{{SEL}}}[{RATE}]))"
                    f" / ignoring (real_server) group_left sum by (virtual_server) (rate(lvsmon_real_server_connections_total{{{SEL}}}[{RATE}]))",
                    "{{real_server}} connections",
                    "A",
                ),
                q(
                    f"sum by (virtual_server, real_server) (lvsmon_real_server_weight{{{SEL}}})"
                    f" / ignoring (real_server) group_left sum by (virtual_server) (lvsmon_real_server_weight{{{SEL}}})",
                    "{{real_server}} weight",
                    "B",
                ),
            ],
            (0, 0, 24, 8),
            unit="percentunit",
            description="A scheduler that follows the weights keeps each pair of lines together.",
        ),
        timeline(
            "Health",
            [q(f"lvsmon_real_server_up{{{SEL}}}", "{{real_server}}")],
            (0, 8, 12, 8),
            description="1 = in service, 0 = held out by the health checks.",
        ),
        timeseries(
            "Probe latency (p99)",
            [
                q(
                    "histogram_quantile(0.99, sum by (virtual_server, real_server, check, le) "
                    f"(rate(lvsmon_healthcheck_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{real_server}} {{check}}",
                )
            ],
            (12, 8, 12, 8),
            unit="s",
        ),
        timeseries(
            "Weight: programmed vs configured",
            [
                q(f"lvsmon_real_server_weight{{{SEL}}}", "{{real_server}} programmed", "A"),
                q(
                    f"lvsmon_real_server_configured_weight{{{SEL}}}",
                    "{{real_server}} configured",
                    "B",
                ),
            ],
            (0, 16, 12, 8),
            description="Programmed differs from configured while a server is down, quiesced, slow-starting or adapted.",
        ),
        timeseries(
            "Load (adaptive weights)",
            [q(f"lvsmon_real_server_load{{{SEL}}}", "{{real_server}}")],
            (12, 16, 12, 8),
            unit="percentunit",
            description="Normalised load from the adaptive-weight source, 0..1.",
        ),
        timeseries(
            "Connections per real server",
            [
                q(f"lvsmon_real_server_connections_active{{{SEL}}}", "{{real_server}} active", "A"),
                q(
                    f"lvsmon_real_server_connections_inactive{{{SEL}}}",
                    "{{real_server}} inactive",
                    "B",
                ),
            ],
            (0, 24, 12, 8),
        ),
        timeseries(
            "Health check failures",
            [
                q(
                    f"sum by (real_server, reason) (rate(lvsmon_healthcheck_failures_total{{{SEL}}}[{RATE}]))",
                    "{{real_server}} {{reason}}",
                )
            ],
            (12, 24, 12, 8),
            unit="ops",
        ),
        timeseries(
            "Connect failures (proxy data plane)",
            [
                q(
                    f"sum by (real_server) (rate(lvsmon_real_server_connect_failures_total{{{SEL}}}[{RATE}]))",
                    "{{real_server}}",
                )
            ],
            (0, 32, 12, 8),
            unit="ops",
            description="Client connections the proxy could not open to the real server: "
            "refused, timed out or unreachable. Failures between health checks show here "
            "before the verdict changes. Kernel IPVS cannot see them (no series).",
        ),
    ],
).auto_panel_ids()
