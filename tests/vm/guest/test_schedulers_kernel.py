"""Differential tests: lvsmon.schedulers against the real kernel's IPVS schedulers.

Runs inside the QEMU guest (root, Debian's stock kernel). Every scenario is a
script of real-server changes (ipvsadm add/edit/delete, weights, thresholds,
scheduler flags) and new connections with chosen client addresses and ports.
It is played twice:

* against the kernel: real TCP connections from a client network namespace
  through the IPVS director (the root namespace, LVS-NAT) to a real-server
  namespace, one at a time. The real server the kernel chose is the local
  address of the accepted socket; a refused connection (no server available:
  IPVS answers ICMP port unreachable) is ``None``;
* against lvsmon's scheduler for the same name and flags, with the same
  destination list order (newest first), the same flows and times.

The two sequences of chosen real servers must be equal, decision for decision,
for rr, wrr, lc, wlc, sed, nq, fo, ovf, dh, sh (+ sh-port/sh-fallback), mh (+
mh-port/mh-fallback: its Maglev hash keys are fixed constants in ip_vs_mh.c,
not per-boot random, so the kernel's hash is reproduced exactly), lblc and
lblcr. twos is randomised in the kernel and missing from 6.1: it is compared
by distribution in tests/vm/test_twos_kernel.py on a 6.12 guest.

Connection state is controlled so the counters the schedulers read match the
model: an accepted connection is ESTABLISHED (active); a close by the client,
then the server, leaves the entry in CLOSE_WAIT/TIME_WAIT (inactive, 60 s/2 min
timeouts, longer than a scenario); an "expire" closes from the server side
only while the FIN_WAIT timeout is 1 s, so the entry goes inactive and is
then freed, which re-evaluates the overload flag as ip_vs_unbind_dest() does.
After every close/expire step and at the end of each scenario the per-server
ActiveConn/InActConn in /proc/net/ip_vs must equal what the harness counted
from the kernel's own choices, so the model is fed the kernel's real state.

Deleted servers keep their counters in the kernel's destination trash and come
back with them when re-added; the model reuses the same Dest object likewise.
The IPVS sysctls and timeouts this relies on are set to the kernel's defaults
for the module (and restored after it): other guest tests may change them.

Not covered: the lblc/lblcr garbage-collection timer (its full pass comes every
30 minutes) and their default 24 h expiration; lblcr's set shrink is covered
with lblcr_expiration set to 2 s. Mixed address families (IPv4 tunnel servers
in an IPv6 mh service) are checked by test_mh_mixed_family_tunnel_servers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import random
import select
import shutil
import socket
import subprocess
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeAlias

import pytest

from lvsmon.schedulers import Dest, Flow, Scheduler, create
from lvsmon.schedulers.locality import LocalityBasedLeastConnectionReplicated

pytestmark = pytest.mark.vm

NS_CLI = "lvsk-cli"
NS_RS = "lvsk-rs"
NFT_TABLE = "lvsmon_sched_kt"
# Addresses, ports and marks of this module only (other guest tests share the kernel).
VIP4 = "198.51.100.77"
VIP6 = "2001:db8:77:1::77"
FWM_NET4 = "198.51.100.128/26"  # local on the director: destinations of fwmark services
FWM_NET6 = "2001:db8:77:2::/64"
FWM_DSTS4 = tuple(f"198.51.100.{i}" for i in range(130, 169))
FWM_DSTS6 = tuple(f"2001:db8:77:2::{i:x}" for i in range(1, 30))
CLIENT_NETS4 = ("100.64.0.0/11", "198.18.0.0/15")
CLIENT_NET6 = "2001:db8:77:c0::/64"
RS_NET4, RS_NET6 = "10.77.0.{}", "2001:db8:77:10::{:x}"
RS_PORT = 80
TCP_PORT_BASE = 41000  # TCP virtual service of scenario i: VIP:(41000 + i)
FWMARK_BASE = 47000  # fwmark service of scenario i: mark 47000 + i, set from the dport
FIN_TIMEOUT_DEFAULT = 120  # the kernel's tcp_fin default (IP_VS_TCP_S_FIN_WAIT)
CLONE_NEWNET = 0x40000000


def rs_addr(n: int, v6: bool) -> str:
    return RS_NET6.format(n) if v6 else RS_NET4.format(n)


# -- scenarios ------------------------------------------------------------------------


@dataclass(frozen=True)
class Add:
    rs: int
    weight: int
    upper: int = 0
    lower: int = 0


@dataclass(frozen=True)
class Edit:
    """New weight; thresholds are passed again unchanged (ipvsadm -e resets omitted ones)."""

    rs: int
    weight: int


@dataclass(frozen=True)
class Delete:
    rs: int


@dataclass(frozen=True)
class Connect:
    src: str
    sport: int
    dst: str


@dataclass(frozen=True)
class _Select:
    """Open connections: by index (`ids`), or the first `n` still open to server `rs`."""

    ids: tuple[int, ...] = ()
    rs: int = 0
    n: int = 0

    def pick(self, open_conns: Iterable[tuple[int, str]], v6: bool) -> list[int]:
        """Indexes out of (index, chosen server) of the open connections, in order."""
        if not self.rs:
            wanted = set(self.ids)
            return [i for i, _ in open_conns if i in wanted]
        addr = rs_addr(self.rs, v6)
        return [i for i, rs in open_conns if rs == addr][: self.n]


@dataclass(frozen=True)
class Close(_Select):
    """Client then server close: active -> inactive (CLOSE_WAIT, then TIME_WAIT)."""


@dataclass(frozen=True)
class Expire(_Select):
    """The server closes (FIN_WAIT, 1 s) and the entries are freed (ip_vs_unbind_dest)."""


@dataclass(frozen=True)
class Wait:
    seconds: float


Step: TypeAlias = Add | Edit | Delete | Connect | Close | Expire | Wait


@dataclass(frozen=True)
class Scenario:
    name: str
    sched: str
    steps: tuple[Step, ...]
    flags: tuple[str, ...] = ()
    v6: bool = False
    fwmark: bool = False
    #: net.ipv4.vs.lblcr_expiration for this scenario (seconds), None = default
    lblcr_expiration: int | None = None

    @property
    def connections(self) -> int:
        return sum(isinstance(s, Connect) for s in self.steps)


_POOL_RNG = random.Random(4)


def _v4_pool(lo: str, hi: str, n: int) -> set[str]:
    a, b = int(ipaddress.IPv4Address(lo)), int(ipaddress.IPv4Address(hi))
    return {str(ipaddress.IPv4Address(_POOL_RNG.randrange(a, b))) for _ in range(n)}


CLIENTS4 = tuple(
    sorted(
        _v4_pool("100.64.0.1", "100.95.255.254", 120) | _v4_pool("198.18.0.1", "198.19.255.254", 60)
    )
)
CLIENTS6 = tuple(
    sorted(
        {
            str(
                ipaddress.IPv6Address(
                    int(ipaddress.IPv6Address("2001:db8:77:c0::")) + _POOL_RNG.getrandbits(64)
                )
            )
            for _ in range(80)
        }
    )
)


class _Ports:
    """Client source ports, unique across the module (no TIME_WAIT clashes)."""

    def __init__(self) -> None:
        self.next = 20000

    def take(self) -> int:
        self.next += 1
        assert self.next < 65536
        return self.next


_PORTS = _Ports()


@dataclass
class Build:
    """Writes a scenario's steps; random choices are seeded by the scenario name."""

    name: str
    sched: str
    flags: tuple[str, ...] = ()
    v6: bool = False
    fwmark: bool = False
    dsts: Sequence[str] | None = None
    lblcr_expiration: int | None = None
    steps: list[Step] = field(default_factory=list)
    _open: list[int] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(zlib.crc32(self.name.encode()))

    def add(self, *weights: int, thr: Sequence[tuple[int, int]] = (), first: int = 1) -> Build:
        for i, w in enumerate(weights):
            upper, lower = thr[i] if i < len(thr) else (0, 0)
            self.steps.append(Add(first + i, w, upper, lower))
        return self

    def readd(self, rs: int, weight: int) -> Build:
        self.steps.append(Add(rs, weight))
        return self

    def edit(self, rs: int, weight: int) -> Build:
        self.steps.append(Edit(rs, weight))
        return self

    def delete(self, rs: int) -> Build:
        self.steps.append(Delete(rs))
        return self

    def conns(self, n: int) -> Build:
        clients = CLIENTS6 if self.v6 else CLIENTS4
        for _ in range(n):
            if self.dsts:
                dst = self.rng.choice(self.dsts)
            elif self.fwmark:
                dst = self.rng.choice(FWM_DSTS6 if self.v6 else FWM_DSTS4)
            else:
                dst = VIP6 if self.v6 else VIP4
            self.steps.append(Connect(self.rng.choice(clients), _PORTS.take(), dst))
            self._open.append(self._count)
            self._count += 1
        return self

    def _pick(self, n: int | None) -> tuple[int, ...]:
        chosen = list(self._open) if n is None else self.rng.sample(self._open, n)
        for i in chosen:
            self._open.remove(i)
        return tuple(sorted(chosen))

    def close(self, n: int | None = None) -> Build:
        """Close n random open connections (all if None)."""
        self.steps.append(Close(self._pick(n)))
        return self

    def expire(self, n: int) -> Build:
        """Let n random open connections expire."""
        self.steps.append(Expire(self._pick(n)))
        return self

    def close_on(self, rs: int, n: int) -> Build:
        """Close the first n open connections to real server `rs`."""
        self.steps.append(Close(rs=rs, n=n))
        return self

    def expire_on(self, rs: int, n: int) -> Build:
        """Let the first n open connections to real server `rs` expire."""
        self.steps.append(Expire(rs=rs, n=n))
        return self

    def wait(self, seconds: float) -> Build:
        self.steps.append(Wait(seconds))
        return self

    def done(self) -> Scenario:
        return Scenario(
            self.name,
            self.sched,
            tuple(self.steps),
            self.flags,
            self.v6,
            self.fwmark,
            self.lblcr_expiration,
        )


