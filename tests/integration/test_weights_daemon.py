"""End to end: `lvsmon run` with [virtual_server.adaptive_weights], the proxy data plane,
real backends on their own loopback addresses and an exporter beside each.

The programmed weights (/status, /metrics) follow the load each exporter reports;
the data plane balances by them; an exporter going away holds its server's weight,
then returns it to the configured one; a reload without the table restores the
configured weights; `lvsmon check` rejects a bad table with its key path.

Needs the lead's wiring of lvsmon.weights into config, model, desired and daemon.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.integration.harness import Backend, Daemon, connect, wait_for
from tests.integration.test_weights_support import exporters
from tests.ports import free_port

HOSTS = ["127.0.0.2", "127.0.0.3"]


def service(vport: int, exporter_port: int, a: Backend, b: Backend, adaptive: bool = True) -> str:
    table = f"""
[virtual_server.adaptive_weights]
source = "scrape"
url = "http://${{address}}:{exporter_port}/metrics"
expression = 'node_load1 / count(node_cpu_seconds_total{{mode="idle"}})'
mode = "proportional"
interval = "500ms"
timeout = "400ms"
smoothing = 1.0
max_change = 1.0
load_low = 0.0
load_high = 1.0
stale_after = "1s"
expire_after = "3s"
"""
    return (
        f'[[virtual_server]]\nname = "web"\naddress = "127.0.0.1"\nport = {vport}\n'
        f'scheduler = "wlc"\n{table if adaptive else ""}\n'
        f"{a.toml(100)}{b.toml(100)}"
    )


def weights(d: Daemon, a: Backend, b: Backend) -> tuple[int, int]:
    rs = d.real_servers("web")
    return rs[f"{a.host}:{a.port}"]["weight"], rs[f"{b.host}:{b.port}"]["weight"]


def test_programmed_weights_follow_scraped_load(tmp_path: Path) -> None:
    a, b = Backend("a", HOSTS[0]), Backend("b", HOSTS[1])
    vport = free_port()
    with exporters(HOSTS) as (eport, (ea, eb)):
        ea.load, eb.load = 2.0, 0.0  # 2 CPUs: a saturated (load 1.0), b idle
        d = Daemon(tmp_path, service(vport, eport, a, b)).start()
        try:
            wait_for(lambda: weights(d, a, b) == (10, 100), 10, "a at min_weight, b at 100")
            ra, rb = f"{a.host}:{a.port}", f"{b.host}:{b.port}"
            assert d.sample("lvsmon_real_server_weight", real_server=ra) == 10
            assert d.sample("lvsmon_real_server_configured_weight", real_server=ra) == 100
            assert d.sample("lvsmon_real_server_load", real_server=ra) == 1.0
            assert d.sample("lvsmon_real_server_load", real_server=rb) == 0.0
            assert d.sample("lvsmon_weight_source_up", source="scrape") == 1
            assert (d.sample("lvsmon_weight_updates_total", real_server=ra) or 0) >= 1
            assert (
                d.sample("lvsmon_weight_source_last_success_timestamp_seconds", source="scrape")
                or 0
            ) > 1.6e9
            # `lvsmon status`: configured x health x slow start x adaptive = effective
            table = subprocess.run(
                [sys.executable, "-m", "lvsmon.cli", "status", "-c", str(d.path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            rows = {
                line.split()[1]: line.split()
                for line in table.splitlines()
                if line.startswith("  -> ")
            }
            assert rows[ra][3] == "10" and rows[ra][7:] == ["100", "up", "-", "0.10", "10"]
            assert rows[rb][7:] == ["100", "up", "-", "1.00", "100"]
            # the data plane balances by the adapted weights: wlc, held connections, 10:100
            held = [connect(vport) for _ in range(22)]
            seen = Counter(name for _, name in held)
            for sock, _ in held:
                sock.close()
            assert seen["b"] >= 18, seen
            # the load moves: so do the weights
            ea.load, eb.load = 0.0, 1.2  # b at 0.6 -> 0.1 x 0.6 + 1 x 0.4 = 0.46
            wait_for(lambda: weights(d, a, b) == (100, 46), 10, "the weights to follow")
            # b's exporter goes away: its weight is held, then back to the configured one
            eb.stop()
            wait_for(
                lambda: d.sample("lvsmon_real_server_load", real_server=rb) is None,
                5,
                "b's load series to vanish",
            )
            assert weights(d, a, b) == (100, 46)
            wait_for(lambda: weights(d, a, b) == (100, 100), 10, "b's weight to expire")
            assert d.sample("lvsmon_weight_source_up", source="scrape") == 1  # a answers
            # a reload without adaptive weights: the configured weights, no adaptive series
            ea.load = 2.0
            wait_for(lambda: weights(d, a, b) == (10, 100), 10, "a adapted again")
            d.reload(service(vport, eport, a, b, adaptive=False))
            wait_for(lambda: weights(d, a, b) == (100, 100), 10, "configured weights")
            assert d.sample("lvsmon_weight_source_up", source="scrape") is None
        finally:
            d.stop()
            d.kill()
            a.close()
            b.close()


def test_lvsmon_check_rejects_a_bad_adaptive_table(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"""
[[virtual_server]]
name = "web"
address = "127.0.0.1"
port = {free_port()}

[virtual_server.adaptive_weights]
source = "scrape"
url = "http://${{adress}}:9100/metrics"
expression = "node_load1 /"
mode = "piranha"
deadband = 0.1

[[virtual_server.real_server]]
address = "127.0.0.2"
port = 80
weight = 1
""")
    result = subprocess.run(
        [sys.executable, "-m", "lvsmon.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    path = "virtual_server[web].adaptive_weights"
    assert f'{path}.url: "http://${{adress}}:9100/metrics" is not valid' in out, out
    assert f'{path}.expression: "node_load1 /" is not valid' in out, out
    assert f'{path}.deadband: not used by mode "piranha"' in out, out
