"""Real servers that misbehave all at once behind one daemon: one accepts and never
answers, one answers slower than the check's timeout, one flaps between 200 and
503, one is healthy. The hung and slow ones go down for `timeout`, and none of them
holds up the healthy server's checks: it is checked as often as the hung one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, wait_for
from tests.integration.test_daemon import service
from tests.integration.test_health_support import Misbehaving
from tests.ports import free_port

CHECK = '[virtual_server.health_check]\ntype = "http"\ninterval = "200ms"\ntimeout = "150ms"\n'


@pytest.fixture
def servers() -> Iterator[dict[str, Misbehaving]]:
    made = {mode: Misbehaving() for mode in ("ok", "hang", "slow", "flap")}
    for mode, server in made.items():
        server.delay = 1.0  # slow: several times the timeout
        server.set(mode)
    yield made
    for server in made.values():
        server.close()


def count(d: Daemon, server: Misbehaving) -> float:
    label = f"127.0.0.1:{server.port}"
    return d.sample("lvsmon_healthcheck_duration_seconds_count", real_server=label) or 0


def test_hung_slow_and_flapping_servers_never_hold_up_the_healthy_one(
    tmp_path: Path, servers: dict[str, Misbehaving]
) -> None:
    reals = [
        f'[[virtual_server.real_server]]\naddress = "127.0.0.1"\nport = {s.port}\n'
        for s in servers.values()
    ]
    d = Daemon(tmp_path, service(free_port(), *reals, extra=CHECK))
    d.start()
    try:
        ok, hang, slow = servers["ok"], servers["hang"], servers["slow"]

        def up(s: Misbehaving) -> bool:
            return bool(d.real_servers("web")[f"127.0.0.1:{s.port}"]["state"] == "up")

        wait_for(lambda: not up(hang) and not up(slow), 10, "hung and slow to go down")
        start = {name: count(d, s) for name, s in servers.items()}
        time.sleep(2.0)
        done = {name: count(d, s) - start[name] for name, s in servers.items()}
        print(f"\nchecks in 2 s while two servers hang or crawl: {done}")
        assert up(ok)
        # every check is on its own schedule: the healthy server's checks keep coming
        # while the hung one's run into their timeout
        assert done["ok"] >= done["hang"] - 1 and done["ok"] >= 3, done
        for bad in (hang, slow):
            label = f"127.0.0.1:{bad.port}"
            failures = d.sample(
                "lvsmon_healthcheck_failures_total", real_server=label, reason="timeout"
            )
            assert failures and failures >= 2, (label, failures)
        assert d.proc is not None and d.proc.poll() is None
    finally:
        d.kill()