THR4 = ((5, 0), (0, 0), (7, 3), (3, 0))  # (upper, lower) thresholds for four servers


def _scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    # rr / wrr: list walking across adds, deletes, re-adds (trash), weight 0, overload
    out.append(
        Build("rr-changes", "rr")
        .add(1, 1, 1)
        .conns(5)
        .add(1, first=4)
        .conns(3)
        .delete(2)
        .conns(3)
        .edit(3, 0)
        .conns(3)
        .delete(4)
        .conns(3)
        .readd(2, 1)
        .conns(4)
        .edit(3, 2)
        .conns(4)
        .done()
    )
    out.append(
        Build("rr-thresholds", "rr")
        .add(1, 1, 1, 1, thr=THR4)
        .conns(14)
        .expire(5)
        .conns(8)
        .close(4)
        .conns(6)
        .expire(4)
        .conns(6)
        .done()
    )
    # the overload flag's hysteresis when entries expire (ip_vs_unbind_dest): cleared only
    # below the lower threshold, or below 3/4 of the upper one when there is none
    for sched in ("rr", "wlc"):
        out.append(
            Build(f"{sched}-overload-hysteresis", sched)
            .add(1, 1, 1, thr=((4, 0), (6, 2)))
            .conns(12)
            .conns(4)
            .expire_on(1, 1)
            .conns(4)
            .expire_on(1, 1)
            .conns(3)
            .expire_on(2, 4)
            .conns(4)
            .expire_on(2, 1)
            .conns(4)
            .done()
        )
    out.append(
        Build("wrr-changes", "wrr")
        .add(4, 3, 2)
        .conns(12)
        .edit(2, 1)
        .conns(10)
        .delete(1)
        .conns(5)
        .add(5, first=4)
        .conns(10)
        .readd(1, 4)
        .conns(8)
        .done()
    )
    out.append(
        Build("wrr-weight0", "wrr")
        .add(6, 4, 2)
        .conns(13)
        .edit(3, 0)
        .conns(6)
        .edit(3, 3)
        .conns(9)
        .edit(1, 0)
        .edit(2, 0)
        .edit(3, 0)
        .conns(2)
        .edit(2, 5)
        .conns(4)
        .done()
    )
    out.append(
        Build("wrr-thresholds", "wrr")
        .add(3, 2, 4, 1, thr=THR4)
        .conns(30)
        .expire(6)
        .conns(12)
        .done()
    )
    # least-connection family and failover: open/close shape active and inactive counts
    for sched in ("lc", "wlc", "sed", "nq", "fo", "ovf"):
        out.append(
            Build(f"{sched}-churn", sched)
            .add(1, 2, 3)
            .conns(20)
            .close(8)
            .conns(6)
            .edit(3, 0)
            .conns(8)
            .close()
            .conns(5)
            .add(2, first=4)
            .conns(8)
            .close(5)
            .conns(6)
            .delete(2)
            .conns(4)
            .readd(2, 3)
            .conns(6)
            .done()
        )
        out.append(
            Build(f"{sched}-thresholds", sched)
            .add(3, 2, 4, 1, thr=THR4)
            .conns(25)
            .expire(6)
            .conns(10)
            .close(6)
            .conns(6)
            .expire(4)
            .conns(6)
            .done()
        )
    out.append(Build("fo-ties", "fo").add(2, 5, 5, 1).conns(4).edit(2, 1).conns(3).done())
    for v6 in (False, True):
        fam = "6" if v6 else "4"
        out.append(
            Build(f"wlc-ipv{fam}-inactive", "wlc", v6=v6)
            .add(2, 1, 1)
            .conns(12)
            .close()
            .conns(9)
            .close(5)
            .conns(7)
            .done()
        )
    # sh: 256-bucket table from weights; -port and -fallback flags; IPv6
    for flags in ((), ("sh-port",), ("sh-fallback",), ("sh-port", "sh-fallback")):
        tag = "-".join(f.split("-")[1] for f in flags) or "plain"
        out.append(
            Build(f"sh-{tag}", "sh", flags=flags)
            .add(1, 2, 3)
            .conns(30)
            .edit(2, 0)
            .conns(30)
            .add(4, first=4)
            .conns(20)
            .delete(1)
            .conns(15)
            .done()
        )
    out.append(
        Build("sh-fallback-thresholds", "sh", flags=("sh-fallback",))
        .add(3, 2, 4, 1, thr=THR4)
        .conns(40)
        .expire(8)
        .conns(15)
        .done()
    )
    for flags in ((), ("sh-port",)):
        tag = "port" if flags else "plain"
        out.append(
            Build(f"sh-ipv6-{tag}", "sh", flags=flags, v6=True)
            .add(1, 2, 3)
            .conns(30)
            .edit(2, 0)
            .conns(20)
            .delete(1)
            .conns(20)
            .done()
        )
    # dh: destination-address hash over many destinations (fwmark service)
    for v6 in (False, True):
        fam = "6" if v6 else "4"
        out.append(
            Build(f"dh-ipv{fam}", "dh", v6=v6, fwmark=True)
            .add(1, 2, 3)
            .conns(40)
            .edit(2, 0)
            .conns(20)
            .delete(1)
            .conns(20)
            .add(7, first=5)
            .conns(15)
            .done()
        )
    out.append(
        Build("dh-thresholds", "dh", fwmark=True)
        .add(3, 2, 4, 1, thr=THR4)
        .conns(40)
        .expire(8)
        .conns(15)
        .done()
    )
    # mh: Maglev table (weights, gcd, rshift), -port/-fallback, deletes, IPv6
    for flags in ((), ("mh-port",), ("mh-fallback",), ("mh-port", "mh-fallback")):
        tag = "-".join(f.split("-")[1] for f in flags) or "plain"
        out.append(
            Build(f"mh-{tag}", "mh", flags=flags)
            .add(1, 2, 3)
            .conns(30)
            .edit(2, 0)
            .conns(30)
            .delete(1)
            .conns(20)
            .add(7, first=5)
            .conns(20)
            .readd(1, 2)
            .conns(15)
            .done()
        )
    out.append(Build("mh-weights", "mh").add(1, 1000, 3, 250).conns(50).done())
    out.append(
        Build("mh-fallback-thresholds", "mh", flags=("mh-fallback",))
        .add(3, 2, 4, 1, thr=THR4)
        .conns(40)
        .expire(8)
        .conns(15)
        .done()
    )
    for flags in ((), ("mh-port", "mh-fallback")):
        tag = "port-fallback" if flags else "plain"
        out.append(
            Build(f"mh-ipv6-{tag}", "mh", flags=flags, v6=True)
            .add(1, 2, 3)
            .conns(30)
            .edit(2, 0)
            .conns(20)
            .delete(1)
            .conns(20)
            .done()
        )
    # lblc / lblcr: per-destination memory over a few destinations (fwmark service)
    for sched in ("lblc", "lblcr"):
        for v6 in (False, True):
            fam = "6" if v6 else "4"
            dsts = (FWM_DSTS6 if v6 else FWM_DSTS4)[:6]
            out.append(
                Build(f"{sched}-ipv{fam}", sched, v6=v6, fwmark=True, dsts=dsts)
                .add(1, 2, 3)
                .conns(30)
                .close(12)
                .conns(15)
                .edit(3, 0)
                .conns(15)
                .delete(2)
                .conns(10)
                .readd(2, 2)
                .conns(10)
                .close(10)
                .conns(12)
                .done()
            )
        out.append(
            Build(f"{sched}-thresholds", sched, fwmark=True, dsts=FWM_DSTS4[:5])
            .add(3, 2, 4, 1, thr=THR4)
            .conns(30)
            .expire(8)
            .conns(10)
            .close(6)
            .conns(10)
            .done()
        )
    # lblcr's replicated set loses its most loaded member once unchanged for
    # lblcr_expiration (here 2 s); closing connections then makes it the least loaded
    b = Build("lblcr-expiration", "lblcr", fwmark=True, dsts=FWM_DSTS4[:2], lblcr_expiration=2)
    out.append(
        b.add(1, 1, 2)
        .conns(8)
        .wait(3.0)
        .conns(1)
        .close_on(3, 2)
        .conns(6)
        .wait(3.0)
        .conns(4)
        .close(3)
        .conns(4)
        .done()
    )
    return out


