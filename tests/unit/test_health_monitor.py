"""HealthMonitor without sockets: dedupe, reload safety, verdicts into weights, in-flight cap."""

from __future__ import annotations

import asyncio
import errno
import itertools
import random
import time
from dataclasses import replace

import pytest

from lvsmon import config
from lvsmon.desired import desired_table
from lvsmon.health.monitor import HealthMonitor, Probe, Target, TransitionEvent
from lvsmon.health.probes import SocketChecker
from lvsmon.health.state import CheckState
from lvsmon.health.targets import targets_of
from lvsmon.model import Config, DestKey, ServiceKey
from lvsmon.model.health import OK, CheckType, ExecSpec, HealthCheck, Reason, Result
from lvsmon.weights.effective import from_verdicts, table_weights

WEB = ServiceKey("tcp", "192.0.2.10", 80)
WEB2 = ServiceKey("tcp", "192.0.2.11", 80)
RS1 = DestKey("10.0.0.1", 80)
RS2 = DestKey("10.0.0.2", 80)
TCP = HealthCheck(CheckType.TCP, interval=1.0, timeout=0.5)
HTTP = HealthCheck(CheckType.HTTP, interval=1.0, timeout=0.5)


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def probe_of(monitor: HealthMonitor, dest: DestKey) -> Probe:
    (probe,) = [p for p in monitor.probes() if DestKey(p.key.address, p.key.port) == dest]
    return probe


def test_one_probe_serves_every_virtual_server_sharing_real_server_and_check() -> None:
    m = HealthMonitor()
    m.configure(
        [
            Target(WEB, RS1, TCP, "web"),
            Target(WEB2, RS1, TCP, "web2"),
            Target(WEB, RS2, TCP, "web"),
            Target(WEB2, RS2, HTTP, "web2"),
        ]
    )
    assert len(m.probes()) == 3
    shared = [p for p in m.probes() if len(p.targets) == 2]
    assert len(shared) == 1 and set(shared[0].targets) == {(WEB, RS1), (WEB2, RS1)}


def test_connect_overrides_join_probes_that_go_to_the_same_place() -> None:
    check = replace(TCP, connect_address="10.0.0.9", connect_port=9000)
    m = HealthMonitor()
    m.configure([Target(WEB, RS1, check), Target(WEB, RS2, check)])
    (probe,) = m.probes()
    assert (probe.key.address, probe.key.port) == ("10.0.0.9", 9000)


def test_exec_probes_are_per_virtual_server() -> None:
    check = HealthCheck(CheckType.EXEC, spec=ExecSpec("/bin/true", ("{virtual_server}",)))
    m = HealthMonitor()
    m.configure([Target(WEB, RS1, check, "web"), Target(WEB2, RS1, check, "web2")])
    assert len(m.probes()) == 2


def test_reload_keeps_unchanged_probes_with_their_state_and_counters() -> None:
    m = HealthMonitor()
    m.configure([Target(WEB, RS1, TCP, "web"), Target(WEB, RS2, TCP, "web")])
    p1 = probe_of(m, RS1)
    p1.state = CheckState(up=False, settled=True, since=5.0, reason=Reason.REFUSED)
    p1.failures[Reason.REFUSED] = 7
    m.configure([Target(WEB, RS1, TCP, "web", weight=4)])
    assert m.probes() == [p1] and p1.failures[Reason.REFUSED] == 7 and not p1.state.up
    assert p1.targets[(WEB, RS1)].weight == 4  # attributes of the target are updated in place


def test_a_changed_check_carries_the_verdict_over() -> None:
    m = HealthMonitor()
    m.configure([Target(WEB, RS1, TCP, "web")])
    probe_of(m, RS1).state = CheckState(up=False, settled=True, since=5.0)
    m.configure([Target(WEB, RS1, replace(TCP, interval=2.0), "web")])
    new = probe_of(m, RS1)
    assert new.key.check.interval == 2.0
    assert not new.state.up and new.state.settled and new.state.streak == 0


def test_joining_a_probe_with_another_verdict_is_reported_as_a_transition() -> None:
    events: list[TransitionEvent] = []
    m = HealthMonitor(on_transition=events.append, clock=lambda: 9.0)
    m.configure([Target(WEB, RS1, TCP, "web")])
    m.configure([Target(WEB, RS1, TCP, "web"), Target(WEB2, RS1, HTTP, "web2")])
    (http,) = [p for p in m.probes() if p.key.check is HTTP]  # tcp and http, same endpoint
    http.state = CheckState(up=False, settled=True)
    m.configure([Target(WEB, RS1, TCP, "web"), Target(WEB2, RS1, TCP, "web2")])
    assert [(e.target.virtual_server, e.up, e.at) for e in events] == [("web2", True, 9.0)]
    assert "shared probe tcp 10.0.0.1:80" in events[0].why


