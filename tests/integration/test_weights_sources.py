"""Adaptive weights against real sources: a Prometheus server scraping real local exporters,
exporters scraped directly (plain, and HTTPS with an auth header), node_exporter itself,
and HAProxy-style agents. The controller's factors follow the load the test sets."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme

from lvsmon.config.adaptive import read_adaptive
from lvsmon.configkit import Problem
from lvsmon.model import DestKey, ServiceKey
from lvsmon.model.adaptive import AdaptiveSpec
from lvsmon.weights.controller import Group, WeightController
from lvsmon.weights.sources import Member
from tests.integration.test_weights_support import Agent, exporters
from tests.ports import free_port_on
from tests.prometheus import Prometheus, job

SVC = ServiceKey("tcp", "127.0.0.10", 80)
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
# fast and undamped, so the tests see each change within a poll or two; the absolute map
# (mode "proportional") gives exact factors to assert on
LAW = """
mode = "proportional"
interval = "500ms"
timeout = "400ms"
smoothing = 1.0
max_change = 1.0
load_low = 0.0
load_high = 1.0
stale_after = "1s"
expire_after = "2500ms"
"""


def spec_of(text: str) -> AdaptiveSpec:
    problems: list[Problem] = []
    spec = read_adaptive(tomllib.loads(text + LAW), "adaptive_weights", problems)
    assert spec is not None, problems
    return spec


def group(spec: AdaptiveSpec, hosts: list[str]) -> Group:
    return Group(SVC, "web", spec, tuple(Member(DestKey(h, 8080), 100) for h in hosts))


async def until(what: str, predicate: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def factors(ctl: WeightController) -> dict[str, float]:
    return {dest.address: round(f, 2) for (_, dest), f in ctl.factors().items()}


def test_prometheus_source_follows_exporter_load(tmp_path: Path) -> None:
    with exporters(HOSTS) as (port, (a, b, c)):
        targets = [e.address for e in (a, b, c)]
        with Prometheus(tmp_path, [job("node", targets)], scrape_timeout="900ms") as prom:
            prom.wait("count(up == 1) == 3", 20, "3 scraped targets")
            spec = spec_of(
                f'source = "prometheus"\nurl = "{prom.url}"\n'
                'query = \'node_load1{instance=~"${instances}"} / on (instance) '
                'count by (instance) (node_cpu_seconds_total{mode="idle"})\'\n'
                f'match_value = "${{address}}:{port}"\n'
            )

            async def main() -> None:
                ctl = WeightController()
                ctl.configure([group(spec, [*HOSTS[:2], "127.0.0.9"])])  # .9: no exporter
                await ctl.start()
                try:
                    await until("first poll", lambda: ctl.sources()[0].up)
                    a.load, b.load = 1.6, 0.4  # per CPU (2 CPUs): 0.8 and 0.2
                    await until(
                        "factors to follow",
                        lambda: (
                            factors(ctl) == {"127.0.0.2": 0.28, "127.0.0.3": 0.82, "127.0.0.9": 1.0}
                        ),
                    )
                    views = {v.dest.address: v for v in ctl.servers()}
                    assert views["127.0.0.9"].error == f'no series with instance="127.0.0.9:{port}"'
                    a.load, b.load = 0.0, 2.0
                    await until(
                        "factors to follow the change",
                        lambda: (
                            factors(ctl) == {"127.0.0.2": 1.0, "127.0.0.3": 0.1, "127.0.0.9": 1.0}
                        ),
                    )
                    # an exporter dies: Prometheus marks its series stale; its weight is
                    # held (fail-static), then returns to the configured weight
                    b.stop()
                    await until(
                        "b's load to vanish",
                        lambda: (SVC, DestKey("127.0.0.3", 8080)) not in ctl.loads(),
                    )
                    assert factors(ctl)["127.0.0.3"] == 0.1
                    assert ctl.sources()[0].up
                    await until("expiry", lambda: factors(ctl)["127.0.0.3"] == 1.0, 10)
                finally:
                    await ctl.stop()

            asyncio.run(main())


def test_prometheus_source_down_holds_weights(tmp_path: Path) -> None:
    spec = spec_of(
        f'source = "prometheus"\nurl = "http://127.0.0.1:{free_port_on("127.0.0.1")}"'
        '\nquery = "node_load1"\n'
    )

    async def main() -> None:
        ctl = WeightController()
        ctl.configure([group(spec, HOSTS[:1])])
        await ctl.poll(SVC)
        (src,) = ctl.sources()
        assert src.up is False and "refused" in src.error.lower() and src.last_success == 0
        assert factors(ctl) == {"127.0.0.2": 1.0}

    asyncio.run(main())


def test_scrape_source_follows_exporter_load() -> None:
    with exporters(HOSTS[:2]) as (port, (a, b)):
        spec = spec_of(
            f'source = "scrape"\nurl = "http://${{host}}:{port}/metrics"\n'
            "expression = 'node_load1 / count(node_cpu_seconds_total{mode=\"idle\"})'"
            "\n"
        )

        async def main() -> None:
            ctl = WeightController()
            ctl.configure([group(spec, HOSTS[:2])])
            await ctl.start()
            try:
                a.load, b.load = 1.0, 2.0
                await until(
                    "factors", lambda: factors(ctl) == {"127.0.0.2": 0.55, "127.0.0.3": 0.1}
                )
                a.load = 0.2
                await until("factors", lambda: factors(ctl)["127.0.0.2"] == 0.91)
                b.stop()  # its exporter is gone: held, then expired; a keeps adapting
                await until("b expired", lambda: factors(ctl)["127.0.0.3"] == 1.0, 10)
                assert ctl.sources()[0].up
                assert factors(ctl)["127.0.0.2"] == 0.91
            finally:
                await ctl.stop()

        asyncio.run(main())


def test_scrape_over_https_with_an_auth_header(tmp_path: Path) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.2").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with exporters(HOSTS[:1], tls=ctx, token="Bearer t0ken") as (port, (a,)):
        a.load = 1.0
        text = (
            f'source = "scrape"\nurl = "https://${{address}}:{port}/metrics"\n'
            "expression = 'node_load1 / count(node_cpu_seconds_total{mode=\"idle\"})'\n"
            f'ca_file = "{ca_file}"\n'
        )

        async def poll(extra: str) -> tuple[dict[str, float], str]:
            ctl = WeightController()
            ctl.configure([group(spec_of(text + extra), HOSTS[:1])])
            await ctl.poll(SVC)
            return factors(ctl), ctl.servers()[0].error

        assert asyncio.run(poll('authorization = "Bearer t0ken"\n')) == ({"127.0.0.2": 0.55}, "")
        assert asyncio.run(poll("")) == ({"127.0.0.2": 1.0}, "HTTP 401 Unauthorized")


def test_scrape_real_node_exporter() -> None:
    binary = shutil.which("prometheus-node-exporter")
    assert binary, "prometheus-node-exporter not installed: run scripts/install-test-deps"
    port = free_port_on("127.0.0.2")
    proc = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.2:{port}",
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        spec = spec_of(
            f'source = "scrape"\nurl = "http://${{host}}:{port}/metrics"\n'
            "expression = '1 - avg(rate(node_cpu_seconds_total{mode=\"idle\"}))'\n"
        )

        async def main() -> tuple[float | None, str]:
            ctl = WeightController()
            ctl.configure([group(spec, HOSTS[:1])])
            for _ in range(40):  # until it listens, then twice more: rate() needs two
                await ctl.poll(SVC)
                view = ctl.servers()[0]
                if view.load is not None:
                    return view.load, view.error
                await asyncio.sleep(0.3)
            return None, ctl.servers()[0].error

        load, error = asyncio.run(main())
        assert load is not None, error
        assert 0.0 <= load <= 1.0  # CPU utilisation of this machine between two scrapes
    finally:
        proc.terminate()
        proc.wait(10)


def test_agent_source() -> None:
    port = free_port_on(*HOSTS[:2])  # agents answer weights: the mode is only about loads
    a, b = Agent(HOSTS[0], port, "75%"), Agent(HOSTS[1], port, "up 40%")
    spec = spec_of(f'source = "agent"\nport = {port}\n')

    async def main() -> None:
        ctl = WeightController()
        ctl.configure([group(spec, HOSTS[:2])])
        await ctl.start()
        try:
            await until(
                "percentages", lambda: factors(ctl) == {"127.0.0.2": 0.75, "127.0.0.3": 0.4}
            )
            a.reply = "drain # maintenance"
            await until("drain", lambda: factors(ctl)["127.0.0.2"] == 0.0)
            a.reply = "ready 90%"
            await until("ready", lambda: factors(ctl)["127.0.0.2"] == 0.9)
            b.stop()  # the agent is gone: held, then back to the configured weight
            await asyncio.sleep(0.6)
            assert factors(ctl)["127.0.0.3"] == 0.4
            assert "refused" in ctl.servers()[1].error.lower()
            await until("expiry", lambda: factors(ctl)["127.0.0.3"] == 1.0, 10)
        finally:
            await ctl.stop()

    try:
        asyncio.run(main())
    finally:
        a.stop()


def test_scrape_over_https_verifies_the_certificate(tmp_path: Path) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.2").configure_cert(ctx)
    with exporters(HOSTS[:1], tls=ctx) as (port, _):
        url = f'url = "https://${{address}}:{port}/metrics"\nexpression = "node_load1"\n'

        async def poll(extra: str) -> str:
            ctl = WeightController()
            ctl.configure([group(spec_of('source = "scrape"\n' + url + extra), HOSTS[:1])])
            await ctl.poll(SVC)
            return ctl.servers()[0].error

        assert asyncio.run(poll("")).startswith("TLS: certificate verify failed")
        assert asyncio.run(poll("tls_verify = false\n")) == ""


def test_balance_mode_moves_weight_off_the_busier_server() -> None:
    """The default law: loads that do not answer the weights (open loop) push the busier
    server's factor down one update at a time, never up; the idler one stays at 1.0."""
    with exporters(HOSTS[:2]) as (port, (a, b)):
        a.load, b.load = 1.8, 0.6  # per CPU: 0.9 and 0.3
        text = (
            f'source = "scrape"\nurl = "http://${{host}}:{port}/metrics"\n'
            "expression = 'node_load1 / count(node_cpu_seconds_total{mode=\"idle\"})'\n"
            'interval = "300ms"\ntimeout = "200ms"\nsmoothing = 1.0\n'
        )
        problems: list[Problem] = []
        spec = read_adaptive(tomllib.loads(text), "adaptive_weights", problems)
        assert spec is not None and spec.params.mode == "balance", problems

        async def main() -> list[dict[str, float]]:
            ctl = WeightController()
            ctl.configure([group(spec, HOSTS[:2])])
            seen = []
            for _ in range(6):
                await ctl.poll(SVC)
                seen.append(factors(ctl))
            return seen

        seen = asyncio.run(main())
        assert all(f["127.0.0.3"] == 1.0 for f in seen)
        a_factors = [f["127.0.0.2"] for f in seen]
        # r = 1.5 and 0.5: x 0.85 and x 1.32 (clamped to 1.25), rescaled by 0.8 so the
        # idler one stays at max_weight: a's factor falls by 0.85 x 0.8 = 0.68 per update
        assert a_factors[:3] == [0.68, 0.46, 0.31]
        assert a_factors == sorted(a_factors, reverse=True) and a_factors[-1] >= 0.1