SCENARIOS = _scenarios()


# -- the model --------------------------------------------------------------------------


@dataclass
class ModelRun:
    choices: list[str | None]
    counts: dict[str, tuple[int, int]]
    #: close/expire steps that found fewer connections to their server than asked
    short_steps: int = 0


def simulate(sc: Scenario, times: Sequence[float], dport: int) -> ModelRun:
    """Play `sc` against lvsmon's scheduler; `times` are the decision times (s)."""
    sched: Scheduler = create(sc.sched, frozenset(sc.flags))
    if sc.lblcr_expiration is not None:
        assert isinstance(sched, LocalityBasedLeastConnectionReplicated)
        sched.expiration = float(sc.lblcr_expiration)
    dests: list[Dest] = []
    known: dict[str, Dest] = {}  # every Dest ever added: the kernel's trash keeps them
    open_conns: dict[int, Dest] = {}
    choices: list[str | None] = []
    short_steps = 0
    for step in sc.steps:
        if isinstance(step, Add):
            addr = rs_addr(step.rs, sc.v6)
            dest = known.get(addr)
            if dest is None:
                dest = known[addr] = Dest(ipaddress.ip_address(addr), RS_PORT, step.weight)
            # __ip_vs_update_dest(): a new upper threshold of 0 or above the old clears
            if step.upper == 0 or step.upper > dest.upper_threshold:
                dest.overloaded = False
            dest.set_weight(step.weight)
            dest.upper_threshold, dest.lower_threshold = step.upper, step.lower
            dests.insert(0, dest)
            sched.update(dests)
        elif isinstance(step, Edit):
            known[rs_addr(step.rs, sc.v6)].set_weight(step.weight)
            sched.update(dests)
        elif isinstance(step, Delete):
            dests.remove(known[rs_addr(step.rs, sc.v6)])
            sched.update(dests)
        elif isinstance(step, Connect):
            i = len(choices)
            flow = Flow(
                ipaddress.ip_address(step.src), step.sport, ipaddress.ip_address(step.dst), dport
            )
            picked = sched.schedule(dests, flow, times[i])
            if picked is not None:
                open_conns[i] = picked
                picked.active += 1
                picked.refresh_overload()  # ip_vs_bind_dest()
            choices.append(None if picked is None else str(picked.address))
        elif isinstance(step, Close | Expire):
            picked_ids = step.pick(((i, str(d.address)) for i, d in open_conns.items()), sc.v6)
            short_steps += bool(step.rs) and len(picked_ids) < step.n
            for i in picked_ids:
                dest = open_conns.pop(i)
                dest.active -= 1
                if isinstance(step, Close):
                    dest.inactive += 1
                else:
                    dest.refresh_overload()  # ip_vs_unbind_dest()
    counts = {a: (d.active, d.inactive) for a, d in known.items() if d.total_connections}
    return ModelRun(choices, counts, short_steps)


