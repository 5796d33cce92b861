"""reconcile(desired, actual): identity-keyed diff, in-place edits, drain-not-cut."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.model import DestKey, Protocol, RealServer, ServiceKey, VirtualServer
from lvsmon.reconcile import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    apply_ops,
    reconcile,
)

A = ipaddress.ip_address


def rs(last: int, weight: int = 1, port: int = 80) -> RealServer:
    return RealServer(A(f"10.0.0.{last}"), port, weight)


def vs(
    name: str, port: int, *reals: RealServer, proto: str = "tcp", sched: str = "wlc"
) -> VirtualServer:
    return VirtualServer(
        name, A("192.0.2.1"), port, Protocol(proto), scheduler=sched, real_servers=tuple(reals)
    )


def table(*services: VirtualServer) -> dict[ServiceKey, VirtualServer]:
    return {s.key: s for s in services}


def test_weight_change_is_one_in_place_edit() -> None:
    before = table(vs("web", 80, rs(1), rs(2), rs(3)))
    after = table(vs("web", 80, rs(1), rs(2, weight=5), rs(3)))
    ops = reconcile(after, before)
    assert ops == [EditDest(ServiceKey("tcp", "192.0.2.1", 80), rs(2, weight=5))]


def test_scheduler_change_edits_the_service_and_keeps_real_servers() -> None:
    ops = reconcile(table(vs("web", 80, rs(1), sched="rr")), table(vs("web", 80, rs(1))))
    assert [type(op) for op in ops] == [EditService]


def test_new_and_removed_services() -> None:
    ops = reconcile(table(vs("b", 81, rs(1))), table(vs("a", 80, rs(1))))
    assert [type(op) for op in ops] == [AddService, AddDest, DeleteService]


def test_removed_real_server_with_connections_drains_at_weight_zero() -> None:
    key = ServiceKey("tcp", "192.0.2.1", 80)
    actual = table(vs("web", 80, rs(1), rs(2)))
    desired = table(vs("web", 80, rs(1)))
    busy = {(key, rs(2).key): 3}
    in_use = lambda s, d: busy.get((s, d), 0)  # noqa: E731
    ops = reconcile(desired, actual, in_use)
    assert ops == [EditDest(key, rs(2, weight=0))]
    # while it drains, nothing more happens; once idle it is deleted
    drained = apply_ops(actual, ops)
    assert reconcile(desired, drained, in_use) == []
    busy.clear()
    assert reconcile(desired, drained, in_use) == [DeleteDest(key, rs(2).key)]


def test_udp_real_servers_are_deleted_at_once() -> None:
    key = ServiceKey("udp", "192.0.2.1", 53)
    actual = table(vs("dns", 53, rs(1), rs(2), proto="udp"))
    ops = reconcile(table(vs("dns", 53, rs(1), proto="udp")), actual, lambda s, d: 9)
    assert ops == [DeleteDest(key, DestKey("10.0.0.2", 80))]


def test_removed_busy_service_drains_then_goes() -> None:
    key = ServiceKey("tcp", "192.0.2.1", 80)
    actual = table(vs("web", 80, rs(1), rs(2)))
    in_use = lambda s, d: 1 if d == rs(1).key else 0  # noqa: E731
    ops = reconcile({}, actual, in_use)
    assert ops == [EditDest(key, rs(1, weight=0)), DeleteDest(key, rs(2).key)]
    assert reconcile({}, apply_ops(actual, ops), lambda s, d: 0) == [DeleteService(key)]


def test_readding_a_draining_server_restores_its_weight() -> None:
    key = ServiceKey("tcp", "192.0.2.1", 80)
    draining = table(vs("web", 80, rs(1), rs(2, weight=0)))
    ops = reconcile(table(vs("web", 80, rs(1), rs(2, weight=4))), draining, lambda s, d: 5)
    assert ops == [EditDest(key, rs(2, weight=4))]


# --- properties -----------------------------------------------------------------

reals = st.lists(
    st.builds(rs, st.integers(1, 6), st.integers(0, 5), st.sampled_from([80, 8080])),
    max_size=5,
    unique_by=lambda r: r.key,
)
services = st.builds(
    vs,
    st.sampled_from(["a", "b"]),
    st.sampled_from([80, 443, 8080]),
    proto=st.sampled_from(["tcp", "udp"]),
    sched=st.sampled_from(["rr", "wlc"]),
).flatmap(lambda s: reals.map(lambda r: dataclasses.replace(s, real_servers=tuple(r))))
tables = st.lists(services, max_size=3, unique_by=lambda s: s.key).map(lambda ss: table(*ss))


Normal = dict[ServiceKey | tuple[str, ServiceKey], frozenset[RealServer] | frozenset[VirtualServer]]


def _normal(t: dict[ServiceKey, VirtualServer]) -> Normal:
    """A table up to real-server order (order is a data-plane matter)."""
    servers: Normal = {k: frozenset(v.real_servers) for k, v in t.items()}
    attributes: Normal = {("attrs", k): frozenset([v.attributes()]) for k, v in t.items()}
    return servers | attributes


@settings(max_examples=300)
@given(desired=tables, actual=tables)
def test_applying_the_diff_yields_desired_when_nothing_is_in_use(desired, actual) -> None:  # type: ignore[no-untyped-def]
    ops = reconcile(desired, actual)
    assert _normal(apply_ops(actual, ops)) == _normal(desired)


@settings(max_examples=300)
@given(desired=tables, actual=tables, busy=st.sets(st.integers(1, 6)))
def test_reconcile_is_idempotent_and_never_cuts_busy_tcp_servers(desired, actual, busy) -> None:  # type: ignore[no-untyped-def]
    def in_use(s: ServiceKey, d: DestKey) -> int:
        return 1 if int(d.address.rsplit(".", 1)[1]) in busy else 0

    ops = reconcile(desired, actual, in_use)
    after = apply_ops(actual, ops)
    assert reconcile(desired, after, in_use) == []  # applying it twice is a no-op
    for key, svc in actual.items():
        for r in svc.real_servers:
            if key.protocol == "tcp" and in_use(key, r.key):
                kept = after.get(key)
                assert kept is not None and kept.real_server(r.key) is not None
    for key, want in desired.items():  # everything desired is there as desired
        for r in want.real_servers:
            assert after[key].real_server(r.key) == r
