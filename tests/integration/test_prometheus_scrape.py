"""A real Prometheus server scrapes a live daemon and answers PromQL over its series."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Daemon, backends, connect
from tests.integration.test_daemon import service
from tests.ports import free_port
from tests.prometheus import Prometheus, job


def test_prometheus_scrapes_the_director(tmp_path: Path) -> None:
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = Daemon(tmp_path, service(vip, a.toml(1), b.toml(2))).start()
        try:
            with Prometheus(tmp_path, [job("lvsmon", [f"127.0.0.1:{d.metrics_port}"])]) as prom:
                for _ in range(6):
                    connect(vip)[0].close()
                prom.wait('up{job="lvsmon"} == 1', 30, "a successful scrape")
                total = prom.wait(
                    "sum(lvsmon_virtual_server_connections_total) == 6",
                    30,
                    "the connection counter in Prometheus",
                )
                assert float(total[0]["value"][1]) == 6
                weights = prom.vector("lvsmon_real_server_weight")
                assert sorted(float(r["value"][1]) for r in weights) == [1, 2]
                assert {r["metric"]["virtual_server"] for r in weights} == {"web"}
        finally:
            d.stop()
            d.kill()
