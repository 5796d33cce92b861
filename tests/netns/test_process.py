"""The daemon's seam (`HAProcess`) driven from a test acting as the daemon: real-server
health fed in through `set_real_server_health`, and advert timing while the
parent is busy (the reason VRRP runs in its own process)."""

from __future__ import annotations

import asyncio
import time

from lvsmon.ha.process import HAProcess
from tests.netns.jitter import groups, measure
from tests.netns.topology import Topology, lvsmon_config


def test_real_server_health_lowers_the_priority_and_the_peer_takes_over(
    topo: Topology,
) -> None:
    track = ["[failover_group.track_real_servers]\nmin_fraction = 0.5\nweight = -60"]
    config = lvsmon_config(priority=150, group_extra=track)
    d2 = topo.lvsmon("dir2", lvsmon_config(priority=100))

    async def scenario() -> None:
        ha = HAProcess(groups(config), command_prefix=topo.exec_argv("dir1", []))
        await ha.start()

        async def state(want: str, timeout: float = 5) -> None:
            deadline = time.monotonic() + timeout
            while not any(g.state == want for g in ha.status()):
                assert time.monotonic() < deadline, f"never {want}: {ha.status()}"
                await asyncio.sleep(0.01)

        try:
            await state("master")
            d2.wait_state("backup")
            ha.set_real_server_health({"web": (1, 4), "dns": (2, 2)})  # 3/6 = 0.5: fine
            await asyncio.sleep(0.5)
            assert ha.status()[0].state == "master" and ha.status()[0].priority == 150
            ha.set_real_server_health({"web": (1, 4), "dns": (0, 2)})  # 1/6 < 0.5
            await state("backup")
            assert ha.status()[0].priority == 90
            d2.wait_state("master", 2)
            ha.set_real_server_health({"web": (4, 4), "dns": (2, 2)})
            await state("master")
            d2.wait_state("backup", 2)
        finally:
            await ha.stop()
        assert ha.restarts == 0

    asyncio.run(scenario())


def test_adverts_keep_their_cadence_while_the_parent_is_busy(topo: Topology) -> None:
    idle = measure(topo, seconds=2.0, busy=False)
    busy = measure(topo, seconds=3.0, busy=True)
    print(
        f"\nadvert jitter at 100 ms, parent idle: {idle}\n"
        f"advert jitter at 100 ms, parent loop blocked + CPUs oversubscribed: {busy}"
    )
    assert busy.adverts >= 25  # none missing: 3 s at 100 ms
    assert busy.p99_ms < 20 and busy.max_ms < 50  # far below the 261 ms of slack a backup allows
