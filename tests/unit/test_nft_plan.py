"""The nft plane's pure part: tables from lvsmon's schedulers, marks, and the commands
a change needs (the kernel round trip of those commands is tests/netns/test_nft_kernel.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.dataplane.nft_plan import (
    BUCKET,
    LAYOUT,
    TAG,
    VS_MASK,
    Plan,
    apply_grouped,
    dump_state,
    load_state,
    withdrawn,
)
from lvsmon.dataplane.nft_sched import Member, decide, wrr_indices
from lvsmon.model import NftSettings, Protocol, RealServer, ServiceKey, VirtualServer
from lvsmon.reconcile import AddService, EditDest, apply_ops, op_key, reconcile
from lvsmon.schedulers import Dest, Flow
from lvsmon.schedulers.hashing import MaglevHashing, SourceHashing
from lvsmon.schedulers.rr import WeightedRoundRobin

A = ipaddress.ip_address
SETTINGS = NftSettings()


def rs(last: int, weight: int = 1, port: int = 80) -> RealServer:
    return RealServer(A(f"10.0.0.{last}"), port, weight)


def vs(name: str, port: int, *reals: RealServer, sched: str = "wrr", **kw: Any) -> VirtualServer:
    return VirtualServer(
        name, A("192.0.2.1"), port, Protocol.TCP, scheduler=sched, real_servers=reals, **kw
    )


def program(*services: VirtualServer) -> tuple[Plan, list[str]]:
    desired = {s.key: s for s in services}
    return Plan(SETTINGS).apply(reconcile(desired, {}))


def commands(texts: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads("[" + ",".join(texts) + "]")
    return out


def test_every_mark_names_its_virtual_and_real_server() -> None:
    plan, _ = program(vs("a", 80, rs(1), rs(2)), vs("b", 81, rs(1)))
    marks = [m for e in plan.entries.values() for m in e.marks.values()]
    assert len(set(marks)) == 3
    for entry in plan.entries.values():
        assert entry.mark & TAG and entry.mark & ~VS_MASK == 0
        assert all(m & VS_MASK == entry.mark for m in entry.marks.values())


def test_a_weight_change_rewrites_one_chain_and_no_table() -> None:
    plan, _ = program(vs("a", 80, rs(1), rs(2)), vs("b", 81, rs(1)))
    key = ServiceKey("tcp", "192.0.2.1", 80)
    after, texts = plan.apply([EditDest(key, rs(2, weight=3))])
    cmds = commands(texts)
    verbs = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in cmds]
    assert ("add", "table") not in verbs and ("delete", "table") not in verbs
    chains = {c["add"]["rule"]["chain"] for c in cmds if "rule" in c.get("add", {})}
    assert chains == {f"vs_{plan.entries[key].slot}"}  # wrr's period changed: its rule only
    # marks do not move: established connections stay attributed
    assert after.entries[key].marks == plan.entries[key].marks


def test_a_hash_schedulers_weight_change_writes_only_table_entries() -> None:
    plan, _ = program(vs("m", 80, *(rs(i) for i in range(1, 6)), sched="mh"))
    key = ServiceKey("tcp", "192.0.2.1", 80)
    _, texts = plan.apply([EditDest(key, rs(3, weight=2))])
    cmds = commands(texts)
    assert not any("rule" in c.get("add", {}) for c in cmds)
    touched = {next(iter(c.values()))["element"]["name"] for c in cmds}
    assert touched == {f"sched_{plan.entries[key].slot}", "owner"}


def test_removed_and_re_added_real_servers_get_fresh_marks() -> None:
    plan, _ = program(vs("a", 80, rs(1), rs(2)))
    key = ServiceKey("tcp", "192.0.2.1", 80)
    old = plan.entries[key].marks
    plan, _ = plan.apply(reconcile({key: vs("a", 80, rs(1))}, plan.table()))
    plan, _ = plan.apply(reconcile({key: vs("a", 80, rs(1), rs(2))}, plan.table()))
    new = plan.entries[key].marks
    assert new[rs(1).key] == old[rs(1).key] and new[rs(2).key] != old[rs(2).key]


def test_a_full_program_writes_no_counter_elements_a_removal_clears_them() -> None:
    plan, _ = program(vs("a", 80, rs(1), rs(2)))
    full, texts = plan.full()
    names = {c["add"]["element"]["name"] for c in commands(texts) if "element" in c.get("add", {})}
    assert names.isdisjoint({"rs_in", "rs_out", "rs_conn"})  # the packet path adds them
    key = ServiceKey("tcp", "192.0.2.1", 80)
    mark = full.entries[key].marks[rs(2).key]
    _, texts = full.apply(reconcile({key: vs("a", 80, rs(1))}, full.table()))
    ops = [
        (verb, body["element"]["name"], body["element"]["elem"])
        for c in commands(texts)
        for verb, body in c.items()
        if "element" in body and body["element"]["name"].startswith("rs_")
    ]
    for name in ("rs_in", "rs_out", "rs_conn"):  # add + delete: whether it exists or not
        assert [op for op in ops if op[1] == name] == [
            ("add", name, [mark]),
            ("delete", name, [mark]),
        ]


def test_a_plan_that_outgrows_its_counter_sets_asks_for_a_full_program() -> None:
    plan, _ = program(vs("a", 80, rs(1), rs(2), rs(3)))
    small = dataclasses.replace(plan, counter_size=2)
    assert small.outgrown() and not plan.outgrown()
    full, _ = small.full()
    assert full.counter_size >= 65536 and not full.outgrown()


def test_full_program_replaces_the_table_in_one_transaction() -> None:
    plan, _ = program(vs("a", 80, rs(1)))
    full, texts = plan.full(replace="old_name")
    cmds = commands(texts)
    assert cmds[:4] == [
        {"add": {"table": {"family": "inet", "name": "old_name"}}},
        {"delete": {"table": {"family": "inet", "name": "old_name"}}},
        {"add": {"table": {"family": "inet", "name": "lvsmon"}}},
        {"delete": {"table": {"family": "inet", "name": "lvsmon"}}},
    ]
    assert full.generation == plan.generation + 1
    owner = [c for c in cmds if c.get("add", {}).get("element", {}).get("name") == "owner"]
    assert owner[-1]["add"]["element"]["elem"] == [[1, LAYOUT], [2, full.generation]]


def test_the_state_file_round_trips() -> None:
    plan, _ = program(
        vs("a", 80, rs(1, weight=0), rs(2), persistence_timeout=30.0, persistence_netmask=24),
        vs("b", 81, rs(1), sched="mh", scheduler_flags=frozenset({"mh-port"})),
    )
    again = load_state(json.loads(json.dumps(dump_state(plan))), SETTINGS)
    assert again == plan
    assert [e.members for e in again.entries.values()] == [e.members for e in plan.entries.values()]


def test_quiescing_a_persistent_real_server_withdraws_its_entries() -> None:
    service = vs("a", 80, rs(1), rs(2), persistence_timeout=30.0)
    plan, _ = program(service)
    after, _ = plan.apply([EditDest(service.key, rs(1, weight=0))])
    mark = plan.entries[service.key].marks[rs(1).key]
    assert list(withdrawn(plan, after, [service.key]).values()) == [{mark}]


# --- the tables ---------------------------------------------------------------------------


def members(*weights: int, last: tuple[int, ...] = ()) -> list[Member]:
    out = []
    for i, w in enumerate(weights):
        server = rs(i + 1, weight=w)
        out.append(Member(TAG | i + 1, server, last[i] if last else w, server.key))
    return out


def test_wrr_is_ipvs_interleaved_sequence_over_one_period() -> None:
    assert wrr_indices((4, 3, 2)) == (0, 0, 1, 0, 1, 2, 0, 1, 2)
    dests = [Dest(A("10.0.0.1"), i, w) for i, w in enumerate((5, 0, 3, 2))]
    wrr = WeightedRoundRobin()
    wrr.update(dests)
    flow = Flow(A("10.0.0.9"), 1, A("10.0.0.9"), 1)
    ipvs = [wrr.schedule(dests, flow, 0.0) for _ in range(10)]
    assert list(wrr_indices((5, 0, 3, 2))) == [d.port for d in ipvs if d is not None]


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=50))
@settings(max_examples=60, deadline=None)
def test_wrr_periods_are_bounded_and_give_every_server_in_service_its_share(
    weights: list[int],
) -> None:
    seq = wrr_indices(tuple(weights))
    live = [i for i, w in enumerate(weights) if w]
    assert len(seq) <= 4096 * 2
    assert set(seq) == set(live)
    if live and sum(weights) <= 4096:  # exact below the cap
        counts = Counter(seq)  # proportional to the weights
        assert all(counts[i] * weights[live[0]] == weights[i] * counts[live[0]] for i in live)


def test_rr_skips_quiesced_servers_and_fo_takes_the_highest_weight() -> None:
    rr = decide("rr", frozenset(), members(1, 0, 1), 0)
    assert [m for _, m in rr.entries] == [TAG | 1, TAG | 3]
    fo = decide("fo", frozenset(), members(1, 3, 2), 0)
    assert fo.key == "fixed" and fo.entries == ((0, TAG | 2),)


def test_sh_and_mh_tables_are_lvsmons_schedulers_own() -> None:
    ms = members(1, 2, 0)
    dests = [Dest(m.server.address, m.server.port, m.server.weight) for m in ms]
    sh = SourceHashing()
    sh.update(dests)
    got = dict(decide("sh", frozenset(), ms, 0).entries)
    for bucket, dest in enumerate(sh.table):
        want = TAG | (dests.index(dest) + 1) if dest is not None and dest.weight else None
        assert got.get(bucket) == want
    mh = MaglevHashing()
    mh.update(dests)
    mh_got = dict(decide("mh", frozenset(), ms, 0).entries)
    assert len(mh_got) == sum(1 for d in mh.table if d is not None and d.weight)
    for slot, mark in mh_got.items():
        assert mh.table[slot] is dests[(mark & 0xFFFF) - 1]


def test_mh_keeps_a_quiesced_servers_slots_refused() -> None:
    """last_weight: at weight 0 the table is the one built with the old weight, minus it."""
    before = dict(decide("mh", frozenset(), members(1, 1, 1), 0).entries)
    after = dict(decide("mh", frozenset(), members(1, 0, 1, last=(1, 1, 1)), 0).entries)
    assert after == {s: m for s, m in before.items() if m != TAG | 2}


def test_scheduling_tables_have_their_own_mark_range() -> None:
    plan, _ = program(vs("m", 80, rs(1), rs(2), sched="mh"))
    rendered = next(iter(plan.rendered.values()))
    assert all(b & BUCKET and not b & TAG for b in rendered.sched)


# --- apply_grouped is apply_ops in one pass -------------------------------------------------

servers = st.builds(rs, st.integers(1, 5), st.integers(0, 3))
services = st.builds(
    lambda port, reals: vs(f"s{port}", port, *{r.key: r for r in reals}.values()),
    st.integers(80, 83),
    st.lists(servers, max_size=5),
)
tables = st.lists(services, max_size=4).map(lambda ss: {s.key: s for s in ss})


@given(tables, tables, st.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_apply_grouped_is_apply_ops(
    before: dict[ServiceKey, VirtualServer], after: dict[ServiceKey, VirtualServer], busy: int
) -> None:
    ops = reconcile(after, before, lambda s, d: busy)
    touched = list(dict.fromkeys(op_key(op) for op in ops))
    grouped = apply_grouped(before, ops)
    assert list(grouped) == touched
    expected = apply_ops(before, ops)
    for key in touched:
        got = grouped[key]
        if key in expected:
            assert got is not None
            assert got[0] == expected[key]
            assert got[1] == [r.key for r in expected[key].real_servers]
        else:
            assert got is None


def test_an_edit_of_the_service_keeps_its_real_servers() -> None:
    service = vs("a", 80, rs(1), rs(2))
    grouped = apply_grouped(
        {service.key: service},
        [AddService(dataclasses.replace(service.attributes(), scheduler="rr"))],
    )
    got = grouped[service.key]
    assert got is not None and got[0].real_servers == service.real_servers
