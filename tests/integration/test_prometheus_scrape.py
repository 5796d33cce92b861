"""A real Prometheus server scrapes a live daemon and answers PromQL over its series."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from tests.integration.harness import Daemon, backends, connect, free_port, wait_for
from tests.integration.test_daemon import service


def query(port: int, promql: str) -> list[dict]:  # type: ignore[type-arg]
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_director(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not installed: run scripts/install-test-deps"
    vip = free_port()
    with backends("a", "b") as (a, b):
        d = Daemon(tmp_path, service(vip, a.toml(1), b.toml(2))).start()
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: lvsmon\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{d.metrics_port}']}}]\n"
        )
        proc = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        try:
            for _ in range(6):
                connect(vip)[0].close()
            wait_for(lambda: query(prom_port, 'up{job="lvsmon"} == 1'), 30, "a successful scrape")
            total = wait_for(
                lambda: query(prom_port, "sum(lvsmon_virtual_server_connections_total) == 6"), 30,
                "the connection counter in Prometheus",
            )  # fmt: skip
            assert float(total[0]["value"][1]) == 6
            weights = query(prom_port, "lvsmon_real_server_weight")
            assert sorted(float(r["value"][1]) for r in weights) == [1, 2]
            assert {r["metric"]["virtual_server"] for r in weights} == {"web"}
        finally:
            proc.terminate()
            proc.wait(20)
            d.stop()
            d.kill()
