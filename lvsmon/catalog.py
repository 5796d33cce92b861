"""The metric catalog: every metric lvsmon exports, defined once.

Name, type, labels and help live here and nowhere else: the scrape-time
collectors build their families with `family(name)`, docs/metrics.md is
generated from it (`make docs`), and tests check that every metric named in a
dashboard or alert rule is in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

VS = ("virtual_server",)
RS = ("virtual_server", "real_server")
CHECK = ("virtual_server", "real_server", "check")
BOTH = "proxy, ipvs, nft"  # every data plane


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # as exposed, with _total for counters
    type: str  # counter, gauge, histogram
    labels: tuple[str, ...]
    help: str
    dataplanes: str = BOTH  # which data planes produce it ("-" = independent of the data plane)
    feature: str = "core"  # core, health, failover, adaptive, ipvs, proxy, admin, bgp


CATALOG: tuple[MetricSpec, ...] = (
    MetricSpec(
        "lvsmon_build_info",
        "gauge",
        ("version", "dataplane"),
        "lvsmon version and data plane, always 1",
        "-",
    ),
    MetricSpec(
        "lvsmon_config_last_reload_successful",
        "gauge",
        (),
        "1 if the last config load or reload was applied, 0 if it was rejected",
        "-",
    ),
    MetricSpec(
        "lvsmon_config_last_reload_success_timestamp_seconds",
        "gauge",
        (),
        "Unix time of the last successful config load or reload",
        "-",
    ),
    MetricSpec(
        "lvsmon_config_reload_failures_total",
        "counter",
        (),
        "Reloads rejected (the old config kept running) or not fully applied",
        "-",
    ),
    MetricSpec(
        "lvsmon_virtual_server_info",
        "gauge",
        ("virtual_server", "address", "port", "protocol", "scheduler"),
        "Virtual server identity and scheduler, always 1",
    ),
    MetricSpec("lvsmon_virtual_server_connections_total", "counter", VS, "Connections scheduled"),
    MetricSpec("lvsmon_virtual_server_incoming_bytes_total", "counter", VS, "Bytes from clients"),
    MetricSpec("lvsmon_virtual_server_outgoing_bytes_total", "counter", VS, "Bytes to clients"),
    MetricSpec(
        "lvsmon_virtual_server_incoming_packets_total",
        "counter",
        VS,
        "Packets from clients",
        "ipvs, nft",
        "ipvs",
    ),
    MetricSpec(
        "lvsmon_virtual_server_outgoing_packets_total",
        "counter",
        VS,
        "Packets to clients",
        "ipvs, nft",
        "ipvs",
    ),
    MetricSpec(
        "lvsmon_real_server_connections_total",
        "counter",
        RS,
        "Connections scheduled to the real server",
    ),
    MetricSpec(
        "lvsmon_real_server_connections_active", "gauge", RS, "Active (established) connections"
    ),
    MetricSpec(
        "lvsmon_real_server_connections_inactive",
        "gauge",
        RS,
        "Inactive connections (closing, UDP)",
    ),
    MetricSpec(
        "lvsmon_real_server_incoming_bytes_total",
        "counter",
        RS,
        "Bytes from clients to the real server",
    ),
    MetricSpec(
        "lvsmon_real_server_outgoing_bytes_total",
        "counter",
        RS,
        "Bytes from the real server to clients",
    ),
    MetricSpec("lvsmon_real_server_weight", "gauge", RS, "Weight programmed in the data plane"),
    MetricSpec("lvsmon_real_server_configured_weight", "gauge", RS, "Weight in the config file"),
    MetricSpec(
        "lvsmon_real_server_up",
        "gauge",
        RS,
        "1 if the real server is in service by the health verdict",
    ),
    MetricSpec(
        "lvsmon_real_server_connect_failures_total",
        "counter",
        RS,
        "Connections to the real server that failed: connect refused or timed out (TCP), "
        "port unreachable (UDP). Failures between health checks show here first",
        "proxy",
        "proxy",
    ),
    MetricSpec(
        "lvsmon_scrape_duration_seconds",
        "gauge",
        (),
        "Seconds the previous /metrics render took (collect and encode); 0 before the first",
        "-",
    ),
    MetricSpec(
        "lvsmon_dataplane_errors_total",
        "counter",
        (),
        "Data plane operations that failed (retried every second)",
    ),
    # health checks
    MetricSpec(
        "lvsmon_healthcheck_duration_seconds",
        "histogram",
        CHECK,
        "How long a health check took",
        "-",
        "health",
    ),
    MetricSpec(
        "lvsmon_healthcheck_failures_total",
        "counter",
        (*CHECK, "reason"),
        "Failed health checks by reason",
        "-",
        "health",
    ),
    MetricSpec(
        "lvsmon_real_server_transitions_total",
        "counter",
        RS,
        "Health state changes (up to down and back)",
        "-",
        "health",
    ),
    MetricSpec(
        "lvsmon_healthcheck_probes",
        "gauge",
        (),
        "Distinct health check probes (one serves every virtual server sharing the real server "
        "and check)",
        "-",
        "health",
    ),
    MetricSpec(
        "lvsmon_healthchecks_in_flight",
        "gauge",
        (),
        "Health check probes running now",
        "-",
        "health",
    ),
    # failover
    MetricSpec(
        "lvsmon_ha_state",
        "gauge",
        ("group", "state"),
        "1 for the failover group's current state, 0 for the others",
        "-",
        "failover",
    ),
    MetricSpec(
        "lvsmon_ha_priority",
        "gauge",
        ("group",),
        "Effective VRRP priority after tracking",
        "-",
        "failover",
    ),
    MetricSpec(
        "lvsmon_ha_adverts_sent_total", "counter", ("group",), "Adverts sent", "-", "failover"
    ),
    MetricSpec(
        "lvsmon_ha_adverts_received_total",
        "counter",
        ("group",),
        "Valid adverts received",
        "-",
        "failover",
    ),
    MetricSpec(
        "lvsmon_ha_adverts_rejected_total",
        "counter",
        ("group", "reason"),
        "Adverts dropped, by reason (keepalived's VRRP statistics: docs/reliability.md)",
        "-",
        "failover",
    ),
    MetricSpec(
        "lvsmon_ha_transitions_total",
        "counter",
        ("group", "to"),
        "State transitions, by the state entered",
        "-",
        "failover",
    ),
    MetricSpec(
        "lvsmon_ha_peer_last_advert_timestamp_seconds",
        "gauge",
        ("group",),
        "Unix time of the last valid advert from another director (0: none yet)",
        "-",
        "failover",
    ),
    # status page admin actions (lvsmon.statuspage.admin)
    MetricSpec(
        "lvsmon_admin_actions_total",
        "counter",
        ("action",),
        "Admin actions applied from the status page (drain, weight, restore, reload)",
        "-",
        "admin",
    ),
    MetricSpec(
        "lvsmon_admin_actions_refused_total",
        "counter",
        ("action", "reason"),
        "Admin actions refused: disabled, tls, auth, csrf, bad_request, unknown_target",
        "-",
        "admin",
    ),
    # adaptive weights
    MetricSpec(
        "lvsmon_real_server_load",
        "gauge",
        RS,
        "Normalised load from the adaptive-weight source (0..1)",
        BOTH,
        "adaptive",
    ),
    MetricSpec(
        "lvsmon_weight_updates_total",
        "counter",
        RS,
        "Adaptive weight changes programmed",
        BOTH,
        "adaptive",
    ),
    MetricSpec(
        "lvsmon_bgp_session_up",
        "gauge",
        ("peer",),
        "1 while the BGP session to the peer is established",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_session_state",
        "gauge",
        ("peer", "state"),
        "1 for the BGP session's current state (RFC 4271, lower case; down: not running)",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_vip_announced",
        "gauge",
        ("vip",),
        "1 while the routing daemon announces the VIP from this director",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_vip_reason",
        "gauge",
        ("vip", "virtual_server", "reason"),
        "1 for why the VIP is (serving) or is not announced "
        "(not_programmed, too_few_real_servers, drained), naming the virtual server",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_drain_state",
        "gauge",
        ("state",),
        "1 for the director's announcement phase: active, draining (less preferred), withdrawn",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_drain_state_since_timestamp_seconds",
        "gauge",
        (),
        "Unix time the current announcement phase began",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_routing_daemon_up",
        "gauge",
        ("routing_daemon",),
        "1 if the routing daemon (BIRD) answered lvsmon's last request",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_bgp_routing_daemon_errors_total",
        "counter",
        ("routing_daemon",),
        "Requests to the routing daemon that failed (each is retried)",
        "-",
        "bgp",
    ),
    MetricSpec(
        "lvsmon_scheduling_table_fingerprint",
        "gauge",
        VS,
        "48-bit hash of an announced virtual server's programmed scheduling table (mh/sh/dh "
        "lookup table, else real servers and weights): equal on directors that pick the same "
        "real server for a flow",
        BOTH,
        "bgp",
    ),
    MetricSpec(
        "lvsmon_weight_source_up",
        "gauge",
        ("virtual_server", "source"),
        "1 if the last query of the load source succeeded",
        "-",
        "adaptive",
    ),
    MetricSpec(
        "lvsmon_weight_source_last_success_timestamp_seconds",
        "gauge",
        ("virtual_server", "source"),
        "Unix time of the load source's last successful answer",
        "-",
        "adaptive",
    ),
)


def render_markdown() -> str:
    lines = [
        "# lvsmon metrics",
        "",
        "Generated from `lvsmon/catalog.py` by `make docs`; a test fails when the code exports",
        "a metric this list lacks. Labels have bounded cardinality; `real_server` is",
        "`address:port` (`[v6]:port`).",
        "",
        "| metric | type | labels | data plane | meaning |",
        "|---|---|---|---|---|",
    ]
    for m in CATALOG:
        labels = ", ".join(m.labels) or "—"
        lines.append(f"| `{m.name}` | {m.type} | {labels} | {m.dataplanes} | {m.help} |")
    return "\n".join(lines) + "\n"


def names() -> frozenset[str]:
    return frozenset(m.name for m in CATALOG)


_BY_NAME = {m.name: m for m in CATALOG}


def spec(name: str) -> MetricSpec:
    """The catalog entry of `name` (as exposed: counters end in _total)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not in lvsmon/catalog.py: add it there first") from None


def _of_type(name: str, kind: str) -> MetricSpec:
    m = spec(name)
    if m.type != kind:
        raise TypeError(f"{name} is a {m.type} in lvsmon/catalog.py, not a {kind}")
    return m


def counter(name: str) -> CounterMetricFamily:
    """A fresh, empty family for the catalog's counter `name` (with its _total: the
    family's own name drops it, prometheus_client appends it to the samples)."""
    m = _of_type(name, "counter")
    return CounterMetricFamily(m.name.removesuffix("_total"), m.help, labels=list(m.labels))


def gauge(name: str) -> GaugeMetricFamily:
    m = _of_type(name, "gauge")
    return GaugeMetricFamily(m.name, m.help, labels=list(m.labels))


def histogram(name: str) -> HistogramMetricFamily:
    m = _of_type(name, "histogram")
    return HistogramMetricFamily(m.name, m.help, labels=list(m.labels))


if __name__ == "__main__":
    print(render_markdown(), end="")
