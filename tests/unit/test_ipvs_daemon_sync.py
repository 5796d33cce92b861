"""The daemon's periodic sync rests while a versioned data plane (ipvs) is settled.

At 1,000 x 50 a full read plus reconcile costs ~0.3 s of CPU; the daemon repeats
it every second only while something may have changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

import pytest

from lvsmon import config, daemon
from lvsmon.dataplane.base import DataPlaneError, Snapshot, snapshot_of
from lvsmon.reconcile import Op, apply_ops

CFG = config.loads("""
[daemon]
dataplane = "ipvs"
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
[[virtual_server.real_server]]
address = "10.0.0.2"
[[virtual_server.real_server]]
address = "10.0.0.3"
""")


class FakeKernel:
    name = "ipvs"

    def __init__(self) -> None:
        self.table: dict = {}  # type: ignore[type-arg]
        self.generation = 0
        self.read_at = 0.0
        self.reads = 0
        self.in_use = 0
        self.fail = False

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...

    def snapshot(self) -> Snapshot:
        self.reads += 1
        snap = snapshot_of(self.table)
        if not self.in_use:
            return snap
        services = tuple(
            dataclasses.replace(
                s, dests=tuple(dataclasses.replace(d, active=self.in_use) for d in s.dests)
            )
            for s in snap.services
        )
        return Snapshot(services)

    async def apply(self, ops: Sequence[Op]) -> None:
        if self.fail:
            raise DataPlaneError("boom")
        self.table = apply_ops(self.table, list(ops))
        self.generation += 1


def run(director: daemon.Director, times: int = 1) -> None:
    async def go() -> None:
        for _ in range(times):
            await director.sync()

    asyncio.run(go())


def test_a_settled_table_is_not_read_again_until_something_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = FakeKernel()
    director = daemon.Director("x.toml", CFG, kernel)
    kernel.reads = 0  # (the metrics registry reads once when it is built)
    run(director, 2)  # programs, then confirms
    assert kernel.reads == 2
    run(director, 5)
    assert kernel.reads == 2  # settled: nothing read
    kernel.generation += 1  # e.g. a scrape saw another tool change the table
    run(director, 3)
    assert kernel.reads == 3
    director.desired_changed()  # e.g. a health verdict
    run(director)
    assert kernel.reads == 4
    # and every FULL_RESYNC_INTERVAL regardless
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    director._settled = (director.config, kernel.generation, now[0])
    run(director)
    assert kernel.reads == 4
    now[0] += daemon.FULL_RESYNC_INTERVAL - 1
    kernel.read_at = now[0]  # a scrape read the same table: as good as a resync
    now[0] += 2
    run(director)
    assert kernel.reads == 4
    now[0] += daemon.FULL_RESYNC_INTERVAL
    run(director)
    assert kernel.reads == 5


def test_draining_or_failing_keeps_the_sync_running() -> None:
    kernel = FakeKernel()
    director = daemon.Director("x.toml", CFG, kernel)
    run(director, 2)
    smaller = config.loads("""
[daemon]
dataplane = "ipvs"
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
[[virtual_server.real_server]]
address = "10.0.0.2"
""")
    director.config = smaller  # as a reload does
    kernel.in_use = 1  # 10.0.0.3 still has a connection: weight 0, not deleted
    run(director, 3)
    reads = kernel.reads
    run(director, 2)
    assert kernel.reads == reads + 2  # pending drain: read every time
    kernel.in_use = 0
    run(director, 2)  # deleted, then settled
    reads = kernel.reads
    run(director, 3)
    assert kernel.reads == reads
    director.config = CFG
    kernel.fail = True
    run(director, 3)
    assert kernel.reads == reads + 3 and director.dataplane_errors == 3


def test_the_resync_decision_is_a_pure_function_of_now() -> None:
    cfg = config.loads('[[virtual_server]]\nname = "a"\naddress = "192.0.2.1"\nport = 80\n')
    other = config.loads('[[virtual_server]]\nname = "a"\naddress = "192.0.2.1"\nport = 80\n')
    settled = (cfg, 7, 100.0)
    limit = daemon.FULL_RESYNC_INTERVAL
    assert daemon.is_settled(settled, cfg, 7, 0.0, 100.0 + limit - 0.1)
    assert not daemon.is_settled(settled, cfg, 7, 0.0, 100.0 + limit)  # time for a full read
    assert daemon.is_settled(settled, cfg, 7, 150.0, 150.0 + limit - 0.1)  # a scrape re-read
    assert not daemon.is_settled(settled, cfg, 8, 0.0, 101.0)  # the table changed
    assert not daemon.is_settled(settled, other, 7, 0.0, 101.0)  # a reload: another config
    assert not daemon.is_settled(None, cfg, 7, 0.0, 101.0)  # never settled
