"""A real Prometheus scrapes two failover directors (`lvsmon run`, proxy data plane,
a failover group, health checks, sorry server, slow start, adaptive weights from that
Prometheus) in network namespaces; the master is killed.

The complement of tests/integration/test_prometheus_e2e.py, which cannot run a
failover group (raw sockets, interfaces: root): every panel it exempts must return
data here, every alert rule must evaluate, LvsmonFailover must fire, and the live
scrape of a director with a failover group must pass `promtool check metrics`
without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from tests.integration.test_prometheus_e2e import (
    EXEMPT,
    NEEDS_FAILOVER,
    RULES,
    SCRAPE,
    alert_names,
    panel_problems,
    promtool_complaints,
    template_values,
    until_clean,
    variable_settings,
)
from tests.netns.topology import (
    PORT,
    PRIVATE,
    PUBLIC,
    PYTHON,
    VIP,
    Director,
    Topology,
    lvsmon_config,
    wait_for,
)
from tests.prometheus import API, command, job

PROMETHEUS = f"http://{PUBLIC['client']}:9090"
METRICS_PORT = 9108  # inside the directors' own namespaces: no clash with the host's
# One Python in the client's namespace runs a batch of HTTP requests: [[url, params], ...]
BATCH = """
import json, sys, urllib.error, urllib.parse, urllib.request
out = []
for url, params in json.loads(sys.argv[1]):
    try:
        resp = urllib.request.urlopen(url + "?" + urllib.parse.urlencode(params), timeout=10)
    except urllib.error.HTTPError as exc:
        resp = exc
    except urllib.error.URLError:  # not listening yet
        out.append(None)
        continue
    with resp:  # an HTTPError is the response too
        body = resp.read().decode()
    try:
        out.append(json.loads(body))
    except ValueError:  # /metrics
        out.append(body)
print(json.dumps(out))
"""


class InNs(Protocol):
    def in_ns(self, host: str, code: str, *args: str) -> str: ...


class NsPrometheus(API):
    """The HTTP API of the Prometheus at `url`, asked from `host`'s namespace."""

    def __init__(self, topo: InNs, host: str = "client", url: str = PROMETHEUS):
        self.topo, self.host, self.url = topo, host, url

    def batch(self, requests: list[tuple[str, dict[str, str]]]) -> list[Any]:
        out = self.topo.in_ns(self.host, BATCH, json.dumps(requests))
        return list(json.loads(out))

    def api(self, path: str, **params: str) -> dict[str, Any]:
        return dict(self.batch([(self.url + path, params)])[0])

    def ready(self) -> bool:
        """Listening is not ready: until /-/ready says so, the API answers 503."""
        return "Ready" in str(self.batch([(self.url + "/-/ready", {})])[0])

    def query_all(self, exprs: list[str]) -> list[dict[str, Any]]:
        return self.batch([(self.url + "/api/v1/query", {"query": e}) for e in exprs])

    def scrape(self, host: str) -> str:
        url = f"http://{PUBLIC[host]}:{METRICS_PORT}/metrics"
        return str(self.batch([(url, {})])[0])


def director_config(topo: Topology, host: str, priority: int) -> str:
    checks = (
        '[virtual_server.health_check]\ntype = "tcp"\ninterval = "250ms"\ntimeout = "200ms"\n\n'
    )
    banner = (
        '\n[virtual_server.real_server.health_check]\ntype = "send_expect"\n'
        'expect_literal = "rs2\\n"\n'
    )
    adaptive = (
        '[virtual_server.adaptive_weights]\nsource = "prometheus"\n'
        f'url = "{PROMETHEUS}"\n'
        "query = 'sum by (real_server) (lvsmon_real_server_connections_active)'\n"
        'match_label = "real_server"\nmatch_value = "${real_server}"\n'
        'interval = "1s"\ntimeout = "500ms"\n\n'
    )
    reals = [
        f'[[virtual_server.real_server]]\naddress = "{PRIVATE[rs]}"\nport = {PORT}\nweight = 100\n'
        for rs in ("rs1", "rs2")
    ]
    return (
        f'[daemon]\ndataplane = "proxy"\nmetrics_listen = "{PUBLIC[host]}:{METRICS_PORT}"\n'
        f'pid_file = "{topo.workdir / host}.pid"\nlog_level = "info"\nshutdown_grace = "2s"\n\n'
        f'[[virtual_server]]\nname = "web"\naddress = "{VIP}"\nport = {PORT}\n'
        f'scheduler = "wlc"\nslow_start = "10s"\nsorry_server = "{PRIVATE["rs1"]}:{PORT + 1}"\n\n'
        + "".join((checks, adaptive, reals[0], "\n", reals[1], banner, "\n"))
        + lvsmon_config(priority=priority, ipv6=False)
    )


