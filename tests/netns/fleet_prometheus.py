"""A real Prometheus in the fleet's router namespace, scraping every director
(tests/netns/fleet.py); queried from there, in batches (one Python per batch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_prometheus_e2e import RULES, SCRAPE
from tests.netns.fleet import ROUTER_CLIENT_SIDE, Fleet
from tests.netns.test_prometheus_ha import BATCH
from tests.netns.topology import wait_for
from tests.prometheus import API, command, job

URL = f"http://{ROUTER_CLIENT_SIDE}:9090"


class FleetPrometheus(API):
    def __init__(self, fleet: Fleet, tmp: Path):
        self.fleet = fleet
        targets = [f"{d.address}:{d.metrics_port}" for d in fleet.directors]
        argv = command(
            tmp,
            f"{ROUTER_CLIENT_SIDE}:9090",
            [job("lvsmon", targets)],
            interval=SCRAPE,
            rule_files=[RULES],
        )
        fleet.spawn("router", "prometheus", argv)
        wait_for("Prometheus ready", self.ready, 30, every=0.2)

    def batch(self, requests: list[tuple[str, dict[str, str]]]) -> list[Any]:
        return list(json.loads(self.fleet.in_ns("router", BATCH, json.dumps(requests))))

    def api(self, path: str, **params: str) -> dict[str, Any]:
        return dict(self.batch([(URL + path, params)])[0])

    def ready(self) -> bool:
        return "Ready" in str(self.batch([(URL + "/-/ready", {})])[0])

    def query_all(self, exprs: list[str]) -> list[dict[str, Any]]:
        return self.batch([(URL + "/api/v1/query", {"query": e}) for e in exprs])