VERDICTS = """
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
scheduler = "rr"
slow_start = "10s"
[virtual_server.health_check]
type = "tcp"
interval = "1s"
timeout = "500ms"
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
weight = 10
[[virtual_server.real_server]]
address = "10.0.0.2"
port = 80
weight = 5
[virtual_server.real_server.health_check]
type = "http"

[[virtual_server]]
name = "web2"
address = "192.0.2.11"
port = 80
scheduler = "rr"
[virtual_server.health_check]
type = "tcp"
interval = "1s"
timeout = "500ms"
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
weight = 10
"""


def programmed(
    m: HealthMonitor, cfg: Config, now: float
) -> dict[tuple[ServiceKey, DestKey], int | None]:
    """What the daemon programs from these verdicts: its one path (from_verdicts, then
    overrides), so a rounding bug there fails these tests."""
    ramps, dynamic = m.weights(now=now)
    return table_weights(
        from_verdicts(cfg.virtual_servers, down=m.down(), ramps=ramps, dynamic=dynamic)
    )


def test_verdicts_down_slow_start_and_dynamic_weight() -> None:
    cfg = config.loads(VERDICTS)
    m = HealthMonitor()
    m.configure(targets_of(cfg.virtual_servers))
    assert programmed(m, cfg, now=0.0) == {}
    probe_of(m, RS1).state = CheckState(up=True, settled=True, since=100.0)
    assert programmed(m, cfg, now=102.0) == {(WEB, RS1): 2}  # web2 has no slow start
    assert programmed(m, cfg, now=110.0) == {}
    assert m.ramping(now=105.0) and not m.ramping(now=111.0)
    probe_of(m, RS2).state = CheckState(up=True, settled=True, weight=0)
    probe_of(m, RS1).state = CheckState(up=False, settled=True)
    assert programmed(m, cfg, now=0.0) == {(WEB, RS1): None, (WEB2, RS1): None, (WEB, RS2): 0}
    assert m.down() == {(WEB, RS1), (WEB2, RS1)}


def test_verdicts_feed_desired_table() -> None:
    cfg = config.loads(
        '[[virtual_server]]\nname = "web"\naddress = "192.0.2.10"\nport = 80\nslow_start = "10s"\n'
        '[virtual_server.health_check]\ntype = "tcp"\n'
        '[[virtual_server.real_server]]\naddress = "10.0.0.1"\nport = 80\nweight = 10\n'
        '[[virtual_server.real_server]]\naddress = "10.0.0.2"\nport = 80\n'
    )
    m = HealthMonitor()
    m.configure(targets_of(cfg.virtual_servers))
    probe_of(m, RS1).state = CheckState(up=True, settled=True, since=0.0)
    probe_of(m, RS2).state = CheckState(up=False, settled=True)
    reals = desired_table(cfg, programmed(m, cfg, now=5.0))[WEB].real_servers
    # wlc uses weights as ratios: while one server ramps, all are scaled by 100 so the
    # ramp has 100 steps (weights.effective.ramp_scale); half way: 10 x 100 x 0.5
    assert [(r.key, r.weight) for r in reals] == [(RS1, 500)]


def test_jittered_first_runs_and_the_in_flight_cap() -> None:
    async def scenario() -> tuple[list[float], int]:
        starts: list[float] = []
        running = peak = 0

        async def slow() -> Result:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            return OK

        m = HealthMonitor(
            max_in_flight=4,
            rng=random.Random(1),
            observer=lambda p, due, started, r, d: starts.append(due),
        )
        check = HealthCheck(CheckType.TCP, interval=0.4, timeout=0.1)
        m.configure([Target(WEB, DestKey("10.0.0.1", port), check) for port in range(1, 41)])
        for p in m.probes():
            p.checker = slow  # type: ignore[assignment]
        t0 = asyncio.get_running_loop().time()
        await m.start()
        await asyncio.sleep(0.39)
        await m.stop()
        return [s - t0 for s in starts], peak

    starts, peak = asyncio.run(scenario())
    assert peak == 4
    # at least a few rounds of the cap ran (fewer on a loaded box), all in the first interval
    assert len(starts) >= 8 and max(starts) < 0.4
    assert sum(s < 0.2 for s in starts) not in (0, len(starts))  # spread, not one burst


