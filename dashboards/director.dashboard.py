"""lvsmon directors: failover roles, adverts, transitions, reloads, data plane health,
and the fleet row (active-active over BGP): connection share per director, announcements."""

from fleet import fleet_row
from lib import INSTANCE, q, timeline, timeseries
from lib import templating as _templating
from grafanalib.core import Dashboard

RATE = "$__rate_interval"

dashboard = Dashboard(
    title="lvsmon / Directors",
    uid="lvsmon-directors",
    tags=["lvsmon", "lvs", "failover"],
    timezone="browser",
    refresh="10s",
    templating=_templating(with_virtual_server=False),
    panels=[
        timeline(
            "Role",
            [q(f'lvsmon_ha_state{{{INSTANCE}, state="master"}}', "{{instance}} {{group}}")],
            (0, 0, 24, 6),
            description="1 = master. Two at once is split brain.",
        ),
        timeseries(
            "Priority",
            [q(f"lvsmon_ha_priority{{{INSTANCE}}}", "{{instance}} {{group}}")],
            (0, 6, 12, 8),
            description="Effective priority, after tracking.",
        ),
        timeseries(
            "Adverts",
            [
                q(
                    f"rate(lvsmon_ha_adverts_sent_total{{{INSTANCE}}}[{RATE}])",
                    "{{instance}} {{group}} sent",
                    "A",
                ),
                q(
                    f"rate(lvsmon_ha_adverts_received_total{{{INSTANCE}}}[{RATE}])",
                    "{{instance}} {{group}} received",
                    "B",
                ),
            ],
            (12, 6, 12, 8),
            unit="ops",
        ),
        timeseries(
            "Adverts rejected",
            [
                q(
                    f"sum by (instance, group, reason) (rate(lvsmon_ha_adverts_rejected_total{{{INSTANCE}}}[{RATE}]))",
                    "{{instance}} {{group}} {{reason}}",
                )
            ],
            (0, 14, 12, 8),
            unit="ops",
        ),
        timeseries(
            "Role transitions",
            [
                q(
                    f"sum by (instance, group, to) (increase(lvsmon_ha_transitions_total{{{INSTANCE}}}[{RATE}]))",
                    "{{instance}} {{group}} to {{to}}",
                )
            ],
            (12, 14, 12, 8),
        ),
        timeseries(
            "Config reloads",
            [
                q(
                    f"lvsmon_config_last_reload_successful{{{INSTANCE}}}",
                    "{{instance}} last reload ok",
                    "A",
                ),
            ],
            (0, 22, 12, 8),
            description="0 = the last reload was rejected; the director runs the previous config.",
        ),
        timeseries(
            "Data plane errors",
            [
                q(
                    f"sum by (instance) (rate(lvsmon_dataplane_errors_total{{{INSTANCE}}}[{RATE}]))",
                    "{{instance}}",
                )
            ],
            (12, 22, 12, 8),
            unit="ops",
        ),
        *fleet_row(30),
    ],
).auto_panel_ids()
