"""A hostile host on the directors' LAN: a flood of junk adverts, and a foreign
priority-255 advert against directors that name their peers.

Bars (issue 14): no role change from illegitimate packets, the VRRP process
survives (no restart: RLIMIT_RTTIME would kill a real-time process that never
blocks), every dropped advert is counted by reason, and the log stays quiet
(one line per reason per minute). The CPU a flood costs is printed here and
measured against keepalived in bench/chaos.py (no timing bars in tests).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.ha import codec
from tests.netns.conftest import _missing
from tests.netns.test_adverts import ADDRS, GROUP, ROGUE, advert, flip_checksum, packet
from tests.netns.test_failover import pair
from tests.netns.topology import (
    HERE,
    PUBLIC,
    PYTHON,
    REPO,
    LvsmonDirector,
    Topology,
    lvsmon_config,
    wait_for,
)

RATE, SECONDS = 10_000, 3.0
Pair = tuple[Topology, LvsmonDirector, LvsmonDirector]

# The junk cycled by the flood: one packet for each of five reasons.
JUNK = {
    "checksum": packet(flip_checksum(advert())),
    "ttl": packet(advert(), ttl=1),
    "vrid": packet(advert(vrid=99)),
    "truncated": packet(advert()[:5]),
    "addresses": packet(codec.encode(codec.Advert(51, 254, 10, ADDRS[:1]), ROGUE, GROUP)),
}


@pytest.fixture(scope="module")
def plain() -> Iterator[Pair]:
    reason = _missing()
    if reason:
        pytest.fail(f"netns tier {reason}")
    with Topology() as topo:
        d1, d2 = pair(topo)
        yield topo, d1, d2


def vrrp_child(topo: Topology, d: LvsmonDirector) -> int:
    """The director's VRRP process (`python -m lvsmon.ha.child`)."""
    found = []
    for pid in set(topo.run_ns_pids(d.host)) - {d.proc.pid}:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if b"lvsmon.ha.child" in cmdline:
            found.append(pid)
    assert len(found) == 1, found
    return found[0]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(topo: Topology, rate: int, seconds: float, packets: list[dict[str, object]]) -> int:
    argv = topo.exec_argv("client", [PYTHON, str(HERE / "flood.py"), "eth0", str(rate)])
    out = subprocess.run(
        [*argv, str(seconds)],
        input=json.dumps(packets).encode(),
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=seconds + 30,
    ).stdout.decode()
    return int(out.split()[0].removeprefix("sent="))


def rejected(d: LvsmonDirector) -> int:
    return sum(d.group()["rejected"].values())


def settled(d: LvsmonDirector) -> None:
    """Wait until the reject count stops moving (drops are reported with the next read)."""
    last = -1
    for _ in range(20):
        time.sleep(0.3)
        now = rejected(d)
        if now == last:
            return
        last = now


def test_a_flood_of_junk_adverts_changes_no_role_and_is_counted(plain: Pair) -> None:
    topo, d1, d2 = plain
    both = (d1, d2)
    children = [vrrp_child(topo, d) for d in both]
    transitions = [d.group()["transitions"] for d in both]
    counts = [rejected(d) for d in both]
    cpu = [cpu_seconds(pid) for pid in children]
    logged = [d.proc.output().count("advert rejected") for d in both]
    sent = flood(topo, RATE, SECONDS, list(JUNK.values()))
    assert sent >= RATE * SECONDS * 0.9, f"the flood sent only {sent}"
    for i, d in enumerate(both):
        settled(d)
        group = d.group()
        assert group["transitions"] == transitions[i], f"{d.host} changed role under the flood"
        assert vrrp_child(topo, d) == children[i], f"{d.host}'s VRRP process was restarted"
        counted = rejected(d) - counts[i]
        used = cpu_seconds(children[i]) - cpu[i]
        print(
            f"\n{d.host}: flood {sent / SECONDS:.0f}/s for {SECONDS:.0f} s: "
            f"{counted} rejects counted, VRRP CPU {used / SECONDS:.0%} of a core"
        )
        # every packet is counted: read and rejected, or dropped unread ("overflow")
        assert counted >= sent, (counted, sent, d.group()["rejected"])
        assert set(group["rejected"]) >= set(JUNK), group["rejected"]
        # one log line per reason per minute, whatever the rate
        assert d.proc.output().count("advert rejected") - logged[i] <= len(JUNK)
    assert d1.state() == "master" and d2.state() == "backup"
    assert d1.holds_vip() and not d2.holds_vip()


def test_foreign_priority_255_is_refused_by_directors_that_name_their_peers() -> None:
    reason = _missing()
    if reason:
        pytest.fail(f"netns tier {reason}")
    with Topology(with_real_servers=False) as topo:
        d1, d2 = pair(
            topo,
            first=lvsmon_config(
                priority=150, ipv6=False, group_extra=[f'unicast_peers = ["{PUBLIC["dir2"]}"]']
            ),
            second=lvsmon_config(
                priority=100, ipv6=False, group_extra=[f'unicast_peers = ["{PUBLIC["dir1"]}"]']
            ),
        )
        transitions = d1.group()["transitions"]
        owner = advert(priority=255)
        to_dir1 = [
            packet(owner),
            *({**packet(_unicast(owner, PUBLIC[h])), "dst": PUBLIC[h]} for h in ("dir1", "dir2")),
        ]
        topo.inject(to_dir1 * 3, gap=0.02)
        for d in (d1, d2):
            wait_for(
                f"{d.host} refuses the foreign owner",
                lambda: d.group()["rejected"].get("source", 0) >= 3,  # noqa: B023
                3,
            )
        assert d1.group()["transitions"] == transitions
        assert d1.state() == "master" and d2.state() == "backup" and d1.holds_vip()


def _unicast(data: bytes, dst: str) -> bytes:
    """The advert re-checksummed for a unicast destination (the pseudo-header changes)."""
    zeroed = data[:6] + b"\0\0" + data[8:]
    ph = codec.pseudo_header(ROGUE, ipaddress.IPv4Address(dst), len(zeroed))
    return data[:6] + codec.checksum(ph + zeroed).to_bytes(2, "big") + data[8:]
