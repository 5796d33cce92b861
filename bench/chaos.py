#!/usr/bin/env python3
"""Chaos: the fault sequence of issue 14 under steady client load, then a soak (root).

The netns topology of tests/netns: a client, two directors running the whole
daemon (`lvsmon run`: proxy data plane, tcp health checks, failover group,
100 ms adverts), two real servers that greet and echo. Throughout, the client
makes a new connection through the VIP every 10 ms (prober.py: a failed one is
a failed request) and holds 8 connections that echo every 100 ms and close
cleanly after LIFETIME (holder.py: one that breaks is a lost connection; the
lifetime is shorter than the directors' 2 s shutdown_grace, so a planned
handover can drain them: failover_group.handover_forward is on). Each fault is applied to the
master, then the pair must settle (dir1 master, dir2 backup, one VIP holder;
dir2 alone after a handover or a crash); one line per fault:

    fault=NAME planned=yes|no survived=yes|no failed_requests=F lost_connections=K
        double_master_s=S settle_s=T

Planned operations (reload, SIGHUP storm, drain, graceful handover) must lose
nothing. Then a soak of reloads (one a second) and connection churn (100
connections/s) on the master for --soak seconds (600 for the reported figure),
and the daemon's resident memory growth after a warm-up. Last, --crashes rounds
each (alternating) of a kill -9 of the master's whole process group, on fresh
lvsmon pairs and on keepalived pairs (the VIP answered by a stand-in listener),
with the same client: requests failed in the 3 s after the kill, medians
compared (keepalived is the anchor). Last lines:

    faults=N survived=N lost_connections=K failed_requests=F double_master_s=S
    crash_failed_requests lvsmon=A keepalived=B ratio=A/B      (medians)
    rss_growth_pct=P

Needs: root, keepalived, nftables (scripts/install-test-deps).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netns.test_daemon_failover import daemon_config, role
from tests.netns.test_vrrp_flood import vrrp_child
from tests.netns.topology import (
    HERE,
    PORT,
    PYTHON,
    VIP,
    Director,
    LvsmonDirector,
    Proc,
    Topology,
    keepalived_config,
    wait_for,
)

CHECK = '[virtual_server.health_check]\ntype = "tcp"\ninterval = "200ms"\ntimeout = "100ms"\n'
HELD = 8
LIFETIME = 1.5  # seconds a held connection lives (< shutdown_grace = 2 s)
FORWARD = 'handover_forward = "10s"\n'  # the new master sends the old one's connections back
SETTLE = 30.0
CRASH_WINDOW = 3.0  # failed requests after a kill -9 are counted this long, both daemons


def config(topo: Topology, host: str, priority: int, weight2: int = 1) -> str:
    text = daemon_config(topo, host, priority).replace(
        'scheduler = "rr"\n', 'scheduler = "rr"\n' + CHECK
    )
    text = text.replace('garp_interval = "5ms"\n', 'garp_interval = "5ms"\n' + FORWARD)
    if weight2 != 1:  # rs2 is the second real server block
        head, sep, tail = text.rpartition("[[virtual_server.real_server]]")
        text = (
            head + sep + tail.replace(f"port = {PORT}\n", f"port = {PORT}\nweight = {weight2}\n", 1)
        )
    return text


@dataclass
class Window:
    name: str
    planned: bool
    start: float
    end: float = 0.0
    survived: bool = False
    settle_s: float = 0.0


@dataclass
class Run:
    topo: Topology
    daemons: dict[str, Director] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    holders: list[tuple[float, bool, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    # --- the directors ---

    def start(self, host: str, priority: int, weight2: int = 1) -> LvsmonDirector:
        path = self.topo.workdir / f"{host}.daemon.toml"
        path.write_text(config(self.topo, host, priority, weight2))
        proc = self.topo.spawn(
            host, "lvsmon-run", [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(path)]
        )
        d = LvsmonDirector(self.topo, host, proc)
        self.daemons[host] = d
        wait_for(f"{host} daemon", lambda: role(self.topo, host) != "", 20, every=0.1)
        return d

    def reload(self, host: str, weight2: int = 1, valid: bool = True) -> None:
        path = self.topo.workdir / f"{host}.daemon.toml"
        text = config(self.topo, host, 150 if host == "dir1" else 100, weight2)
        if not valid:
            text = text.replace('scheduler = "rr"', 'scheduler = "wlcc"')
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        self.daemons[host].proc.popen.send_signal(signal.SIGHUP)

    def running(self, host: str) -> bool:
        d = self.daemons.get(host)
        return d is not None and d.proc.alive()

    def settled(self, master: str = "dir1") -> bool:
        """`master` is master and the only running director holding the VIP; the
        other, if running, is backup."""
        other = "dir2" if master == "dir1" else "dir1"
        if role(self.topo, master) != "master" or not self.topo.holds(master):
            return False
        if not self.running(other):
            return True
        return role(self.topo, other) == "backup" and not self.topo.holds(other)

    # --- who holds the VIP, sampled all along ---

    def watch(self) -> None:
        def sample() -> None:
            while not self._stop.is_set():
                # a killed director's address lingers (nothing removes it): not a master
                try:
                    one = self.running("dir1") and self.topo.holds("dir1")
                    two = self.running("dir2") and self.topo.holds("dir2")
                except RuntimeError:
                    return
                self.holders.append((time.monotonic(), one, two))
                time.sleep(0.02)

        threading.Thread(target=sample, daemon=True).start()

    def double_master(self, start: float, end: float) -> float:
        both = 0.0
        for (t0, a, b), (t1, _, _) in zip(self.holders, self.holders[1:], strict=False):
            if start <= t0 <= end and a and b:
                both += t1 - t0
        return both

    # --- one fault ---

    def fault(
        self, name: str, planned: bool, act: Callable[[], None], master: str = "dir1"
    ) -> None:
        w = Window(name, planned, time.monotonic())
        act()
        acted = time.monotonic()
        try:
            wait_for(f"{name}: settled", lambda: self.settled(master), SETTLE, every=0.1)
            w.survived = True
        except AssertionError:
            w.survived = False
        w.end = time.monotonic() + 0.5  # requests in flight at the settle
        w.settle_s = w.end - 0.5 - acted
        time.sleep(0.5)
        self.windows.append(w)
        print(f"  ... {name} done ({'settled' if w.survived else 'NOT settled'})", file=sys.stderr)


def flood_of_reloads(run: Run, count: int, seconds: float) -> None:
    for i in range(count):
        run.reload("dir1", weight2=1 + i % 3, valid=i % 2 == 0)
        time.sleep(seconds / count)
    run.reload("dir1")


def drain(run: Run) -> None:
    run.reload("dir1", weight2=0)
    time.sleep(2.0)
    run.reload("dir1")


def flap_real_server(run: Run, echo: dict[str, Proc], times: int) -> None:
    topo = run.topo
    for _ in range(times):
        Topology._kill(echo["rs1"])
        time.sleep(0.5)
        echo["rs1"] = start_echo(topo, "rs1")
        time.sleep(0.5)


def kill_vrrp_child(run: Run) -> None:
    d1 = run.daemons["dir1"]
    assert isinstance(d1, LvsmonDirector)
    os.kill(vrrp_child(run.topo, d1), signal.SIGKILL)
    time.sleep(0.5)


def freeze(run: Run, seconds: float) -> None:
    group = -run.daemons["dir1"].proc.pid
    os.kill(group, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(group, signal.SIGCONT)


def partition(run: Run, seconds: float) -> None:
    run.topo.partition()
    time.sleep(seconds)
    run.topo.heal()


def flap_link(run: Run, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run.topo.link("dir1", "eth0", up=False)
        time.sleep(0.1)
        run.topo.link("dir1", "eth0", up=True)
        time.sleep(0.1)


def handover(run: Run) -> None:
    """SIGTERM: the master hands over (priority 0, keeps the VIP until relieved)."""
    run.daemons["dir1"].terminate()
    wait_for("dir2 master", lambda: role(run.topo, "dir2") == "master", 5, every=0.05)
    time.sleep(1.0)


def rejoin(run: Run) -> None:
    run.start("dir1", 150)


def crash(run: Run) -> None:
    run.daemons["dir1"].kill9()
    wait_for("dir2 master", lambda: role(run.topo, "dir2") == "master", 5, every=0.05)
    time.sleep(1.0)


def start_echo(topo: Topology, host: str) -> Proc:
    proc = topo.spawn(host, "echo", [PYTHON, str(HERE / "echo_server.py"), host, str(PORT)])
    wait_for(f"echo on {host}", lambda: "listening" in proc.output(), 10)
    return proc


def client_lines(proc: Proc) -> list[tuple[float, str]]:
    out = []
    for line in proc.output().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2:
            try:
                out.append((float(parts[0]), parts[1]))
            except ValueError:
                continue
    return out


def count(lines: list[tuple[float, str]], kind: str, start: float, end: float) -> int:
    return sum(1 for t, k in lines if k == kind and start <= t <= end)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def soak(run: Run, seconds: float) -> float:
    """Reloads every second and the client's churn; RSS growth after a warm-up."""
    pid = run.daemons["dir1"].proc.pid
    warm = max(30.0, seconds * 0.1)
    began = time.monotonic()
    base = 0
    i = 0
    while time.monotonic() - began < seconds:
        if not base and time.monotonic() - began >= warm:
            base = rss_kib(pid)
        run.reload("dir1", weight2=1 + i % 3)
        i += 1
        time.sleep(1.0)
    end = rss_kib(pid)
    base = base or end
    print(f"soak: {seconds:.0f} s, {i} reloads, RSS {base} -> {end} KiB", file=sys.stderr)
    return (end - base) / base * 100