def test_a_check_that_cannot_be_set_up_fails_its_probes_not_the_reload() -> None:
    from lvsmon.model.health import HttpSpec, TlsSpec

    broken = HealthCheck(CheckType.HTTPS, spec=HttpSpec(tls=TlsSpec(ca_file="/nonexistent.pem")))
    m = HealthMonitor()
    m.configure([Target(WEB, RS1, broken, "web")])
    (probe,) = m.probes()
    checker = probe.checker
    assert not isinstance(checker, SocketChecker)  # a coroutine checker that only fails
    result = asyncio.run(checker())
    assert not result.ok and result.reason is Reason.ERROR and "No such file" in result.detail


def test_a_probe_keeps_its_rhythm_and_a_late_run_restarts_it() -> None:
    """Each run is due one interval after the last was due (no drift: 1 s means 1/s),
    unless the last started more than `slack` late: then one interval after its start."""
    runs: list[tuple[float, float]] = []

    async def scenario() -> None:
        async def sometimes_blocks() -> Result:
            if len(runs) == 3:
                time.sleep(0.05)  # the whole loop stalls: the next run starts late
            return OK

        m = HealthMonitor(
            rng=random.Random(2), observer=lambda p, due, started, r, d: runs.append((due, started))
        )
        m.configure([Target(WEB, RS1, HealthCheck(CheckType.TCP, interval=0.04, timeout=0.02))])
        (probe,) = m.probes()
        probe.checker = sometimes_blocks  # type: ignore[assignment]
        await m.start()
        await asyncio.sleep(0.5)
        await m.stop()

    asyncio.run(scenario())
    assert len(runs) >= 8
    late = 0
    for (due, started), (next_due, _) in itertools.pairwise(runs):
        if started - due < 0.04 / 10:  # the slack: a tenth of the interval
            assert next_due == pytest.approx(due + 0.04, abs=1e-9)
        else:
            late += 1
            assert next_due == pytest.approx(started + 0.04, abs=1e-9)
    assert late >= 1


def test_timeouts_and_a_dropped_run_free_their_slot() -> None:
    """One slot: a hanging coroutine check times out with its phase; a probe removed
    mid-run hands its slot to the next."""
    results: list[tuple[int, Result]] = []

    class Hang:
        phase = "wait for the answer"

        async def __call__(self) -> Result:
            await asyncio.sleep(3600)
            return OK

    async def scenario() -> None:
        m = HealthMonitor(
            max_in_flight=1,
            rng=NoJitter(),
            observer=lambda p, due, started, r, d: results.append((p.key.port, r)),
        )
        check = HealthCheck(CheckType.TCP, interval=10.0, timeout=0.2)
        targets = [Target(WEB, DestKey("10.0.0.1", port), check) for port in (1, 2, 3)]
        m.configure(targets)
        for p in m.probes():
            p.checker = Hang()
        await m.start()
        await asyncio.sleep(0.3)  # port 1 timed out at 0.2; port 2 runs
        assert [port for port, _ in results] == [1] and m.in_flight == 1
        m.configure([targets[2]])  # drop 1 and the running 2: 3 gets the slot
        await asyncio.sleep(0.01)
        (probe,) = m.probes()
        assert probe.busy and m.in_flight == 1
        await asyncio.sleep(0.3)
        await m.stop()
        assert m.in_flight == 0

    asyncio.run(scenario())
    assert [port for port, _ in results] == [1, 3]
    assert all(r.reason is Reason.TIMEOUT for _, r in results)
    assert results[0][1].detail == "no answer within 0.2s (wait for the answer)"


def test_sockets_that_cannot_open_fail_their_probes_without_recursion() -> None:
    """Out of file descriptors: every run fails at once with `error`; the waiting runs
    are started in a loop, not by ever deeper calls."""

    class NoFds(SocketChecker):
        def start(self) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

    failed: list[Result] = []

    async def scenario() -> None:
        m = HealthMonitor(
            max_in_flight=1, rng=NoJitter(), observer=lambda p, due, started, r, d: failed.append(r)
        )
        check = HealthCheck(CheckType.TCP, interval=10.0, timeout=1.0)
        m.configure([Target(WEB, DestKey("10.0.0.1", port), check) for port in range(1, 3001)])
        for p in m.probes():
            p.checker = NoFds(p.key.address, p.key.port)
        await m.start()
        await asyncio.sleep(0.05)
        await m.stop()

    asyncio.run(scenario())
    assert len(failed) == 3000 and {r.reason for r in failed} == {Reason.ERROR}
    assert "Too many open files" in failed[0].detail
