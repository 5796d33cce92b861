"""End to end: a real Prometheus (Debian package) scrapes `lvsmon run` with every feature
the integration tier can run (proxy data plane; tcp, exec, send_expect and http health
checks; sorry server; slow start; adaptive weights whose source is this same
Prometheus), evaluates the real alerts/lvsmon.rules.yml, and answers every query of
every committed dashboard panel. One real server is killed; LvsmonRealServerDown must
fire. The live scrape of this daemon must pass `promtool check metrics` without a word.

Failover groups need root, raw sockets and interfaces of their own: the panels that
only a failover group feeds are proven by tests/netns/test_prometheus_ha.py (EXEMPT).

LVSMON_PANEL_PNG=docs/img/real-server-down.png additionally draws two panels from this
run's range data (`make panel-png`, dashboards/render.py).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards import render
from tests.integration.harness import REPO, Backend, Daemon, connect, wait_for
from tests.ports import free_port
from tests.prometheus import API, Prometheus, job

RULES = REPO / "alerts" / "lvsmon.rules.yml"
SCRAPE = 1.0  # Prometheus scrape and rule evaluation interval, seconds
# Grafana's $__rate_interval for a 1 s scrape interval and 1 s steps: max(1+1, 4x1) = 4s
VARIABLES = render.grafana_intervals(scrape=SCRAPE, step=1.0, span=300.0)

# (dashboard, panel title) -> why this run cannot feed it. Their queries must still
# evaluate without error here; tests/netns/test_prometheus_ha.py asserts they return data.
NEEDS_FAILOVER = "needs a failover group (root, raw sockets): data asserted in the netns tier"
NEEDS_BGP = "needs a BGP fleet (root, BIRD): data asserted in tests/netns/test_bgp_fleet.py"
FLEET_BGP_PANELS = (
    "VIP announced",
    "Why not announced",
    "BGP sessions",
    "Draining",
    "Distinct scheduling tables",
)
EXEMPT: dict[tuple[str, str], str] = {
    ("director.json", "Role"): NEEDS_FAILOVER,
    ("director.json", "Priority"): NEEDS_FAILOVER,
    ("director.json", "Adverts"): NEEDS_FAILOVER,
    ("director.json", "Adverts rejected"): NEEDS_FAILOVER,
    ("director.json", "Role transitions"): NEEDS_FAILOVER,
    **{("director.json", title): NEEDS_BGP for title in FLEET_BGP_PANELS},
}


class HTTPBackend:
    """An HTTP real server: its name on every path (the http health check asks /healthz)."""

    def __init__(self, name: str):
        body = f"{name}\n".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # tcp-style probes reset the connection: not worth a traceback

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def toml(self, weight: int) -> str:
        return (
            f'[[virtual_server.real_server]]\naddress = "127.0.0.1"\nport = {self.port}\n'
            f"weight = {weight}\n"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def director_config(
    web: int,
    reals: Mapping[str, Backend],
    sorry: Backend,
    api: int,
    http_reals: list[HTTPBackend],
    prometheus: str,
) -> str:
    """Two virtual servers with every feature but failover. `web`: tcp checks, one real
    server overridden with an exec check, one with a banner (send_expect) check, slow
    start, a sorry server. `api`: http checks, quiesce, adaptive weights from Prometheus."""
    a, b, c = reals["a"], reals["b"], reals["c"]
    exec_check = (
        '[virtual_server.real_server.health_check]\ntype = "exec"\nprogram = "bash"\n'
        'args = ["-c", "exec 3<>/dev/tcp/$0/$1", "{address}", "{port}"]\n'
        'interval = "1s"\ntimeout = "500ms"\n'
    )
    banner_check = (
        '[virtual_server.real_server.health_check]\ntype = "send_expect"\nexpect_literal = "c\\n"\n'
    )
    return (
        f'[[virtual_server]]\nname = "web"\naddress = "127.0.0.1"\nport = {web}\n'
        f'scheduler = "wlc"\nslow_start = "10s"\nsorry_server = "127.0.0.1:{sorry.port}"\n\n'
        '[virtual_server.health_check]\ntype = "tcp"\ninterval = "250ms"\ntimeout = "200ms"\n'
        "rise = 2\nfall = 2\n\n"
        f"{a.toml(1)}\n{b.toml(1)}\n{exec_check}\n{c.toml(2)}\n{banner_check}\n"
        f'[[virtual_server]]\nname = "api"\naddress = "127.0.0.1"\nport = {api}\n'
        'scheduler = "wrr"\non_failure = "quiesce"\n\n'
        '[virtual_server.health_check]\ntype = "http"\npath = "/healthz"\n'
        'interval = "500ms"\ntimeout = "400ms"\n\n'
        # The load source is the Prometheus under test, scraping this daemon: active
        # connections per real server, 4 meaning saturated.
        '[virtual_server.adaptive_weights]\nsource = "prometheus"\n'
        f'url = "{prometheus}"\n'
        "query = 'sum by (real_server) "
        '(lvsmon_real_server_connections_active{virtual_server="api"})\'\n'
        'match_label = "real_server"\nmatch_value = "${real_server}"\n'
        'interval = "1s"\ntimeout = "500ms"\ncapacity = 4\n\n'
        + "\n".join(r.toml(100) for r in http_reals)
    )


class Traffic(threading.Thread):
    """Clients of both virtual servers: ~20 connections/s to web, 8 of them held open at a
    time (active connections), ~10 HTTP requests/s to api."""

    def __init__(self, web: int, api: int):
        super().__init__(daemon=True)
        self.web, self.api = web, api
        self.stopped = threading.Event()

    def run(self) -> None:
        held: deque[socket.socket] = deque()
        tick = 0
        while not self.stopped.wait(0.05):
            tick += 1
            try:
                held.append(connect(self.web)[0])
                if len(held) > 8:
                    held.popleft().close()
                if tick % 2 == 0:
                    with socket.create_connection(("127.0.0.1", self.api), timeout=5) as s:
                        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                        while s.recv(65536):
                            pass
            except OSError:
                pass  # e.g. a connection to the killed server, mid-close
        for s in held:
            s.close()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(10)


@dataclass
class Scenario:
    daemon: Daemon
    prometheus: Prometheus
    killed: Backend
    killed_label: str
    started: float  # unix time of the daemon's start
    killed_at: float  # unix time of the kill


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("e2e")
    reals = {n: Backend(n) for n in ("a", "b", "c")}
    sorry = Backend("sorry")
    http_reals = [HTTPBackend("d"), HTTPBackend("e")]
    web, api, prom_port = free_port(), free_port(), free_port()
    body = director_config(web, reals, sorry, api, http_reals, f"http://127.0.0.1:{prom_port}")
    daemon = Daemon(tmp, body)
    # scrapes the daemon every SCRAPE s, evaluates RULES
    prometheus = Prometheus(
        tmp,
        [job("lvsmon", [f"127.0.0.1:{daemon.metrics_port}"])],
        port=prom_port,
        interval=SCRAPE,
        rule_files=[RULES],
    )
    traffic = Traffic(web, api)
    try:
        started = time.time()
        daemon.start()
        traffic.start()
        # A few scrapes with every series there, the adaptive source answering included
        # (the picture wants a longer steady state before the kill).
        scrapes = 12 if os.environ.get("LVSMON_PANEL_PNG") else 4
        prometheus.wait(
            f'count_over_time(up{{job="lvsmon"}}[1m]) >= {scrapes}',
            30,
            f"{scrapes} scrapes of the daemon",
        )
        wait_for(
            lambda: len(prometheus.vector("lvsmon_real_server_load")) == 2,
            20,
            "adaptive load of both api real servers in Prometheus",
        )
        killed = reals["a"]
        killed_at = time.time()
        killed.close()
        label = f"127.0.0.1:{killed.port}"
        prometheus.wait(
            f'lvsmon_real_server_up{{real_server="{label}"}} == 0',
            20,
            "Prometheus to see the killed real server down",
        )
        yield Scenario(daemon, prometheus, killed, label, started, killed_at)
    finally:
        traffic.stop()
        prometheus.stop()
        daemon.stop()
        daemon.kill()
        servers: list[Backend | HTTPBackend] = [*reals.values(), sorry, *http_reals]
        for r in servers:
            with contextlib.suppress(OSError):
                r.close()


def template_values(prometheus: API) -> dict[str, list[str]]:
    """Each query variable's values, asked the way Grafana asks (label_values -> the label
    values API, the selector interpolated with the variables before it, set to All)."""
    values: dict[str, list[str]] = {}
    for board, name, query in render.template_queries():
        call = render.label_values_call(query)
        assert call, f"{board}: variable {name}: unsupported query {query!r}"
        selector, label = call
        selector = render.interpolate(selector, {k: ".*" for k in ("instance", "virtual_server")})
        body = prometheus.api(f"/api/v1/label/{label}/values", **{"match[]": selector})
        assert body["status"] == "success" and body["data"], (board, name, body)
        values.setdefault(name, sorted(body["data"]))
    return values


def test_template_variables_resolve(scenario: Scenario) -> None:
    values = template_values(scenario.prometheus)
    assert values["instance"] == [f"127.0.0.1:{scenario.daemon.metrics_port}"]
    assert values["virtual_server"] == ["api", "web"]


Settings = dict[str, dict[str, str]]


def variable_settings(values: Mapping[str, list[str]]) -> Settings:
    """Both ways a user sees a dashboard: every variable at "All" (its allValue, .*), and
    every value picked (a regex alternation of the escaped values)."""
    return {
        "All": {name: ".*" for name in values} | VARIABLES,
        "each value": {name: render.regex_value(v) for name, v in values.items()} | VARIABLES,
    }


def panel_problems(
    query_all: Callable[[list[str]], list[dict[str, Any]]],
    settings: Settings,
    needs_data: Callable[[render.Query], bool],
) -> list[str]:
    """Every dashboard query under every variable setting: each must evaluate, and those
    `needs_data` selects must return a non-empty result. One line per problem."""
    found = []
    for setting, variables in settings.items():
        all_queries = list(render.queries())
        exprs = [render.interpolate(q.expr, variables) for q in all_queries]
        for q, expr, body in zip(all_queries, exprs, query_all(exprs), strict=True):
            where = f"{q.board} / {q.panel} / {q.ref} ({setting}): {expr}"
            if body["status"] != "success":
                found.append(f"{where}: ERROR {body.get('error')}")
            elif not body["data"]["result"] and needs_data(q):
                found.append(f"{where}: no data")
    return found


def until_clean(problems: Callable[[], list[str]], timeout: float) -> list[str]:
    """Rates need a few scrapes after an event: retry until there is no problem, then
    return whatever problems remain (empty when clean)."""
    last: list[str] = []

    def clean() -> bool:
        nonlocal last
        last = problems()
        return not last

    with contextlib.suppress(AssertionError):
        wait_for(clean, timeout, "every panel query to return data")
    return last


def test_every_dashboard_panel_returns_data(scenario: Scenario) -> None:
    titles = {(q.board, q.panel) for q in render.queries()}
    assert len(titles) > 20
    assert set(EXEMPT) <= titles, f"stale exemptions: {set(EXEMPT) - titles}"
    settings = variable_settings(template_values(scenario.prometheus))
    p = scenario.prometheus
    # The failure counters appear with the kill; their rates need a scrape or two more.
    left = until_clean(
        lambda: panel_problems(
            lambda exprs: [p.query(e) for e in exprs],
            settings,
            lambda q: (q.board, q.panel) not in EXEMPT,
        ),
        20,
    )
    assert not left, "\n".join(left)


def alert_names() -> set[str]:
    return set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))


def test_every_alert_rule_evaluates(scenario: Scenario) -> None:
    body = scenario.prometheus.api("/api/v1/rules")
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == alert_names(), "Prometheus did not load every rule"
    for rule in rules:
        result = scenario.prometheus.query(rule["query"])
        assert result["status"] == "success", (rule["name"], result)
        assert rule["health"] in ("ok", "unknown"), (rule["name"], rule.get("lastError"))


def promtool_complaints(text: str) -> str:
    """What `promtool check metrics` says about an exposition: empty means not even a
    warning (it exits 0 with lint warnings on some versions, so the output counts too)."""
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    output = (result.stdout + result.stderr).strip()
    return output or ("" if result.returncode == 0 else f"exit {result.returncode}")


def test_live_scrape_passes_promtool_without_warnings(scenario: Scenario) -> None:
    text = scenario.daemon.metrics()
    # every feature of this daemon is in the scrape promtool judges
    for family in (
        "lvsmon_healthcheck_duration_seconds_bucket",
        "lvsmon_real_server_load",
        "lvsmon_weight_source_up",
        "lvsmon_real_server_transitions_total",
    ):
        assert f"\n{family}{{" in text, family
    checks = set(re.findall(r'lvsmon_healthcheck_duration_seconds_count\{[^}]*check="(\w+)"', text))
    assert checks == {"tcp", "exec", "send_expect", "http"}, checks
    complaints = promtool_complaints(text)
    assert not complaints, complaints


def test_real_server_down_alert_fires(scenario: Scenario) -> None:
    p = scenario.prometheus
    # pending once a rule evaluation has seen the scrape with the server down (on a loaded
    # machine that evaluation may come a few seconds after the fixture saw the down series)
    wait_for(
        lambda: (
            p.alerts("LvsmonRealServerDown", "pending")
            or p.alerts("LvsmonRealServerDown", "firing")
        ),
        30,
        "LvsmonRealServerDown to be pending",
    )
    # `for: 1m` in the real rules: firing about a minute after Prometheus saw it down
    firing = wait_for(
        lambda: p.alerts("LvsmonRealServerDown", "firing"), 100, "LvsmonRealServerDown to fire"
    )
    fired_at = time.time()
    assert [a["labels"]["real_server"] for a in firing] == [scenario.killed_label]
    assert firing[0]["labels"]["virtual_server"] == "web"
    assert not p.alerts("LvsmonVirtualServerNoHealthyRealServer", "firing")
    print(f"\nLvsmonRealServerDown firing {fired_at - scenario.killed_at:.1f}s after the kill")
    if out := os.environ.get("LVSMON_PANEL_PNG"):
        draw_panels(scenario, REPO / out, fired_at)


def draw_panels(s: Scenario, out: Path, fired_at: float) -> None:
    """The README picture: `web`'s connection shares and real servers' health, around the kill."""
    start, end = s.started, fired_at + 3
    variables = {
        "instance": ".*",
        "virtual_server": "web",
        **render.grafana_intervals(SCRAPE, 1.0, end - start),
    }
    panels = [
        render.fetch_panel(
            s.prometheus.url,
            "virtual-server.json",
            "Share of connections vs share of weight",
            variables,
            start,
            end,
            1.0,
        ),
        render.fetch_panel(
            s.prometheus.url, "virtual-server.json", "Health", variables, start, end, 1.0
        ),
    ]
    marks = [
        (s.killed_at, f"real server {s.killed_label} killed"),
        (fired_at, "LvsmonRealServerDown firing"),
    ]
    render.draw(panels, out, marks)
