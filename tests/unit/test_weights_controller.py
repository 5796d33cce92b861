"""WeightController with a scripted source and a test clock: state, reload, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from lvsmon.model import DestKey, ServiceKey
from lvsmon.model.adaptive import PROPORTIONAL, AdaptiveSpec, Params
from lvsmon.weights.control import Sample
from lvsmon.weights.controller import Group, WeightController
from lvsmon.weights.metrics import WeightCollector
from lvsmon.weights.sources import Clock, Member, Poll

SVC = ServiceKey("tcp", "192.0.2.1", 80)
A, B = DestKey("10.0.0.1", 80), DestKey("10.0.0.2", 80)
PARAMS = Params(
    mode=PROPORTIONAL,
    smoothing=1.0,
    deadband=0.0,
    max_change=1.0,
    min_weight=0.1,
    max_weight=1.0,
    load_low=0.0,
    load_high=1.0,
    stale_after=5.0,
    expire_after=20.0,
)


class Script:
    """A source that answers what the test set, and counts polls."""

    kind = "scrape"

    def __init__(self) -> None:
        self.loads: dict[DestKey, float] = {}
        self.error = ""
        self.polls = 0

    async def poll(self, members: Sequence[Member], clock: Clock) -> Poll:
        self.polls += 1
        if self.error:
            return Poll(error=self.error)
        out = Poll()
        for m in members:
            if m.dest in self.loads:
                out.samples[m.dest] = Sample(clock(), load=self.loads[m.dest])
            else:
                out.errors[m.dest] = "connection refused"
        return out


class Clock_:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(
    spec: AdaptiveSpec | None = None,
) -> tuple[WeightController, Script, Clock_, Group]:
    script, clock = Script(), Clock_()
    ctl = WeightController(
        clock=clock, wall=lambda: 1.7e9 + clock.t, source_factory=lambda spec, name, sem: script
    )
    group = Group(
        SVC, "web", spec or AdaptiveSpec("scrape", params=PARAMS), (Member(A, 100), Member(B, 100))
    )
    ctl.configure([group])
    return ctl, script, clock, group


def test_factors_follow_the_source_and_hold_on_failure() -> None:
    ctl, script, clock, _ = setup()
    assert ctl.factors() == {(SVC, A): 1.0, (SVC, B): 1.0}
    script.loads = {A: 0.25, B: 0.75}
    asyncio.run(ctl.poll(SVC))
    assert ctl.factors() == {(SVC, A): 0.775, (SVC, B): 0.325}
    assert ctl.changed.is_set()
    assert ctl.loads() == {(SVC, A): 0.25, (SVC, B): 0.75}
    (src,) = ctl.sources()
    assert (src.up, src.last_success, src.source) == (True, 1.7e9 + 1000, "scrape")
    # the source fails: factors held until expire_after, then the configured weight
    script.error = "no answer within 2s"
    clock.t += 10
    asyncio.run(ctl.poll(SVC))
    assert ctl.factors() == {(SVC, A): 0.775, (SVC, B): 0.325}
    assert ctl.loads() == {}  # nothing fresh: the load series disappear
    (src,) = ctl.sources()
    assert (src.up, src.error, src.last_success) == (False, "no answer within 2s", 1.7e9 + 1000)
    assert {s.freshness for s in ctl.servers()} == {"holding"}
    clock.t += 10
    assert ctl.factors() == {(SVC, A): 1.0, (SVC, B): 1.0}
    assert ctl.updates() == {(SVC, A): 1, (SVC, B): 1}  # counted when a poll applies it
    asyncio.run(ctl.poll(SVC))
    assert ctl.updates() == {(SVC, A): 2, (SVC, B): 2}


def test_one_real_server_without_data_is_held_alone() -> None:
    ctl, script, clock, _ = setup()
    script.loads = {A: 1.0, B: 1.0}
    asyncio.run(ctl.poll(SVC))
    script.loads = {A: 0.0}
    clock.t += 1
    asyncio.run(ctl.poll(SVC))
    assert ctl.factors() == {(SVC, A): 1.0, (SVC, B): 0.1}
    (src,) = ctl.sources()
    assert src.up  # the source works; B's exporter does not
    views = {v.dest: v for v in ctl.servers()}
    assert views[B].error == "connection refused" and views[B].freshness == "fresh"


def test_reload_keeps_state_and_restarts_only_what_changed() -> None:
    ctl, script, _, group = setup()
    script.loads = {A: 1.0, B: 0.0}
    asyncio.run(ctl.poll(SVC))
    before = ctl.factors()
    ctl.configure([group])
    assert ctl.factors() == before
    # a new real server starts at 1.0, a removed one is gone, the others keep their factor
    c = DestKey("10.0.0.3", 80)
    ctl.configure([dataclasses.replace(group, members=(Member(A, 100), Member(c, 100)))])
    assert ctl.factors() == {(SVC, A): 0.1, (SVC, c): 1.0}
    # a changed spec in the same mode keeps the factors too
    spec = dataclasses.replace(group.spec, interval=1.0)
    ctl.configure([dataclasses.replace(group, spec=spec, members=(Member(A, 50),))])
    assert ctl.factors() == {(SVC, A): 0.1}
    ctl.configure([])
    assert ctl.factors() == {} and ctl.sources() == []


def test_polling_task_runs_every_interval() -> None:
    async def main() -> int:
        script = Script()
        ctl = WeightController(source_factory=lambda spec, name, sem: script)
        spec = AdaptiveSpec("scrape", interval=0.05, timeout=0.01, params=PARAMS)
        ctl.configure([Group(SVC, "web", spec, (Member(A, 100),))])
        await ctl.start()
        await asyncio.sleep(0.3)
        await ctl.stop()
        return script.polls

    assert 4 <= asyncio.run(main()) <= 7


def test_collector() -> None:
    ctl, script, clock, _ = setup()
    registry = CollectorRegistry()
    registry.register(WeightCollector(ctl, lambda: {SVC: "web"}))
    assert (
        registry.get_sample_value(
            "lvsmon_weight_source_up", {"virtual_server": "web", "source": "scrape"}
        )
        is None
    )
    script.loads = {A: 0.5, B: 3.0}
    asyncio.run(ctl.poll(SVC))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"virtual_server": "web", **labels})

    assert value("lvsmon_real_server_load", real_server="10.0.0.1:80") == 0.5
    assert value("lvsmon_real_server_load", real_server="10.0.0.2:80") == 1.0  # clamped
    assert value("lvsmon_weight_updates_total", real_server="10.0.0.2:80") == 1
    assert value("lvsmon_weight_source_up", source="scrape") == 1
    assert (
        value("lvsmon_weight_source_last_success_timestamp_seconds", source="scrape")
        == 1.7e9 + 1000
    )
    script.error = "down"
    clock.t += 6
    asyncio.run(ctl.poll(SVC))
    assert value("lvsmon_weight_source_up", source="scrape") == 0
    assert value("lvsmon_real_server_load", real_server="10.0.0.1:80") is None