def crash_once(topo: Topology, impl: str) -> int:
    """A fresh pair of `impl`, a steady client, kill -9 of the master's whole process
    group: the requests that fail in the CRASH_WINDOW after the kill."""
    if impl == "lvsmon":
        run = Run(topo)
        run.start("dir1", 150)
        wait_for("dir1 master", lambda: role(topo, "dir1") == "master", 10, every=0.1)
        run.start("dir2", 100)
        wait_for("settled", run.settled, 10, every=0.1)
        master, backup = run.daemons["dir1"], run.daemons["dir2"]
    else:  # keepalived, the VIP answered by a stand-in listener on each director
        master = topo.keepalived("dir1", keepalived_config(priority=150))
        wait_for("keepalived dir1 master", master.holds_vip, 10)
        backup = topo.keepalived("dir2", keepalived_config(priority=100))
        time.sleep(1.0)
    prober = topo.prober(interval=0.01, timeout=0.25)
    time.sleep(1.0)
    killed = time.monotonic()
    master.kill9()
    wait_for(f"{impl} dir2 takes over", backup.holds_vip, 5)
    time.sleep(max(0.0, killed + CRASH_WINDOW - time.monotonic()))
    attempts = prober.stop()
    for d in (master, backup):
        Topology._kill(d.proc)
        if d.listener is not None:
            Topology._kill(d.listener)
    for host in ("dir1", "dir2"):  # what the killed one left behind
        topo.ip(host, "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
    return sum(1 for t, ok, _ in attempts if killed <= t <= killed + CRASH_WINDOW and not ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", type=float, default=600.0, help="soak seconds (0: none)")
    parser.add_argument("--flap", type=float, default=30.0, help="link flap seconds (5 Hz)")
    parser.add_argument("--crashes", type=int, default=7, help="crash rounds per daemon")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/chaos.py needs root (network namespaces)")
    with Topology() as topo:
        echo = {rs: start_echo(topo, rs) for rs in ("rs1", "rs2")}
        run = Run(topo)
        run.start("dir1", 150)
        wait_for("dir1 master", lambda: role(topo, "dir1") == "master", 10, every=0.1)
        run.start("dir2", 100)
        wait_for("settled", run.settled, 10, every=0.1)
        prober = topo.prober(interval=0.01, timeout=0.25)
        holder = topo.spawn(
            "client",
            "holder",
            [PYTHON, str(HERE / "holder.py"), VIP, str(PORT), str(HELD), "0.1", str(LIFETIME)],
            stdin=subprocess.PIPE,
        )
        run.watch()
        time.sleep(2.0)
        run.fault("none_baseline_5s", True, lambda: time.sleep(5.0))
        run.fault("reload", True, lambda: run.reload("dir1", weight2=2))
        run.fault("sighup_storm_50_in_10s", True, lambda: flood_of_reloads(run, 50, 10.0))
        run.fault("drain_real_server", True, lambda: drain(run))
        run.fault("real_server_flap", False, lambda: flap_real_server(run, echo, 5))
        run.fault("kill9_vrrp_child", False, lambda: kill_vrrp_child(run))
        run.fault("sigstop_past_master_down", False, lambda: freeze(run, 1.0))
        run.fault("partition_and_heal", False, lambda: partition(run, 3.0))
        run.fault(f"link_flap_5hz_{args.flap:.0f}s", False, lambda: flap_link(run, args.flap))
        run.fault("graceful_handover", True, lambda: handover(run), master="dir2")
        run.fault("rejoin_and_preempt", False, lambda: rejoin(run))
        run.fault("kill9_master_daemon", False, lambda: crash(run), master="dir2")
        run.fault("restart_after_crash", False, lambda: rejoin(run))
        growth = soak(run, args.soak) if args.soak > 0 else float("nan")
        run._stop.set()
        attempts = prober.stop()
        assert holder.popen.stdin is not None
        holder.popen.stdin.close()
        holder.popen.wait(5)
        held = client_lines(holder)
        fails = [(t, "fail") for t, ok, _ in attempts if not ok]
        why = [(t, reason) for t, ok, reason in attempts if not ok]
        totals = {"failed": 0, "lost": 0, "double": 0.0, "survived": 0}
        for w in run.windows:
            failed = count(fails, "fail", w.start, w.end)
            lost = count(held, "lost", w.start, w.end)
            double = run.double_master(w.start, w.end)
            totals["failed"] += failed
            totals["lost"] += lost
            totals["double"] += double
            totals["survived"] += w.survived
            print(
                f"fault={w.name} planned={'yes' if w.planned else 'no'} "
                f"survived={'yes' if w.survived else 'no'} failed_requests={failed} "
                f"lost_connections={lost} double_master_s={double:.2f} settle_s={w.settle_s:.2f}"
            )
            reasons = sorted({r for t, r in why if w.start <= t <= w.end})
            if reasons:
                print(f"  failed requests: {', '.join(reasons)}", file=sys.stderr)
        for d in run.daemons.values():
            Topology._kill(d.proc)
        rounds: dict[str, list[int]] = {"lvsmon": [], "keepalived": []}
        for i in range(args.crashes):  # alternating, so drift in the machine hits both
            for impl in ("lvsmon", "keepalived") if i % 2 == 0 else ("keepalived", "lvsmon"):
                rounds[impl].append(crash_once(topo, impl))
        for proc in echo.values():
            Topology._kill(proc)
    print(
        f"faults={len(run.windows)} survived={totals['survived']} "
        f"lost_connections={totals['lost']} failed_requests={totals['failed']} "
        f"double_master_s={totals['double']:.2f}"
    )
    ours, theirs = statistics.median(rounds["lvsmon"]), statistics.median(rounds["keepalived"])
    print(f"crash_rounds lvsmon={rounds['lvsmon']} keepalived={rounds['keepalived']}")
    ratio = ours / theirs if theirs else float("nan")
    print(f"crash_failed_requests lvsmon={ours:g} keepalived={theirs:g} ratio={ratio:.2f}")
    print(f"rss_growth_pct={growth:.1f}")


if __name__ == "__main__":
    main()