# -- the kernel side --------------------------------------------------------------------


def _run(cmd: Sequence[str], stdin: str | None = None) -> str:
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _ipvsadm_restore(lines: Sequence[str], check: bool = True) -> None:
    """Apply ipvsadm commands in one process. ipvsadm -R goes on past a failing line
    and exits 0, so any complaint on stderr counts as a failure."""
    proc = subprocess.run(
        ["ipvsadm", "-R"],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and (proc.returncode or proc.stderr.strip()):
        raise AssertionError(f"ipvsadm -R failed: {proc.stderr.strip()}\ninput: {lines}")


def _sysctl(path: str, value: str) -> None:
    with contextlib.suppress(OSError), open(f"/proc/sys/{path}", "w") as fh:
        fh.write(value)


def _sysctl_get(path: str) -> str | None:
    try:
        return Path(f"/proc/sys/{path}").read_text().strip()
    except OSError:
        return None


#: Set for this module, restored afterwards. The IPVS ones are the kernel's defaults,
#: which other tests may have changed (expire_nodest_conn=1, for one, frees the
#: entries of a deleted server at once, so it would not come back with them).
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    # refusals are ICMP port unreachable from the director: never rate-limit them
    "net/ipv4/icmp_ratelimit": "0",
    "net/ipv4/icmp_ratemask": "0",
    "net/ipv4/icmp_msgs_per_sec": "1000000",
    "net/ipv4/icmp_msgs_burst": "1000000",
    "net/ipv6/icmp/ratelimit": "0",
    "net/ipv4/vs/expire_nodest_conn": "0",
    "net/ipv4/vs/conn_reuse_mode": "1",
    "net/ipv4/vs/sloppy_tcp": "0",
    "net/ipv4/vs/secure_tcp": "0",
    "net/ipv4/vs/drop_entry": "0",
    "net/ipv4/vs/drop_packet": "0",
    "net/ipv4/vs/lblc_expiration": str(24 * 60 * 60),
    "net/ipv4/vs/lblcr_expiration": str(24 * 60 * 60),
}
DEFAULT_TIMEOUTS = ("900", str(FIN_TIMEOUT_DEFAULT), "300")  # ipvsadm --set tcp tcpfin udp


