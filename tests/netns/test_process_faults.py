"""Process and link faults on a pair of lvsmon directors (VRRP process layout of the
daemon: parent + real-time child), one topology for the module.

- kill -9 of the master's VRRP child alone: the parent removes the orphaned
  addresses before it restarts the child (so the backup that takes over is the
  only holder), then the restarted child preempts back;
- SIGSTOP of the master for longer than the master-down interval, then SIGCONT: the
  frozen master wakes, hears the better master and steps down;
- the master's link flapping at 5 Hz: nothing crashes and, once it is steady, one
  master holds the addresses again.
Windows during which both directors held the VIP are printed (bench/chaos.py
reports them against keepalived); the bars here are orderings and end states.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tests.netns.conftest import _missing
from tests.netns.test_failover import pair
from tests.netns.test_vrrp_flood import vrrp_child
from tests.netns.topology import LvsmonDirector, Topology, lvsmon_config, wait_for


@pytest.fixture(scope="module")
def net() -> Iterator[Topology]:
    reason = _missing()
    if reason:
        pytest.fail(f"netns tier {reason}")
    with Topology(with_real_servers=False) as topo:
        yield topo


@pytest.fixture
def fresh(net: Topology) -> Iterator[Topology]:
    """The module's topology with no director left running from the test before."""
    yield net
    for proc in list(net.procs):
        Topology._kill(proc)
    net.procs.clear()


class Holders:
    """Samples which directors hold the VIP; `both_s` is how long both did."""

    def __init__(self, topo: Topology, every: float = 0.01):
        self.topo = topo
        self.every = every
        self.samples: list[tuple[float, bool, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                self.samples.append((now, self.topo.holds("dir1"), self.topo.holds("dir2")))
            except RuntimeError:
                return  # the topology is gone (a test failed before stop())
            time.sleep(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        both = 0.0
        for (t0, a, b), (t1, _, _) in zip(self.samples, self.samples[1:], strict=False):
            if a and b:
                both += t1 - t0
        return both

    def first_time(self, host: int, holding: bool, after: float) -> float | None:
        """When director `host` (1 or 2) was first seen in that state after `after`."""
        for t, a, b in self.samples:
            if t >= after and (a if host == 1 else b) == holding:
                return t
        return None


def test_kill_9_of_the_vrrp_child_alone(fresh: Topology) -> None:
    d1, d2 = v4_pair(fresh)
    child = vrrp_child(fresh, d1)
    holders = Holders(fresh)
    os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    d2.wait_state("master", 3)
    wait_for("dir1 releases the VIP", lambda: not d1.holds_vip(), 3)
    restarted = wait_for("a new VRRP child", lambda: _new_child(fresh, d1, child), 5, every=0.002)
    seen_new = time.monotonic()
    d1.wait_state("master", 5)  # the restarted child preempts back: priority 150 > 100
    wait_for("dir2 steps down", lambda: not d2.holds_vip(), 3)
    both = holders.stop()
    released = holders.first_time(1, holding=False, after=killed)
    assert released is not None
    print(
        f"\nkill -9 VRRP child: VIP released by the parent after {released - killed:.3f} s, "
        f"new child {restarted} after {seen_new - killed:.3f} s; both held it {both:.3f} s"
    )
    assert released < seen_new, "the orphaned VIP stayed until the restarted child removed it"
    assert d1.holds_vip() and d1.proc.alive()


def v4_pair(topo: Topology) -> tuple[LvsmonDirector, LvsmonDirector]:
    first, second = (lvsmon_config(priority=p, ipv6=False) for p in (150, 100))
    d1, d2 = pair(topo, first=first, second=second)
    return d1, d2


def _new_child(topo: Topology, d: LvsmonDirector, old: int) -> int | None:
    try:
        pid = vrrp_child(topo, d)
    except AssertionError:
        return None  # none, or the old one not yet reaped
    return pid if pid != old else None


def test_a_master_frozen_past_the_master_down_interval_steps_down_on_waking(
    fresh: Topology,
) -> None:
    """dir1 (100) is master; dir2 (150, no preemption) waits as backup. dir1 freezes,
    dir2 takes over; dir1 wakes still believing it is master and must yield."""
    d1, d2 = pair(
        fresh,
        first=lvsmon_config(priority=100, ipv6=False),
        second=lvsmon_config(priority=150, ipv6=False, preempt=False),
    )
    group = -d1.proc.pid  # the whole director: parent, VRRP child, listener
    os.kill(group, signal.SIGSTOP)
    try:
        d2.wait_state("master", 3)
        time.sleep(0.5)  # frozen well past dir2's takeover
    finally:
        holders = Holders(fresh)
        os.kill(group, signal.SIGCONT)
    woke = time.monotonic()
    d1.wait_state("backup", 3)
    wait_for("dir1 drops the VIP", lambda: not d1.holds_vip(), 3)
    both = holders.stop()
    print(
        f"\nSIGSTOP/SIGCONT: dir1 yielded {time.monotonic() - woke:.3f} s after waking; "
        f"both held the VIP {both:.3f} s"
    )
    assert d2.state() == "master" and d2.holds_vip()
    assert d2.group()["transitions"].get("backup", 0) == 1  # only its start: no flap


def test_the_masters_link_flapping_at_5_hz(fresh: Topology) -> None:
    d1, d2 = v4_pair(fresh)
    flaps, end = 0, time.monotonic() + 4.0
    while time.monotonic() < end:
        fresh.link("dir1", "eth0", up=False)
        time.sleep(0.1)
        fresh.link("dir1", "eth0", up=True)
        time.sleep(0.1)
        flaps += 1
    d1.wait_state("master", 5)
    d2.wait_state("backup", 5)
    wait_for("one holder", lambda: d1.holds_vip() and not d2.holds_vip(), 5)
    transitions = d1.group()["transitions"]
    print(f"\nlink flap 5 Hz x {flaps}: dir1 transitions {transitions}")
    assert d1.proc.alive() and d2.proc.alive()
    assert "Traceback" not in d1.proc.output() + d2.proc.output()
