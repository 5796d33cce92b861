"""Every scheduler the nft data plane accepts, decided by the kernel, against lvsmon's
own schedulers: `lvsmon run` with dataplane = "nft" on the director, three real
servers, a client with many source addresses.

- rr, wrr: consecutive connections follow lvsmon's RoundRobin / WeightedRoundRobin
  sequence (IPVS's interleaved wrr), up to where the counter started;
- sh, dh, mh (with and without -port, IPv4, IPv6, UDP, a fwmark service): each flow
  lands where lvsmon's SourceHashing / DestinationHashing / MaglevHashing table
  says for the bucket the kernel's jhash picks (nft_flow computes it: so this
  also proves that model bit for bit);
- weight 0 refuses the buckets IPVS refuses; sh-fallback sends them on as IPVS does;
- fo takes everything to the highest weight.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from lvsmon.dataplane.nft_flow import DH_BUCKETS, MH_SLOTS, SH_BUCKETS, FlowHash
from lvsmon.model import NftSettings
from lvsmon.schedulers import Dest, Flow
from lvsmon.schedulers.hashing import DestinationHashing, MaglevHashing, SourceHashing
from lvsmon.schedulers.rr import RoundRobin, WeightedRoundRobin
from tests.netns.nft_topology import (
    DH_NET,
    REALS,
    REALS6,
    VIP,
    VIP6,
    NftTopology,
    sources,
    sources6,
)

SEED = NftSettings().hash_seed
NAMES = list(REALS)  # canonical order = address order: rs1, rs2, rs3
ADDRESS_OF = {**{a: n for n, a in REALS.items()}, **{a: n for n, a in REALS6.items()}}

# port -> (scheduler, flags, weights of rs1..rs3, protocol)
SERVICES: dict[int, tuple[str, list[str], list[int], str]] = {
    8001: ("rr", [], [1, 1, 1], "tcp"),
    8002: ("wrr", [], [3, 2, 1], "tcp"),
    8003: ("sh", [], [1, 2, 1], "tcp"),
    8004: ("sh", ["sh-port"], [1, 1, 1], "tcp"),
    8006: ("mh", [], [1, 1, 2], "tcp"),
    8007: ("mh", ["mh-port"], [1, 1, 1], "tcp"),
    8008: ("fo", [], [1, 3, 2], "tcp"),
    8009: ("sh", [], [1, 1, 1], "udp"),
    8010: ("sh", [], [1, 0, 1], "tcp"),
    8011: ("sh", ["sh-fallback"], [1, 0, 1], "tcp"),
    8012: ("mh", [], [2, 0, 1], "tcp"),
}
V6_PORT = 8016  # mh over IPv6
DH_PORT, DH_MARK = 8005, 5


def config(state_file: str) -> str:
    out = [
        '[daemon]\ndataplane = "nft"\nmetrics_listen = "127.0.0.1:9108"\nlog_level = "info"',
        f'[daemon.nft]\nstate_file = "{state_file}"',
    ]
    for port, (sched, flags, weights, proto) in SERVICES.items():
        out.append(
            f'[[virtual_server]]\nname = "s{port}"\naddress = "{VIP}"\nport = {port}\n'
            f'protocol = "{proto}"\nscheduler = "{sched}"\nscheduler_flags = {flags}'
        )
        for name, weight in zip(NAMES, weights, strict=True):
            out.append(
                f'[[virtual_server.real_server]]\naddress = "{REALS[name]}"\nweight = {weight}'
            )
    out.append(
        f'[[virtual_server]]\nname = "v6"\naddress = "{VIP6}"\nport = {V6_PORT}\nscheduler = "mh"'
    )
    out += [f'[[virtual_server.real_server]]\naddress = "{REALS6[n]}"' for n in NAMES]
    out.append(
        f'[[virtual_server]]\nname = "marked"\nfwmark = {DH_MARK}\naddress = "{VIP}"\n'
        'scheduler = "dh"'
    )
    out += [f'[[virtual_server.real_server]]\naddress = "{REALS[n]}"' for n in NAMES]
    return "\n\n".join(out) + "\n"


@pytest.fixture(scope="module")
def topo() -> Iterator[NftTopology]:
    with NftTopology() as t:
        t.start_servers([*SERVICES, V6_PORT, DH_PORT])
        # the fwmark service's packets: marked by a table of the test's own, before NAT
        t.nft_script(
            "dir",
            "table inet marker {\n chain pre {\n type filter hook prerouting priority mangle\n"
            f" ip daddr {DH_NET}.0/24 meta mark set {DH_MARK}\n }}\n}}\n",
        )
        t.start_lvsmon(config(str(t.workdir / "nft-state.json")))
        yield t


def dests(weights: list[int], port: int = 0, six: bool = False) -> list[Dest]:
    """Real servers as lvsmon's schedulers see them (mh hashes address and port)."""
    addresses = REALS6 if six else REALS
    return [
        Dest(ipaddress.ip_address(addresses[n]), port, w)
        for n, w in zip(NAMES, weights, strict=True)
    ]


def name_of(dest: Dest | None) -> str | None:
    return ADDRESS_OF[str(dest.address)] if dest is not None else None


