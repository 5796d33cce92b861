"""Advert timing under load: lvsmon's VRRP process while its parent is busy.

The parent (this process, standing in for the daemon) blocks its own event
loop with CPU work, as thousands of health checks, a reload or a slow scrape
would, and extra burner processes oversubscribe the CPUs; a capture in the
client namespace records the kernel arrival time of every advert. Jitter is
the deviation of each interval from the configured advert interval.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import time
import tomllib
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from lvsmon.config.failover import read_failover_groups
from lvsmon.configkit import Problem
from lvsmon.ha.process import HAProcess
from lvsmon.model.failover import FailoverGroup
from tests.netns.topology import HERE, PYTHON, Topology, lvsmon_config


@dataclass(frozen=True)
class Jitter:
    adverts: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def __str__(self) -> str:
        return (
            f"{self.adverts} adverts, |interval - advert_interval| p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms"
        )


def groups(config: str) -> tuple[FailoverGroup, ...]:
    problems: list[Problem] = []
    result = read_failover_groups(tomllib.loads(config), problems)
    assert not problems, problems
    return result


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1


def jitter_of(stamps: list[float], interval: float) -> Jitter:
    deviations = sorted(abs((b - a) - interval) * 1000 for a, b in itertools.pairwise(stamps))
    q = statistics.quantiles(deviations, n=100, method="inclusive")
    return Jitter(len(stamps), statistics.median(deviations), q[98], deviations[-1])


async def _measure(topo: Topology, seconds: float, busy: bool, interval: float) -> Jitter:
    config = lvsmon_config(priority=150, advert=f"{round(interval * 1000)}ms")
    ha = HAProcess(groups(config), command_prefix=topo.exec_argv("dir1", []))
    await ha.start()
    try:
        deadline = time.monotonic() + 10
        while not any(g.state == "master" for g in ha.status()):
            assert time.monotonic() < deadline, "dir1 never became master"
            await asyncio.sleep(0.01)
        capture = subprocess.Popen(
            topo.exec_argv("client", [PYTHON, str(HERE / "capture.py"), "eth0", str(seconds)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert capture.stderr is not None
        capture.stderr.readline()  # "capturing"
        burners: list[BaseProcess] = []
        if busy:
            ctx = multiprocessing.get_context("fork")
            burners = [
                ctx.Process(target=_burn, args=(seconds,)) for _ in range(2 * (os.cpu_count() or 1))
            ]
            for b in burners:
                b.start()
            _burn(seconds)  # the daemon's own loop: blocked the whole time
        out, _ = capture.communicate(timeout=seconds + 10)
        for b in burners:
            b.join()
    finally:
        await ha.stop()
    stamps = [t for t, src, _, prio in json.loads(out) if src == "192.0.2.2" and prio]
    return jitter_of(stamps, interval)


def measure(
    topo: Topology, seconds: float = 3.0, busy: bool = True, interval: float = 0.1
) -> Jitter:
    return asyncio.run(_measure(topo, seconds, busy, interval))
