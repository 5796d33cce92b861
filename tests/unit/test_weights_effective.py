"""Effective weight = configured x health x slow start x adaptive, rounded once."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from lvsmon.desired import desired_table
from lvsmon.health.slowstart import slow_start_fraction
from lvsmon.model import Config, DaemonSettings, RealServer, VirtualServer
from lvsmon.weights.effective import (
    WeightParts,
    effective_weight,
    from_verdicts,
    table_weights,
    weight_parts,
)


def vs(*weights: int, quiesce: bool = False) -> VirtualServer:
    reals = tuple(
        RealServer(ipaddress.ip_address(f"10.0.0.{i}"), 80, w) for i, w in enumerate(weights, 1)
    )
    return VirtualServer(
        "web", ipaddress.ip_address("192.0.2.1"), 80, quiesce=quiesce, real_servers=reals
    )


def test_rounding_rules() -> None:
    assert effective_weight(100, adaptive=0.555) == 56  # half up, once, on the product
    assert effective_weight(100, slow_start=0.5, adaptive=0.5) == 25
    assert effective_weight(1, adaptive=0.1) == 1  # positive: never rounded to 0
    assert effective_weight(3, slow_start=0.01, adaptive=0.1) == 1
    assert effective_weight(100, up=False) == 0
    assert effective_weight(0, adaptive=10) == 0  # the operator's 0 stays 0
    assert effective_weight(100, adaptive=0.0) == 0  # an agent's "drain"
    assert effective_weight(60000, adaptive=10) == 65535


@given(st.integers(0, 65535), st.booleans(), st.floats(0, 1), st.floats(0, 20))
def test_zero_only_when_a_factor_is_zero(w: int, up: bool, ramp: float, adaptive: float) -> None:
    e = effective_weight(w, up=up, slow_start=ramp, adaptive=adaptive)
    assert 0 <= e <= 65535
    assert (e == 0) == (w == 0 or not up or adaptive == 0)  # slow start never zeroes


def test_columns_for_status() -> None:
    p = WeightParts(100, up=True, slow_start=0.4, adaptive=0.5)
    assert p.effective == 20
    assert p.columns() == {
        "configured": "100",
        "health": "up",
        "slow_start": "40%",
        "adaptive": "0.50",
        "effective": "20",
    }
    assert WeightParts(7).columns()["adaptive"] == "-"
    assert WeightParts(7, up=False).to_json()["effective"] == 0


def test_slow_start_fraction() -> None:
    assert [slow_start_fraction(10, 10 + t, 20) for t in (0, 5, 20, 30)] == [0.0, 0.25, 1, 1]
    assert slow_start_fraction(0, 0, 0) == 1.0


def test_parts_and_overrides_feed_desired_table() -> None:
    web = vs(100, 100, 100)
    keys = [(web.key, rs.key) for rs in web.real_servers]
    parts = weight_parts(
        [web], down=[keys[2]], slow_start={keys[1]: 0.5}, adaptive={keys[0]: 0.25, keys[1]: 0.8}
    )
    # a server ramps under wlc: every weight of the virtual server is scaled x100 meanwhile
    assert [parts[k].effective for k in keys] == [2500, 4000, 0]
    table = desired_table(Config(DaemonSettings(), (web,)), table_weights(parts))
    assert [rs.weight for rs in table[web.key].real_servers] == [2500, 4000]  # down: removed


def test_a_ramp_is_scaled_only_for_ratio_schedulers_and_only_while_it_runs() -> None:
    import dataclasses

    small = vs(1, 1, 2)
    keys = [(small.key, rs.key) for rs in small.real_servers]
    ramping = {keys[2]: 0.1}
    assert [weight_parts([small], slow_start=ramping)[k].effective for k in keys] == [100, 100, 20]
    assert [weight_parts([small])[k].effective for k in keys] == [1, 1, 2]  # ramp over: x1
    for sched in ("sh", "dh", "mh", "ovf", "fo", "rr", "lc"):
        plain = dataclasses.replace(small, scheduler=sched)
        got = [weight_parts([plain], slow_start=ramping)[k].effective for k in keys]
        assert got == [1, 1, 1], sched  # unscaled: a ramp from weight 1
    big = vs(1000, 60000)  # the scale keeps weights within IPVS's 65535
    bkeys = [(big.key, rs.key) for rs in big.real_servers]
    assert [weight_parts([big], slow_start={bkeys[0]: 0.5})[k].effective for k in bkeys] == [
        500,
        60000,
    ]


def test_group_rule_adaptive_weights_never_empty_a_virtual_server() -> None:
    web = vs(10, 10, 10)
    keys = [(web.key, rs.key) for rs in web.real_servers]
    drained = {k: 0.0 for k in keys}
    parts = weight_parts([web], adaptive=drained)
    assert [parts[k].effective for k in keys] == [10, 10, 10]
    assert all(parts[k].adaptive == 1.0 for k in keys)
    # one server still in service by health and adaptive: the others may drain
    some = {keys[0]: 0.0, keys[1]: 0.0, keys[2]: 0.5}
    parts = weight_parts([web], adaptive=some)
    assert [parts[k].effective for k in keys] == [0, 0, 5]
    # the health checks took the only non-drained one out: adaptive stands down
    parts = weight_parts([web], adaptive=some, down=[keys[2]])
    assert [parts[k].effective for k in keys] == [10, 10, 0]


def test_no_adaptive_weights_shows_a_dash() -> None:
    web = vs(5)
    (part,) = weight_parts([web]).values()
    assert part.adaptive is None and part.effective == 5
    (part,) = weight_parts([web], adaptive_services=[web.key]).values()
    assert part.adaptive == 1.0


def test_from_verdicts_is_the_daemons_composition() -> None:
    web = vs(100, 100, 100, 100)
    keys = [(web.key, rs.key) for rs in web.real_servers]
    # the monitor: one down, one ramping at 40%, one whose exec check said weight 60
    parts = from_verdicts(
        [web],
        down=[keys[0]],
        ramps={keys[1]: 0.4},
        dynamic={keys[3]: 60},
        adaptive={keys[1]: 0.5, keys[2]: 0.25},
    )
    # wlc scales every weight by ramp_scale while one server ramps (100 / 100 = 1 here:
    # max weight 100 leaves a factor of 100 ... capped so 100 x 100 fits in 65535)
    scale = parts[keys[1]].scale
    assert [parts[k].effective for k in keys] == [0, 20 * scale, 25 * scale, 60 * scale]
    assert parts[keys[1]].columns() == {
        "configured": "100",
        "health": "up",
        "slow_start": "40%",
        "adaptive": "0.50",
        "effective": str(20 * scale),
    }
    programmed = table_weights(parts)
    assert programmed[keys[0]] is None and programmed[keys[3]] == 60 * scale
    # no verdicts and no adaptive weights: nothing differs from the config
    assert table_weights(from_verdicts([web])) == {}