def _proc_addr(token: str) -> str:
    """An address as /proc/net/ip_vs prints it (hex IPv4, or [full IPv6])."""
    if token.startswith("["):
        return str(ipaddress.IPv6Address(token[1:-1]))
    return str(ipaddress.IPv4Address(int(token, 16)))


Counts: TypeAlias = dict[str, tuple[int, int]]


@dataclass
class KernelRun:
    choices: list[str | None]
    times: list[float]
    #: (active, inactive) per server at the end (deleted ones too), as counted from
    #: the kernel's choices and checked against /proc/net/ip_vs
    counts: Counts


class Lab:
    """Client namespace -> director (root namespace, IPVS) -> real-server namespace."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self._ns_fds: dict[str, int] = {}
        self.services: list[str] = []
        self.listeners: list[socket.socket] = []
        self._saved_sysctls: dict[str, str | None] = {}
        self._saved_timeouts: list[str] = []

    # setup / teardown ---------------------------------------------------------------

    def setup(self, scenarios: Sequence[Scenario]) -> None:
        _run(
            [
                "modprobe",
                "-a",
                "ip_vs",
                *(f"ip_vs_{s}" for s in sorted({s.sched for s in scenarios})),
            ]
        )
        root = [
            f"link add lvsk-c type veth peer name c0 netns {NS_CLI}",
            f"link add lvsk-r type veth peer name r0 netns {NS_RS}",
            "link set lvsk-c up",
            "link set lvsk-r up",
            "addr add 192.0.2.253/30 dev lvsk-c",
            "addr add fd00:77::1/64 dev lvsk-c nodad",
            f"addr add {rs_addr(254, False)}/24 dev lvsk-r",
            f"addr add {rs_addr(254, True)}/64 dev lvsk-r nodad",
            f"route add local {VIP4}/32 dev lo",
            f"route add local {VIP6}/128 dev lo",
            f"route add local {FWM_NET4} dev lo",
            f"route add local {FWM_NET6} dev lo",
            *(f"route add {net} via 192.0.2.254" for net in CLIENT_NETS4),
            f"route add {CLIENT_NET6} via fd00:77::2",
        ]
        cli = [
            "link set lo up",
            "link set c0 up",
            "addr add 192.0.2.254/30 dev c0",
            "addr add fd00:77::2/64 dev c0 nodad",
            "route add default via 192.0.2.253",
            "route add default via fd00:77::1",
            *(f"addr add {a}/32 dev lo" for a in CLIENTS4),
            *(f"addr add {a}/128 dev lo nodad" for a in CLIENTS6),
        ]
        rs = [
            "link set lo up",
            "link set r0 up",
            *(f"addr add {rs_addr(n, False)}/24 dev r0" for n in range(1, 10)),
            *(f"addr add {rs_addr(n, True)}/64 dev r0 nodad" for n in range(1, 10)),
            f"route add default via {rs_addr(254, False)}",
            f"route add default via {rs_addr(254, True)}",
        ]
        _run(["ip", "netns", "add", NS_CLI])
        _run(["ip", "netns", "add", NS_RS])
        _run(["ip", "-batch", "-"], "".join(f"{line}\n" for line in root))
        _run(["ip", "-n", NS_CLI, "-batch", "-"], "".join(f"{line}\n" for line in cli))
        _run(["ip", "-n", NS_RS, "-batch", "-"], "".join(f"{line}\n" for line in rs))
        for name in (NS_CLI, NS_RS):
            self._ns_fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY)
        for key, value in SYSCTLS.items():
            self._saved_sysctls[key] = _sysctl_get(key)
            _sysctl(key, value)
        marks = [
            f"add rule inet {NFT_TABLE} pre tcp dport {FWMARK_BASE + i} meta mark set "
            f"{FWMARK_BASE + i}"
            for i, sc in enumerate(scenarios)
            if sc.fwmark
        ]
        _run(
            ["nft", "-f", "-"],
            f"add table inet {NFT_TABLE}\n"
            f"add chain inet {NFT_TABLE} pre "
            "{ type filter hook prerouting priority mangle; policy accept; }\n"
            + "".join(f"{m}\n" for m in marks),
        )
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            lsock = self.make_socket(NS_RS, family)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            lsock.bind((addr, RS_PORT))
            lsock.listen(128)
            lsock.settimeout(10)
            self.listeners.append(lsock)
        # services left over in this module's address space by an earlier run
        leftovers = [f"-D {self.service(sc, i)[0]}" for i, sc in enumerate(scenarios)]
        _ipvsadm_restore(leftovers, check=False)
        timeouts = _run(["ipvsadm", "-L", "--timeout"]).split(":")[-1].split()
        self._saved_timeouts = [t for t in timeouts if t.isdigit()]
        _run(["ipvsadm", "--set", *DEFAULT_TIMEOUTS])

    def teardown(self) -> None:
        for lsock in self.listeners:
            lsock.close()
        _ipvsadm_restore([f"-D {svc}" for svc in self.services], check=False)
        subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)
        if len(self._saved_timeouts) == 3:
            subprocess.run(["ipvsadm", "--set", *self._saved_timeouts], capture_output=True)
        for key, value in self._saved_sysctls.items():
            if value is not None:
                _sysctl(key, value)
        for name in (NS_CLI, NS_RS):  # deletes the veths (and the routes via them) too
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        routes = (FWM_NET4, f"{VIP4}/32", FWM_NET6, f"{VIP6}/128")
        subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input="".join(f"route del local {net} dev lo\n" for net in routes),
            capture_output=True,
            text=True,
            check=False,
        )
        for fd in self._ns_fds.values():
            os.close(fd)
        os.close(self._root_ns)

    # helpers --------------------------------------------------------------------------

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    def make_socket(self, ns: str, family: int) -> socket.socket:
        """A TCP socket living in namespace `ns` (this thread returns to the root one)."""
        self._setns(self._ns_fds[ns])
        try:
            return socket.socket(family, socket.SOCK_STREAM)
        finally:
            self._setns(self._root_ns)

    @staticmethod
    def set_fin_timeout(seconds: int) -> None:
        _run(["ipvsadm", "--set", "0", str(seconds), "0"])

    @staticmethod
    def counts(service_token: str) -> Counts:
        """(ActiveConn, InActConn) per real server of one service, from /proc/net/ip_vs."""
        out: Counts = {}
        inside = False
        with open("/proc/net/ip_vs") as fh:
            for line in fh:
                parts = line.split()
                if not parts:
                    continue
                if parts[0] != "->":
                    inside = parts[:2] == service_token.split()
                    continue
                if inside and parts[1] != "RemoteAddress:Port":
                    addr = _proc_addr(parts[1].rsplit(":", 1)[0])
                    active, inactive = int(parts[4]), int(parts[5])
                    if active or inactive:
                        out[addr] = (active, inactive)
        return out

    def wait_counts(self, token: str, expected: Counts, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.counts(token)
            if got == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: kernel (active, inactive) per server {got} != harness {expected}"
                )
            time.sleep(0.05)

    # a scenario -------------------------------------------------------------------------

    @staticmethod
    def dport(sc: Scenario, index: int) -> int:
        """The port clients connect to: the service's, or the one marked for it."""
        return (FWMARK_BASE if sc.fwmark else TCP_PORT_BASE) + index

    @classmethod
    def service(cls, sc: Scenario, index: int) -> tuple[str, str]:
        """The virtual service as ipvsadm names it, and as /proc/net/ip_vs shows it."""
        dport = cls.dport(sc, index)
        if sc.fwmark:
            return f"-f {dport}" + (" -6" if sc.v6 else ""), f"FWM {dport:08X}"
        vip = ipaddress.ip_address(VIP6 if sc.v6 else VIP4)
        hexaddr = f"[{vip.exploded}]" if sc.v6 else f"{int(vip):08X}"
        spec = f"-t [{vip}]:{dport}" if sc.v6 else f"-t {vip}:{dport}"
        return spec, f"TCP {hexaddr}:{dport:04X}"

    def run(self, sc: Scenario, index: int) -> KernelRun:
        family = socket.AF_INET6 if sc.v6 else socket.AF_INET
        dport = self.dport(sc, index)
        svc, token = self.service(sc, index)
        rs_fmt: Callable[[int], str] = (
            (lambda n: f"[{rs_addr(n, True)}]:{RS_PORT}")
            if sc.v6
            else (lambda n: f"{rs_addr(n, False)}:{RS_PORT}")
        )
        if sc.lblcr_expiration is not None:
            _sysctl("net/ipv4/vs/lblcr_expiration", str(sc.lblcr_expiration))
        flags = f" -b {','.join(sc.flags)}" if sc.flags else ""
        pending = [f"-A {svc} -s {sc.sched}{flags}"]
        self.services.append(svc)
        thresholds: dict[int, tuple[int, int]] = {}
        conns: dict[int, tuple[socket.socket, socket.socket, str]] = {}
        leftovers: list[socket.socket] = []  # clients whose entry expired
        expected: dict[str, list[int]] = {}  # rs -> [active, inactive], from kernel choices
        live: set[str] = set()
        choices: list[str | None] = []
        times: list[float] = []
        start = 0.0

        restore_fin = f"--set 0 {FIN_TIMEOUT_DEFAULT} 0"
        fin_short = False

        def flush() -> None:
            nonlocal start, fin_short
            if pending:
                _ipvsadm_restore(pending)
                fin_short = fin_short and restore_fin not in pending
                if not start:
                    start = time.monotonic()
                pending.clear()

        def expected_counts() -> Counts:
            """What /proc/net/ip_vs must show: deleted servers (in the trash) are not listed."""
            return {a: (c[0], c[1]) for a, c in expected.items() if a in live and (c[0] or c[1])}

        try:
            for step in sc.steps:
                if isinstance(step, Add):
                    thresholds[step.rs] = (step.upper, step.lower)
                    live.add(rs_addr(step.rs, sc.v6))
                    pending.append(
                        f"-a {svc} -r {rs_fmt(step.rs)} -m -w {step.weight}"
                        f" -x {step.upper} -y {step.lower}"
                    )
                elif isinstance(step, Edit):
                    upper, lower = thresholds[step.rs]
                    pending.append(
                        f"-e {svc} -r {rs_fmt(step.rs)} -m -w {step.weight} -x {upper} -y {lower}"
                    )
                elif isinstance(step, Delete):
                    pending.append(f"-d {svc} -r {rs_fmt(step.rs)}")
                    live.discard(rs_addr(step.rs, sc.v6))
                elif isinstance(step, Wait):
                    flush()
                    time.sleep(step.seconds)
                elif isinstance(step, Connect):
                    flush()
                    times.append(time.monotonic() - start)
                    chosen = self._connect(family, step, dport, len(choices), conns)
                    choices.append(chosen)
                    if chosen is not None:
                        expected.setdefault(chosen, [0, 0])[0] += 1
                elif isinstance(step, Close):
                    flush()
                    for i in step.pick(((i, c[2]) for i, c in conns.items()), sc.v6):
                        client, server, rs = conns.pop(i)
                        client.close()
                        server.close()
                        expected[rs][0] -= 1
                        expected[rs][1] += 1
                    self.wait_counts(token, expected_counts(), 10, f"{sc.name}: after close")
                elif isinstance(step, Expire):
                    pending.append("--set 0 1 0")
                    flush()
                    fin_short = True
                    for i in step.pick(((i, c[2]) for i, c in conns.items()), sc.v6):
                        client, server, rs = conns.pop(i)
                        server.close()  # FIN from the real server: FIN_WAIT, 1 s
                        leftovers.append(client)
                        expected[rs][0] -= 1
                    self.wait_counts(token, expected_counts(), 20, f"{sc.name}: after expiry")
                    pending.append(restore_fin)  # goes with the next change
            flush()
            self.wait_counts(token, expected_counts(), 10, f"{sc.name}: at the end")
        finally:
            for client, server, _ in conns.values():
                client.close()
                server.close()
            for client in leftovers:
                client.close()
            if fin_short:
                self.set_fin_timeout(FIN_TIMEOUT_DEFAULT)
            if sc.lblcr_expiration is not None:
                _sysctl("net/ipv4/vs/lblcr_expiration", SYSCTLS["net/ipv4/vs/lblcr_expiration"])
        counts = {a: (c[0], c[1]) for a, c in expected.items() if c[0] or c[1]}
        return KernelRun(choices, times, counts)

    def _connect(
        self,
        family: int,
        step: Connect,
        dport: int,
        index: int,
        conns: dict[int, tuple[socket.socket, socket.socket, str]],
    ) -> str | None:
        client = self.make_socket(NS_CLI, family)
        client.bind((step.src, step.sport))
        client.setblocking(False)
        client.connect_ex((step.dst, dport))
        listener = self.listeners[1 if family == socket.AF_INET6 else 0]
        deadline = time.monotonic() + 10
        # A refusal is an ICMP port unreachable from IPVS. It may arrive while connect()
        # still holds the socket (then it is only a soft error and a blocking connect
        # would wait for the SYN retransmission): SO_ERROR reports soft errors too.
        while not select.select([listener], [], [], 0.005)[0]:
            err = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == errno.ECONNREFUSED:
                client.close()
                return None
            if err or time.monotonic() > deadline:
                client.close()
                raise AssertionError(
                    f"connection {index} from {step.src}:{step.sport}: "
                    f"{os.strerror(err) if err else 'neither accepted nor refused in 10 s'}"
                )
        server, peer = listener.accept()
        assert (ipaddress.ip_address(peer[0]), peer[1]) == (
            ipaddress.ip_address(step.src),
            step.sport,
        ), f"accepted {peer}, expected the connection from {step.src}:{step.sport}"
        chosen = str(ipaddress.ip_address(server.getsockname()[0]))
        conns[index] = (client, server, chosen)
        return chosen


