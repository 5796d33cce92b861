#!/usr/bin/env python3
"""Scale-out over BGP: ECMP spread, flow shift on a director's death against lvsmon's own
VRRP failover (same timers, same run), flows moved when a director joins, and (VM tier)
established connections surviving a director loss with IPVS mh + sloppy_tcp. Root.

The fleet is tests/netns/fleet.py: a BIRD router (ECMP, L4 hash) in front of three
directors, each lvsmon (proxy data plane, mh) + BIRD with BFD at 100 ms x 3.

  spread     10,000 connections from fresh source ports; each director's share
  join       d3 stopped; one connection from each of 2,000 fixed source ports; d3 joins;
             the same ports again: the fraction whose real server changed (and, for
             scale, the fraction whose director changed)
  shift      48 client flows (fixed source ports) connect every 10 ms; a director dies:
             kill -9 of its lvsmon and BIRD with its BGP and BFD packets dropped, so only
             BFD's silence can tell the router; time to the first success of EVERY flow that was on
             it, median over runs. Also lvsmon alone killed (its liveness device goes,
             BIRD withdraws at once).
  anchor     bench/failover.py's kill -9 of a VRRP master at 100 ms adverts, lvsmon
             both sides (3 x advert + skew is VRRP's detection; BFD's is 3 x 100 ms)
  vm         tests/vm/guest/bgp_fleet.py in the QEMU guest: IPVS directors, mh +
             sloppy_tcp, one killed under long-lived connections (--no-vm skips it)

Prints, last:
  ecmp_spread_max_dev=   largest |share - 1/N| / (1/N)          (bar <= 0.15)
  shift_s=               director death (BFD), median
  ratio_shift_vs_vrrp=   shift_s / VRRP failover median          (bar <= 1.0)
  flows_survived_fraction=  VM tier                              (bar >= 0.99)
  flows_moved_on_join=   real server changed when d3 joined      (Maglev: ~0)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns.fleet import (  # noqa: E402
    HERE,
    PORT,
    VIP,
    Fleet,
    FleetDirector,
    director_of,
)
from tests.netns.topology import PYTHON, Proc, wait_for  # noqa: E402

ALL = {"d1", "d2", "d3"}
SILENT = """table inet dead {
  chain i {
    type filter hook input priority -300;
    tcp dport 179 drop; tcp sport 179 drop; udp dport { 3784, 3785 } drop
  }
  chain o {
    type filter hook output priority -300;
    tcp dport 179 drop; tcp sport 179 drop; udp dport { 3784, 3785 } drop
  }
}
"""
FLOWS, FIRST_PORT, EVERY = 48, 30000, 0.01


def start_fleet(fleet: Fleet) -> None:
    for rs in ("rs1", "rs2"):
        fleet.real_server(rs)
    for d in fleet.directors:
        fleet.lvsmon(d, fleet.director_config(d))
    fleet.wait_next_hops(ALL, timeout=60)


def spread(fleet: Fleet, count: int) -> float:
    proc = fleet.flows(workers=16, count=count, hold_ms=0)
    results = fleet.results(proc, timeout=600)
    served = Counter(director_of(a) for _, ok, a in results if ok)
    failed = sum(1 for _, ok, _ in results if not ok)
    n = len(fleet.directors)
    total = sum(served.values())
    dev = max(abs(served[d.name] / total - 1 / n) * n for d in fleet.directors)
    print(f"spread: {dict(sorted(served.items()))} of {total} ({failed} failed)", flush=True)
    return dev


def sweep(fleet: Fleet, n: int) -> dict[int, str]:
    argv = [PYTHON, str(HERE / "fleet_apps.py"), "sweep", VIP, str(PORT), "20000", str(n)]
    proc = fleet.spawn("client", f"sweep{len(fleet.procs)}", argv)
    proc.popen.wait(300)
    out = {}
    for line in proc.output().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] == "ok":
            out[int(parts[0])] = f"{parts[2]} {parts[3]}"
    return out


def join(fleet: Fleet, n: int) -> tuple[float, float]:
    d3 = fleet.directors[2]
    d3.kill9()
    fleet.wait_next_hops({"d1", "d2"})
    before = sweep(fleet, n)
    restart(fleet, d3)
    after = sweep(fleet, n)
    ports = before.keys() & after.keys()
    moved_rs = sum(1 for p in ports if before[p].split()[0] != after[p].split()[0])
    moved_dir = sum(1 for p in ports if director_of(before[p]) != director_of(after[p]))
    print(
        f"join: {len(ports)} flows answered both times; director changed for {moved_dir}, "
        f"real server changed for {moved_rs}",
        flush=True,
    )
    return moved_rs / len(ports), moved_dir / len(ports)


def restart(fleet: Fleet, d: FleetDirector) -> None:
    if d.bird is None or not d.bird.alive():
        fleet.start_bird(d)
    assert d.config_path is not None
    fleet.lvsmon(d, d.config_path.read_text())
    fleet.wait_next_hops(ALL, timeout=60)


def fixed_flows(fleet: Fleet) -> Proc:
    argv = [
        PYTHON,
        str(HERE / "fleet_apps.py"),
        "fixed",
        VIP,
        str(PORT),
        str(FIRST_PORT),
        str(FLOWS),
        str(EVERY),
    ]
    import subprocess

    return fleet.spawn("client", f"fixed{len(fleet.procs)}", argv, stdin=subprocess.PIPE)


def attempts(proc: Proc) -> list[tuple[float, int, bool, str]]:
    out = []
    for line in proc.output().splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3 and parts[2] in ("ok", "fail"):
            out.append(
                (
                    float(parts[0]),
                    int(parts[1]),
                    parts[2] == "ok",
                    parts[3] if len(parts) > 3 else "",
                )
            )
    return out


def shift(fleet: Fleet, d: FleetDirector, box: bool) -> float:
    """Seconds from the death of `d` until every flow that was on it has succeeded again."""
    proc = fixed_flows(fleet)
    wait_for(
        "every flow answered",
        lambda: len({p for _, p, ok, _ in attempts(proc) if ok}) == FLOWS,
        30,
        0.05,
    )
    time.sleep(0.3)
    if box:  # the director dies mid-air: no BGP or BFD packet leaves it, so nothing but
        # BFD tells the router (its kernel still resets connections, as the dead VRRP
        # master's does in the anchor)
        fleet.nft(d.name, SILENT)
    killed = time.monotonic()
    d.kill9()
    if box:
        assert d.bird is not None
        d.bird.popen.kill()
        d.bird.popen.wait(5)
    on_it: set[int] = set()
    last: dict[int, str] = {}
    for t, port, ok, answer in attempts(proc):
        if t < killed and ok:
            last[port] = director_of(answer)
    on_it = {p for p, who in last.items() if who == d.name}

    def done() -> bool:
        seen = {p for t, p, ok, _ in attempts(proc) if ok and t >= killed}
        return on_it <= seen

    wait_for("every flow of the dead director back", done, 30, 0.02)
    assert proc.popen.stdin is not None
    proc.popen.stdin.close()
    proc.popen.wait(10)
    firsts: dict[int, float] = {}
    for t, port, ok, _ in attempts(proc):
        if ok and t >= killed and port in on_it and port not in firsts:
            firsts[port] = t - killed
    took = max(firsts.values())
    if box:
        fleet.nft(d.name, "delete table inet dead\n")
    restart(fleet, d)
    return took


def vrrp_anchor(runs: int) -> list[float]:
    from bench.failover import kill_run

    return [kill_run("lvsmon", 0.1) for _ in range(runs)]


def vm_part() -> float | None:
    from tests.vm import vmharness

    assets = vmharness.ensure_assets(progress=lambda m: print(f"vm: {m}", file=sys.stderr))
    result = vmharness.run_in_vm(
        [sys.executable, "-m", "tests.vm.guest.bgp_fleet"],
        cwd=str(REPO),
        timeout=1800,
        assets=assets,
    )
    print(result.output[-3000:], flush=True)
    for line in result.output.splitlines():
        if line.startswith("flows_survived_fraction="):
            return float(line.split("=", 1)[1].split()[0])
    return None


def ms(s: float) -> str:
    return f"{s * 1000:.0f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--join-flows", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5, help="director deaths (and VRRP failovers)")
    p.add_argument("--no-vm", action="store_true")
    args = p.parse_args()
    with Fleet() as fleet:
        start_fleet(fleet)
        dev = spread(fleet, args.connections)
        print(f"ecmp_spread_max_dev={dev:.3f}", flush=True)
        moved_rs, moved_dir = join(fleet, args.join_flows)
        print(
            f"flows_moved_on_join={moved_rs:.4f} (director changed for {moved_dir:.3f})", flush=True
        )
        box_times, kill_times = [], []
        for n in range(args.runs):
            d = fleet.directors[n % 3]
            box_times.append(shift(fleet, d, box=True))
            print(
                f"director death run {n + 1} ({d.name}): every flow back in {ms(box_times[-1])}",
                flush=True,
            )
            kill_times.append(shift(fleet, d, box=False))
            print(
                f"lvsmon kill -9 run {n + 1} ({d.name}): every flow back in {ms(kill_times[-1])}",
                flush=True,
            )
    vrrp = vrrp_anchor(args.runs)
    for n, t in enumerate(vrrp, start=1):
        print(f"VRRP failover run {n} (100 ms adverts): {ms(t)}", flush=True)
    shift_s = statistics.median(box_times)
    print(
        f"shift_lvsmon_kill_s={statistics.median(kill_times):.3f} (min-max "
        f"{min(kill_times):.3f}-{max(kill_times):.3f})"
    )
    print(
        f"vrrp_failover_s={statistics.median(vrrp):.3f} (min-max {min(vrrp):.3f}-{max(vrrp):.3f})"
    )
    survived = None if args.no_vm else vm_part()
    print(f"ecmp_spread_max_dev={dev:.3f}")
    print(
        f"shift_s={shift_s:.3f} (min-max {min(box_times):.3f}-{max(box_times):.3f}, BFD 100 ms x 3)"
    )
    print(f"ratio_shift_vs_vrrp={shift_s / statistics.median(vrrp):.3f}")
    print(f"flows_survived_fraction={'n/a (--no-vm)' if survived is None else f'{survived:.4f}'}")
    print(f"flows_moved_on_join={moved_rs:.4f}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
