"""A real Prometheus in the fleet's router namespace, scraping every director
(tests/netns/fleet.py); asked from there, as tests/netns/test_prometheus_ha.py does."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_prometheus_e2e import RULES, SCRAPE
from tests.netns.fleet import ROUTER_CLIENT_SIDE, Fleet
from tests.netns.test_prometheus_ha import NsPrometheus
from tests.netns.topology import wait_for
from tests.prometheus import command, job

LISTEN = f"{ROUTER_CLIENT_SIDE}:9090"


class FleetPrometheus(NsPrometheus):
    def __init__(self, fleet: Fleet, tmp: Path):
        super().__init__(fleet, "router", f"http://{LISTEN}")
        targets = [f"{d.address}:{d.metrics_port}" for d in fleet.directors]
        argv = command(tmp, LISTEN, [job("lvsmon", targets)], interval=SCRAPE, rule_files=[RULES])
        fleet.spawn("router", "prometheus", argv)
        wait_for("Prometheus ready", self.ready, 30, every=0.2)
