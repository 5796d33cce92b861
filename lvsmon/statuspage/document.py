"""The /status.json document (schema: status.schema.json, docs/status-json.md). Pure.

Built from the same DirectorView as /status and /metrics, plus what only the page
shows: rates from the daemon's own memory (history.py), each real server's last
health failure, drains and temporary weights (admin.py), the last reloads. Bump
SCHEMA_VERSION on any change a reader could trip over (a removed or retyped field);
new optional fields keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsmon.health.state import HealthDetail
from lvsmon.model import DestKey, ServiceKey, StatusPageSettings
from lvsmon.status import UP, DirectorView, RealServerView, VirtualServerView
from lvsmon.statuspage.admin import Override
from lvsmon.statuspage.history import RateHistory, Rates

SCHEMA_VERSION = 1
DRAINED = "drained"  # up by its health checks, at weight 0 by an operator's drain
RELOADS_KEPT = 10

Key = tuple[ServiceKey, DestKey]


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    at: float  # Unix time
    ok: bool
    trigger: str  # "start", "signal", "admin (user)"
    message: str  # the first problem of a rejected reload, or what was applied

    def to_json(self) -> dict[str, object]:
        return {"at": self.at, "ok": self.ok, "trigger": self.trigger, "message": self.message}


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """What the page may offer this reader."""

    enabled: bool  # daemon.status_page.admin
    allowed: bool  # this request may act (TLS, authenticated)
    why_not: str  # "" when allowed: shown instead of the controls
    user: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "allowed": self.allowed,
            "why_not": self.why_not,
            "user": self.user,
        }


def build_document(
    view: DirectorView,
    *,
    now: float,
    settings: StatusPageSettings,
    history: RateHistory,
    health: Mapping[Key, HealthDetail],
    overrides: Callable[[Key], Override | None],
    reloads: Sequence[ReloadRecord],
    admin: AdminAccess,
) -> dict[str, Any]:
    services = []
    for vs in view.virtual_servers:
        rates = history.rates(vs.key)
        reals = [_real_server(vs.key, rs, history, health, overrides) for rs in vs.real_servers]
        services.append(_virtual_server(vs, rates, reals))
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now,
        "version": view.version,
        "dataplane": view.dataplane,
        "config_source": view.config_source,
        "page": {
            "refresh_seconds": settings.refresh,
            "sample_interval_seconds": settings.sample_interval,
            "history_seconds": settings.history,
            "admin": admin.to_json(),
        },
        "reload": {
            "last_successful": view.last_reload_successful,
            "last_success_at": view.last_reload_success_timestamp,
            "history": [r.to_json() for r in reversed(reloads)],  # newest first
        },
        "dataplane_errors": view.dataplane_errors,
        "failover_groups": [_group(g) for g in view.failover_groups],
        "virtual_servers": services,
    }
    # ---- BGP announcements: reserved for the BGP announcer (DESIGN "A VIP has owners").
    # When DirectorView grows a `bgp` list (one dict per announced prefix), it is passed
    # through here and the page shows its section (page.js renderBgp); absent, neither
    # the key nor the section appears. The schema describes the expected fields.
    bgp = getattr(view, "bgp", None)
    if bgp is not None:
        doc["bgp"] = list(bgp)
    return doc


def _virtual_server(
    vs: VirtualServerView, rates: Rates, reals: list[dict[str, Any]]
) -> dict[str, Any]:
    up = sum(1 for r in reals if r["state"] == UP)
    return {
        "name": vs.name,
        "protocol": vs.protocol,
        "address": vs.address,
        "port": vs.port,
        "fwmark": vs.fwmark,
        "scheduler": vs.scheduler,
        "configured": vs.configured,
        "connections": vs.connections,
        "in_bytes": vs.in_bytes,
        "out_bytes": vs.out_bytes,
        "rate": _rate(rates),
        "real_servers_up": up,
        "real_servers": reals,
    }


def _real_server(
    skey: ServiceKey,
    rs: RealServerView,
    history: RateHistory,
    health: Mapping[Key, HealthDetail],
    overrides: Callable[[Key], Override | None],
) -> dict[str, Any]:
    key = (skey, DestKey(rs.address, rs.port))
    rates = history.rates(key)
    override = overrides(key)
    state = rs.state
    if state == UP and override is not None and override.weight == 0:
        state = DRAINED
    detail = health.get(key)
    return {
        "real_server": rs.label,
        "address": rs.address,
        "port": rs.port,
        "state": state,
        "forwarding": rs.forwarding,
        "weight": rs.weight,
        "weights": dict(rs.weight_parts),
        "active": rs.active,
        "inactive": rs.inactive,
        "connections": rs.connections,
        "in_bytes": rs.in_bytes,
        "out_bytes": rs.out_bytes,
        "rate": _rate(rates),
        "history": rates.history,
        "health": _health(detail),
        "admin": override.to_json() if override is not None else None,
    }


def _rate(rates: Rates) -> dict[str, float | None]:
    return {
        "connections_per_second": rates.connections_per_second,
        "bytes_per_second": rates.bytes_per_second,
    }


def _health(detail: HealthDetail | None) -> dict[str, Any] | None:
    if detail is None:
        return None  # no health check configured
    failure = None
    if detail.last_failure_at is not None:
        failure = {
            "reason": detail.last_failure_reason,
            "detail": detail.last_failure_detail,
            "at": detail.last_failure_at,
        }
    return {
        "check": detail.check,
        "up": detail.up,
        "since": detail.since,
        "failures": detail.failures,
        "last_failure": failure,
    }


GROUP_FIELDS = (
    "name",
    "vrid",
    "interface",
    "state",
    "priority",
    "configured_priority",
    "master",
    "peer",
    "peer_priority",
    "peer_last_advert",
    "since",
)


def _group(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group.get(k) for k in GROUP_FIELDS}