def start_director(topo: Topology, host: str, priority: int) -> Director:
    path = topo.workdir / f"{host}.daemon.toml"
    path.write_text(director_config(topo, host, priority))
    proc = topo.spawn(host, "lvsmon-run", [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(path)])
    return Director(topo, host, proc)


def start_prometheus(topo: Topology, tmp: Path) -> None:
    targets = [f"{PUBLIC[h]}:{METRICS_PORT}" for h in ("dir1", "dir2")]
    argv = command(
        tmp,
        f"{PUBLIC['client']}:9090",
        [job("lvsmon", targets)],
        interval=SCRAPE,
        rule_files=[RULES],
    )
    topo.spawn("client", "prometheus", argv)


def role(prom: NsPrometheus, host: str, state: str) -> bool:
    instance = f"{PUBLIC[host]}:{METRICS_PORT}"
    return bool(prom.vector(f'lvsmon_ha_state{{instance="{instance}", state="{state}"}} == 1'))


def test_failover_panels_and_alerts_with_a_real_prometheus(topo: Topology, tmp_path: Path) -> None:
    topo.listener("rs1")
    topo.listener("rs2")
    start_prometheus(topo, tmp_path)
    prom = NsPrometheus(topo)
    wait_for("Prometheus ready", prom.ready, 30, every=0.2)
    dir1 = start_director(topo, "dir1", 150)
    wait_for("Prometheus: dir1 master", lambda: role(prom, "dir1", "master"), 30, every=0.2)
    start_director(topo, "dir2", 100)
    wait_for(
        "Prometheus: dir2 backup, scraped a few times",
        lambda: (
            role(prom, "dir2", "backup")
            and prom.vector(
                f'count_over_time(lvsmon_ha_state{{instance="{PUBLIC["dir2"]}:{METRICS_PORT}",'
                ' state="backup"}[1m]) >= 3'
            )
        ),
        30,
        every=0.2,
    )

    dir1.kill9()  # a crash: dir2 takes over, and its to="master" counter moves while scraped
    wait_for("Prometheus: dir2 master", lambda: role(prom, "dir2", "master"), 15, every=0.2)
    firing = wait_for(
        "LvsmonFailover firing", lambda: prom.alerts("LvsmonFailover", "firing"), 15, every=0.2
    )
    assert {a["labels"]["instance"] for a in firing} == {f"{PUBLIC['dir2']}:{METRICS_PORT}"}

    # every panel the integration tier exempts has data here; every query evaluates
    settings = variable_settings(template_values(prom))
    exempted = lambda q: EXEMPT.get((q.board, q.panel)) == NEEDS_FAILOVER  # noqa: E731
    left = until_clean(lambda: panel_problems(prom.query_all, settings, exempted), 20)
    assert not left, "\n".join(left)
    master = prom.vector('sum(lvsmon_ha_state{instance=~".*", state="master"}) or vector(0)')
    assert float(master[0]["value"][1]) == 1  # the overview's "Directors that are master"

    rules = [r for g in prom.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == alert_names()
    for rule, body in zip(rules, prom.query_all([r["query"] for r in rules]), strict=True):
        assert body["status"] == "success", (rule["name"], body)

    # B: a director with a failover group and every other feature, judged by promtool
    text = prom.scrape("dir2")
    for family in (
        "lvsmon_ha_state",
        "lvsmon_real_server_load",
        "lvsmon_weight_source_up",
        "lvsmon_healthcheck_duration_seconds_bucket",
    ):
        assert f"\n{family}{{" in text, family
    complaints = promtool_complaints(text)
    assert not complaints, complaints
