#!/usr/bin/env python3
"""Failover time: lvsmon against keepalived, in the same run, same topology (root).

The netns topology of tests/netns (client, two directors, two real servers;
namespaces with a per-run tag, always deleted). For each advert interval
(1 s and 100 ms) and each implementation, in alternating order:

  kill -9   both directors run the same implementation (dir1 priority 150,
            dir2 100). The master's whole process group is SIGKILLed right
            after one of its adverts reaches the client (a fixed phase, so
            the comparison is not drowned in where the kill falls in the
            interval); the client tries to connect to the VIP every 5 ms;
            measured: time from the kill to the first connection answered by
            the backup.
  SIGTERM   a planned stop of the master: failed connection attempts (each
            attempt times out after 250 ms) and the longest time without a
            successful connection while the backup takes over (lvsmon keeps
            the VIP until the backup is master; keepalived drops it at once
            and the backup needs its skew time).

Then the advert jitter of lvsmon's VRRP process while its parent's loop is
blocked and the CPUs are oversubscribed. Prints medians, and last:

  ratio_failover=X.XX    (lvsmon / keepalived median, the worse of the two intervals)

Needs: root, keepalived, nftables (scripts/install-test-deps).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netns.jitter import measure
from tests.netns.topology import (
    HERE,
    PYTHON,
    VIP,
    Director,
    LvsmonDirector,
    Topology,
    failures,
    first_success_after,
    keepalived_config,
    lvsmon_config,
    wait_for,
)

IMPLS = ("lvsmon", "keepalived")
PROBE_EVERY = 0.005


def start(topo: Topology, impl: str, host: str, priority: int, advert: float) -> Director:
    if impl == "lvsmon":
        return topo.lvsmon(host, lvsmon_config(priority=priority, advert=f"{advert * 1000:g}ms"))
    return topo.keepalived(host, keepalived_config(priority=priority, advert=advert))


def settle(topo: Topology, impl: str, advert: float) -> tuple[Director, Director]:
    """dir1 master, then dir2 backup (it has heard dir1)."""
    master = start(topo, impl, "dir1", 150, advert)
    wait_for("dir1 master", master.holds_vip, 10 + 5 * advert)
    backup = start(topo, impl, "dir2", 100, advert)
    if isinstance(backup, LvsmonDirector):
        backup.wait_state("backup", 10)
        wait_for(
            "dir2 hears dir1",
            lambda: backup.group().get("adverts_received", 0) >= 2,
            5 * advert + 2,
        )
    else:
        wait_for("keepalived backup", lambda: "Entering BACKUP STATE" in backup.proc.output(), 10)
        time.sleep(2 * advert + 0.1)
    assert not topo.holds("dir2"), "dir2 took the VIP: not a clean master/backup pair"
    assert topo.ping("client", VIP)
    return master, backup


def after_next_advert(topo: Topology, action: Callable[[], None], timeout: float) -> float:
    """Run `action` the moment the next advert of dir1 reaches the client; its time."""
    argv = topo.exec_argv(
        "client", [PYTHON, str(HERE / "capture.py"), "eth0", str(timeout), "--stream"]
    )
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as cap:
        assert cap.stdout is not None and cap.stderr is not None
        cap.stderr.readline()  # capturing
        for line in cap.stdout:
            _, source, _, priority = line.split()
            if source == "192.0.2.2" and int(priority):
                at = time.monotonic()
                action()
                cap.kill()
                return at
    raise AssertionError("no advert from dir1")


def kill_run(impl: str, advert: float) -> float:
    with Topology() as topo:
        master, _ = settle(topo, impl, advert)
        prober = topo.prober(interval=PROBE_EVERY)
        time.sleep(0.2)
        killed = after_next_advert(topo, master.kill9, 3 * advert + 2)
        wait_for(
            "a connection via dir2",
            lambda: first_success_after(_peek(prober), killed, "dir2") is not None,
            5 * advert + 5,
        )
        took = first_success_after(prober.stop(), killed, "dir2")
        assert took is not None
        return took


def _peek(prober: object) -> list[tuple[float, bool, str]]:
    out = prober.proc.output()  # type: ignore[attr-defined]
    attempts = []
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in ("ok", "fail"):
            attempts.append((float(parts[0]), parts[1] == "ok", parts[2]))
    return attempts


def graceful_run(impl: str, advert: float) -> tuple[int, int, float]:
    """(failed attempts, attempts, longest time without a success) around a SIGTERM."""
    with Topology() as topo:
        master, _ = settle(topo, impl, advert)
        prober = topo.prober(interval=PROBE_EVERY)
        time.sleep(0.2 + random.uniform(0, advert))
        stopped = time.monotonic()
        master.terminate(timeout=10 + 5 * advert)
        wait_for("VIP on dir2", lambda: topo.holds("dir2"), 5 * advert + 5)
        time.sleep(0.3)
        attempts = prober.stop()
        window = [a for a in attempts if a[0] >= stopped - 0.2]
        successes = [t for t, ok, _ in window if ok]
        gap = max((b - a for a, b in itertools.pairwise(successes)), default=0.0)
        return failures(window), len(window), gap


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="kill -9 runs per implementation at 100 ms")
    p.add_argument("--runs-1s", type=int, default=3, help="kill -9 runs per implementation at 1 s")
    p.add_argument("--graceful-runs", type=int, default=2)
    p.add_argument("--no-jitter", action="store_true")
    args = p.parse_args()
    ratios: dict[str, float] = {}
    for advert, runs, label in ((1.0, args.runs_1s, "1s"), (0.1, args.runs, "100ms")):
        times: dict[str, list[float]] = {i: [] for i in IMPLS}
        for n in range(runs):
            for impl in IMPLS if n % 2 == 0 else IMPLS[::-1]:
                took = kill_run(impl, advert)
                times[impl].append(took)
                print(f"kill -9 {label} run {n + 1} {impl}: {ms(took)} ms", flush=True)
        medians = {i: statistics.median(t) for i, t in times.items()}
        for impl in IMPLS:
            spread = f"{ms(min(times[impl]))}-{ms(max(times[impl]))}"
            print(
                f"failover_{impl}_{label}_ms={ms(medians[impl])} (min-max {spread}, "
                f"{len(times[impl])} runs)"
            )
        ratios[label] = medians["lvsmon"] / medians["keepalived"]
        print(f"ratio_failover_{label}={ratios[label]:.3f}", flush=True)
        for impl in IMPLS:
            runs = [graceful_run(impl, advert) for _ in range(args.graceful_runs)]
            print(
                f"graceful_failed_{impl}_{label}="
                + ",".join(f"{f}/{n}" for f, n, _ in runs)
                + f" (failed/attempts, an attempt every {ms(PROBE_EVERY)} ms; longest time "
                "without a successful connection: "
                + ", ".join(f"{ms(g)} ms" for _, _, g in runs)
                + ")",
                flush=True,
            )
    if not args.no_jitter:
        with Topology() as topo:
            idle = measure(topo, seconds=3.0, busy=False)
        with Topology() as topo:
            busy = measure(topo, seconds=5.0, busy=True)
        print(f"advert_jitter_idle: {idle}")
        print(f"advert_jitter_loaded: {busy}")
    print(f"ratio_failover={max(ratios.values()):.3f}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