def observed(results: list[dict[str, Any]]) -> list[str | None]:
    return [r.get("server") for r in results]


def is_rotation(seen: list[str | None], period: list[str | None]) -> bool:
    n = len(period)
    return any(
        all(seen[i] == period[(start + i) % n] for i in range(len(seen))) for start in range(n)
    )


def sequence(scheduler: RoundRobin | WeightedRoundRobin, pool: list[Dest], n: int) -> list[str]:
    scheduler.update(pool)
    flow = Flow(ipaddress.ip_address(VIP), 0, ipaddress.ip_address(VIP), 0)
    return [str(name_of(scheduler.schedule(pool, flow, 0.0))) for _ in range(n)]


@pytest.mark.parametrize("port", [8001, 8002])
def test_rr_and_wrr_follow_lvsmons_sequence(topo: NftTopology, port: int) -> None:
    sched, _, weights, _ = SERVICES[port]
    period = sum(weights)
    results = topo.connect([{"dst": VIP, "port": port}] * (3 * period))
    scheduler = RoundRobin() if sched == "rr" else WeightedRoundRobin()
    expected: list[str | None] = list(sequence(scheduler, dests(weights), period))
    assert is_rotation(observed(results), expected), (observed(results), expected)
    if sched == "wrr":  # interleaved, not weight-expanded: rs1 rs1 rs2 rs1 rs2 rs3
        assert expected == ["rs1", "rs1", "rs2", "rs1", "rs2", "rs3"]


def hash_case(
    topo: NftTopology,
    port: int,
    table: list[Dest | None],
    flow: FlowHash,
    *,
    six: bool = False,
    pick: Any = None,
) -> None:
    """Each source's flow against the table entry the kernel's jhash selects."""
    srcs = sources6() if six else sources()
    vip = VIP6 if six else VIP
    proto = SERVICES.get(port, ("", [], [], "tcp"))[3]
    jobs: list[dict[str, Any]] = [
        {"src": s, "dst": vip, "port": port, "proto": proto} for s in srcs for _ in range(2)
    ]
    results = topo.connect(jobs)
    wrong = []
    for job, result in zip(jobs, results, strict=True):
        src = ipaddress.ip_address(job["src"])
        index = flow.index(src, ipaddress.ip_address(vip), result.get("sport", 0))
        dest = pick(index) if pick else table[index]
        want = name_of(dest) if dest is not None and dest.weight > 0 else None
        if result.get("server") != want:
            wrong.append((job["src"], result, want))
    assert not wrong, wrong
    assert len({r.get("server") for r in results}) > 1  # the sources really spread


@pytest.mark.parametrize("port", [8003, 8004, 8009, 8010])
def test_sh_sends_each_flow_where_lvsmons_table_says(topo: NftTopology, port: int) -> None:
    _, flags, weights, _ = SERVICES[port]
    sh = SourceHashing(frozenset(flags))
    sh.update(dests(weights))
    flow = FlowHash("saddr", "sh-port" in flags, SH_BUCKETS, SEED)
    hash_case(topo, port, list(sh.table), flow)


def test_sh_fallback_moves_refused_buckets_as_ipvs_does(topo: NftTopology) -> None:
    _, flags, weights, _ = SERVICES[8011]
    sh = SourceHashing(frozenset(flags))
    sh.update(dests(weights))
    flow = FlowHash("saddr", False, SH_BUCKETS, SEED)
    hash_case(topo, 8011, list(sh.table), flow, pick=sh.pick)


@pytest.mark.parametrize("port", [8006, 8007, 8012])
def test_mh_sends_each_flow_where_lvsmons_maglev_table_says(topo: NftTopology, port: int) -> None:
    _, flags, weights, _ = SERVICES[port]
    mh = MaglevHashing(frozenset(flags))
    mh.update(dests(weights, port))
    flow = FlowHash("saddr", "mh-port" in flags, MH_SLOTS, SEED)
    hash_case(topo, port, list(mh.table), flow)


def test_mh_over_ipv6(topo: NftTopology) -> None:
    mh = MaglevHashing()
    mh.update(dests([1, 1, 1], V6_PORT, six=True))
    hash_case(topo, V6_PORT, list(mh.table), FlowHash("saddr", False, MH_SLOTS, SEED), six=True)


def test_dh_on_a_fwmark_service_hashes_the_destination(topo: NftTopology) -> None:
    dh = DestinationHashing()
    dh.update(dests([1, 1, 1]))
    flow = FlowHash("daddr", False, DH_BUCKETS, SEED)
    targets = [f"{DH_NET}.{i}" for i in range(1, 41)]
    results = topo.connect([{"dst": t, "port": DH_PORT} for t in targets])
    for target, result in zip(targets, results, strict=True):
        index = flow.index(ipaddress.ip_address(VIP), ipaddress.ip_address(target))
        assert result.get("server") == name_of(dh.table[index]), (target, result)
    assert len({r.get("server") for r in results}) == 3


def test_fo_takes_everything_to_the_highest_weight(topo: NftTopology) -> None:
    results = topo.connect([{"src": s, "dst": VIP, "port": 8008} for s in sources()[:10]])
    assert observed(results) == ["rs2"] * 10