def _missing_tools() -> list[str]:
    return [t for t in ("ip", "ipvsadm", "nft", "modprobe") if shutil.which(t) is None]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    missing = _missing_tools()
    if missing:
        pytest.fail(f"missing in the guest: {', '.join(missing)} (see scripts/install-test-deps)")
    if os.geteuid() != 0:
        pytest.fail("the VM guest runs its tests as root")
    the_lab = Lab()
    try:
        the_lab.setup(SCENARIOS)
        yield the_lab
    finally:
        the_lab.teardown()  # copes with a setup that failed half-way


def _describe_mismatch(sc: Scenario, kernel: list[str | None], model: list[str | None]) -> str:
    first = next(i for i, (k, m) in enumerate(zip(kernel, model, strict=True)) if k != m)
    lo = max(0, first - 3)
    rows = "\n".join(
        f"  {'>' if i == first else ' '} #{i}: kernel {kernel[i]}  lvsmon {model[i]}"
        for i in range(lo, min(len(kernel), first + 4))
    )
    return (
        f"{sc.name} ({sc.sched}{' ' + ','.join(sc.flags) if sc.flags else ''}): first "
        f"difference at decision {first} of {len(kernel)}\n{rows}"
    )


@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=[s.name for s in SCENARIOS])
def test_kernel_and_lvsmon_choose_the_same_servers(lab: Lab, index: int) -> None:
    sc = SCENARIOS[index]
    kernel = lab.run(sc, index)
    model = simulate(sc, kernel.times, lab.dport(sc, index))
    assert len(kernel.choices) == len(model.choices) == sc.connections
    assert kernel.choices == model.choices, _describe_mismatch(sc, kernel.choices, model.choices)
    assert kernel.counts == model.counts


def _conn_dest(src: str, sport: int, timeout: float = 5.0) -> str:
    """The real server of the IPVS entry for client src:sport, from /proc/net/ip_vs_conn."""
    want = (ipaddress.ip_address(src), sport)
    deadline = time.monotonic() + timeout
    while True:
        with open("/proc/net/ip_vs_conn") as fh:
            for line in fh.readlines()[1:]:
                p = line.split()
                addr = ipaddress.ip_address(p[1]) if ":" in p[1] else None
                if (addr, int(p[2], 16)) == want:
                    dest = p[5]
                    return str(
                        ipaddress.ip_address(dest)
                        if ":" in dest
                        else ipaddress.IPv4Address(int(dest, 16))
                    )
        if time.monotonic() > deadline:
            raise AssertionError(f"no IPVS entry for [{src}]:{sport}")
        time.sleep(0.01)


def test_mh_mixed_family_tunnel_servers(lab: Lab) -> None:
    """IPv4 real servers (IPIP tunnels) in an IPv6 mh service. The kernel folds every
    server address as the service's family (IPv6); lvsmon folds each in its own. An
    IPv4 address sits zero-padded in its 16 bytes, so the IPv6 fold is the address
    itself and both must agree. Tunnelled SYNs are never answered: the kernel's choice
    is read from /proc/net/ip_vs_conn."""
    vport = TCP_PORT_BASE + len(SCENARIOS)
    svc = f"-t [{VIP6}]:{vport}"
    servers = [
        (rs_addr(1, False), 1),
        (rs_addr(2, False), 2),
        (rs_addr(3, True), 3),
        (rs_addr(4, False), 2),
    ]
    _ipvsadm_restore([f"-D {svc}"], check=False)
    lab.services.append(svc)
    lines = [f"-A {svc} -s mh"]
    lines += [
        f"-a {svc} -r [{a}]:{vport} -i -w {w}" if ":" in a else f"-a {svc} -r {a}:{vport} -i -w {w}"
        for a, w in servers
    ]
    _ipvsadm_restore(lines)
    sched = create("mh")
    dests: list[Dest] = []
    for addr, weight in servers:  # tunnel servers take the service's port
        dests.insert(0, Dest(ipaddress.ip_address(addr), vport, weight))
        sched.update(dests)
    rng = random.Random(6)
    kernel: list[str] = []
    model: list[str | None] = []
    for i in range(60):
        if i == 40:  # a Maglev rebuild without one IPv4 server
            _ipvsadm_restore([f"-d {svc} -r {servers[1][0]}:{vport}"])
            dests = [d for d in dests if str(d.address) != servers[1][0]]
            sched.update(dests)
        src, sport = rng.choice(CLIENTS6), 19000 + i
        client = lab.make_socket(NS_CLI, socket.AF_INET6)
        try:
            client.bind((src, sport))
            client.setblocking(False)
            client.connect_ex((VIP6, vport))
            kernel.append(_conn_dest(src, sport))
        finally:
            client.close()
        flow = Flow(ipaddress.ip_address(src), sport, ipaddress.ip_address(VIP6), vport)
        picked = sched.schedule(dests, flow, 0.0)
        model.append(None if picked is None else str(picked.address))
    assert {a for a in kernel if "." in a}, "no IPv4 server was chosen"
    assert kernel == model


def _paced(sc: Scenario) -> list[float]:
    """Decision times of a run that takes 10 ms a connection (waits included)."""
    t, out = 0.0, []
    for step in sc.steps:
        if isinstance(step, Wait):
            t += step.seconds
        elif isinstance(step, Connect):
            out.append(t)
            t += 0.01
    return out


def test_scenarios_exercise_what_they_name() -> None:
    """Model-only: the scenarios reach the states their names promise."""
    models = {s.name: simulate(s, _paced(s), 0) for s in SCENARIOS}
    # steps that close or expire connections of one server find as many as they name
    assert not [name for name, run in models.items() if run.short_steps]
    runs = {name: run.choices for name, run in models.items()}
    # without fallback, hash schedulers refuse clients of a weight-0 server; with it, never
    for name in ("sh-plain", "sh-port", "dh-ipv4", "dh-ipv6", "mh-plain", "mh-ipv6-plain"):
        assert None in runs[name], name
    for name in ("sh-fallback", "sh-port-fallback", "mh-fallback", "mh-port-fallback"):
        assert None not in runs[name], name
    # ovf runs out of servers once each has weight + 1 active connections
    assert None in runs["ovf-churn"]
    # the lblcr set shrink changes decisions (it would not with the 24 h default)
    sc = next(s for s in SCENARIOS if s.name == "lblcr-expiration")
    default = replace(sc, lblcr_expiration=None)
    assert simulate(default, _paced(sc), 0).choices != runs[sc.name]


def test_every_scheduler_is_covered() -> None:
    """The differential scenarios cover all deterministic schedulers and their flags."""
    covered = {(s.sched, f) for s in SCENARIOS for f in (*s.flags, "")}
    for name in (
        "rr",
        "wrr",
        "lc",
        "wlc",
        "sed",
        "nq",
        "fo",
        "ovf",
        "dh",
        "sh",
        "mh",
        "lblc",
        "lblcr",
    ):
        assert (name, "") in covered, name
    for name, flag in (
        ("sh", "sh-port"),
        ("sh", "sh-fallback"),
        ("mh", "mh-port"),
        ("mh", "mh-fallback"),
    ):
        assert (name, flag) in covered, flag
    assert all(s.connections for s in SCENARIOS)
    assert any(s.v6 for s in SCENARIOS) and any(s.fwmark for s in SCENARIOS)
