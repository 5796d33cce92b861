#!/usr/bin/env python3
"""lvsmon's kernel IPVS data plane against ipvsadm and node_exporter, in the same run.

Runs inside the QEMU guest (real IPVS); started on the host it boots the guest
through tests/vm/vmharness.py and runs itself there. Each side gets a fresh
network namespace, so each has its own empty IPVS table (deleted real servers
linger in a per-namespace trash list that would slow whoever goes second).

1. full sync: 1,000 virtual servers x 50 real servers from empty, lvsmon
   (snapshot + reconcile + apply, what the daemon does on start) against
   `ipvsadm -R` of the identical rules (lvsmon's own `save` rendering); both
   tables are then compared with `ipvsadm -Sn`;
2. incremental: one real server's weight, then 1% of the real servers' weights:
   the apply alone and the daemon's whole cycle (snapshot + reconcile + apply);
3. scrape: GET /metrics of the real daemon (`lvsmon run`) holding that table
   against node_exporter's ipvs collector (--collector.disable-defaults
   --collector.ipvs) in the same namespace, alternating.

Prints the figures, and last the ratios lvsmon/anchor:
  ratio_full_sync=X.XX   (target <= 1.5)
  ratio_scrape=X.XX      (target <= 3)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLONE_NEWNET = 0x40000000
ANCHOR_NS, LVSMON_NS = "lvsb-anchor", "lvsb-lvsmon"
METRICS_PORT, NODE_PORT = 19108, 19100


def on_host(argv: list[str]) -> int:
    from tests.vm import vmharness

    assets = vmharness.ensure_assets(progress=lambda m: print(m, file=sys.stderr))
    result = vmharness.run_in_vm(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        cwd=str(REPO),
        timeout=3600,
        memory_mb=2048,
        assets=assets,
    )
    sys.stdout.write(result.output)
    print(f"(guest boot {result.boot_seconds:.1f} s, total {result.total_seconds:.1f} s)")
    return result.returncode


def config_text(services: int, reals: int, state_file: str) -> str:
    lines = [
        "[daemon]",
        'dataplane = "ipvs"',
        f'metrics_listen = "127.0.0.1:{METRICS_PORT}"',
        'log_level = "warning"',
        "[daemon.ipvs]",
        f'state_file = "{state_file}"',
    ]
    for i in range(services):
        lines += [
            "[[virtual_server]]",
            f'name = "vs{i}"',
            f'address = "10.{100 + i // 250}.{i % 250}.1"',
            "port = 80",
            'scheduler = "wlc"',
        ]
        for j in range(reals):
            lines += [
                "[[virtual_server.real_server]]",
                f'address = "10.{j // 250}.{j % 250}.{2 + i % 250}"',
                "port = 8080",
                f"weight = {1 + (i + j) % 5}",
            ]
    return "\n".join(lines) + "\n"


def sh(*argv: str, data: str | None = None) -> str:
    return subprocess.run(argv, input=data, capture_output=True, text=True, check=True).stdout


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def fresh_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def scrape(port: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=600) as resp:
        body = resp.read()
    return time.perf_counter() - t0, len(body)


def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60),
        ):
            return
        time.sleep(0.5)
    raise SystemExit(f"nothing answers on port {port} after {timeout:.0f} s")


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def lvsmon_side(args: argparse.Namespace, cfg_path: Path) -> dict[str, float]:
    from lvsmon import config as configmod
    from lvsmon.dataplane.ipvs import IpvsDataPlane
    from lvsmon.desired import desired_table
    from lvsmon.model import ServiceKey, VirtualServer
    from lvsmon.reconcile import reconcile

    cfg = configmod.load(cfg_path)
    desired = desired_table(cfg)
    dp = IpvsDataPlane(cfg.daemon)
    await dp.configure(cfg)
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    await dp.start()
    snap = dp.snapshot()
    t1 = time.perf_counter()
    ops = reconcile(desired, snap.table(), snap.in_use)
    t2 = time.perf_counter()
    await dp.apply(ops)
    t3 = time.perf_counter()
    out["full_sync"] = t3 - t0
    outcome = dp.last_outcome
    assert outcome is not None
    print(
        f"lvsmon full sync: {t3 - t0:.2f} s (start+snapshot {t1 - t0:.2f} s, reconcile "
        f"{t2 - t1:.2f} s, apply {t3 - t2:.2f} s: {outcome.requests} requests in "
        f"{outcome.batches} sends)",
        flush=True,
    )

    t0 = time.perf_counter()
    snap = dp.snapshot()
    out["snapshot"] = time.perf_counter() - t0
    assert len(snap.services) == args.services
    assert sum(len(s.dests) for s in snap.services) == args.services * args.reals
    t0 = time.perf_counter()
    assert reconcile(desired, snap.table(), snap.in_use) == []
    out["reconcile_steady"] = time.perf_counter() - t0
    print(
        f"snapshot of {args.services}x{args.reals}: {out['snapshot']:.2f} s; steady-state "
        f"reconcile {out['reconcile_steady']:.2f} s",
        flush=True,
    )

    def changed(
        table: dict[ServiceKey, VirtualServer], every: int, bump: int
    ) -> dict[ServiceKey, VirtualServer]:
        new = {}
        n = 0
        for key, vs in table.items():
            reals = list(vs.real_servers)
            for k, rs in enumerate(reals):
                if n % every == 0:
                    reals[k] = dataclasses.replace(rs, weight=rs.weight + bump)
                n += 1
            new[key] = dataclasses.replace(vs, real_servers=tuple(reals))
        return new

    total = args.services * args.reals
    for label, every in (("one_change", total), ("1pct_change", 100)):
        applies, cycles = [], []
        for rnd in range(args.rounds):
            target = changed(desired, every, 1 + rnd)
            # the whole cycle the daemon runs on a reload
            t0 = time.perf_counter()
            snap = dp.snapshot()
            ops = reconcile(target, snap.table(), snap.in_use)
            ta = time.perf_counter()
            await dp.apply(ops)
            t1 = time.perf_counter()
            cycles.append(t1 - t0)
            applies.append(t1 - ta)
            assert len(ops) == (1 if every == total else total // every), len(ops)
        out[f"apply_{label}"] = statistics.median(applies)
        out[f"cycle_{label}"] = statistics.median(cycles)
        print(
            f"{label}: {len(ops)} operations: apply {ms(out[f'apply_{label}'])} ms, "
            f"whole cycle (snapshot+reconcile+apply) {ms(out[f'cycle_{label}'])} ms",
            flush=True,
        )
    # back to the configured weights so the daemon below starts converged
    snap = dp.snapshot()
    await dp.apply(reconcile(desired, snap.table(), snap.in_use))
    await dp.stop(0)  # leaves the table (flush_on_stop = false) for the daemon below
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--reals", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement")
    p.add_argument("--no-scrape", action="store_true", help="skip the /metrics comparison")
    args = p.parse_args()
    if os.environ.get("LVSMON_VM") != "1":
        return on_host(sys.argv[1:])

    from lvsmon import config as configmod
    from lvsmon.dataplane.base import snapshot_of
    from lvsmon.desired import desired_table
    from lvsmon.status import build_view, render_save

    tmp = Path(tempfile.mkdtemp(prefix="lvsb-"))
    state = tmp / "owned.json"
    cfg_path = tmp / "lvsmon.toml"
    cfg_path.write_text(config_text(args.services, args.reals, str(state)))
    cfg = configmod.load(cfg_path)
    rules = render_save(build_view(cfg, snapshot_of(desired_table(cfg))))
    sh("modprobe", "ip_vs")
    sh("modprobe", "ip_vs_wlc")
    print(
        f"table: {args.services} virtual servers x {args.reals} real servers "
        f"({rules.count(chr(10))} ipvsadm rules)",
        flush=True,
    )

    fresh_netns(ANCHOR_NS)
    t0 = time.perf_counter()
    sh("ip", "netns", "exec", ANCHOR_NS, "ipvsadm", "-R", data=rules)
    anchor = time.perf_counter() - t0
    print(f"ipvsadm -R: {anchor:.2f} s", flush=True)

    fresh_netns(LVSMON_NS)
    enter_netns(LVSMON_NS)
    res = asyncio.run(lvsmon_side(args, cfg_path))
    same = sh("ipvsadm", "-Sn") == sh("ip", "netns", "exec", ANCHOR_NS, "ipvsadm", "-Sn")
    print(f"ipvsadm -Sn of both tables identical: {same}", flush=True)
    subprocess.run(["ip", "netns", "del", ANCHOR_NS], check=False)

    ratio_scrape = None
    if not args.no_scrape:
        node = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        if node is None:
            raise SystemExit("prometheus-node-exporter is missing: scripts/install-test-deps")
        lvsmon = [str(Path(sys.executable).with_name("lvsmon")), "run", "-c", str(cfg_path)]
        nodeargs = [
            node,
            "--collector.disable-defaults",
            "--collector.ipvs",
            f"--web.listen-address=127.0.0.1:{NODE_PORT}",
        ]
        with running(lvsmon, tmp / "lvsmon.log") as d, running(nodeargs, tmp / "node.log") as n:
            t0 = time.perf_counter()
            wait_http(METRICS_PORT, d, 900, tmp / "lvsmon.log")
            print(
                f"daemon up (start + first sync of the full table) in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            wait_http(NODE_PORT, n, 120, tmp / "node.log")
            ours, theirs = [], []
            for _ in range(args.rounds):
                t, size = scrape(METRICS_PORT)
                ours.append(t)
                print(f"lvsmon /metrics: {t:.2f} s, {size} bytes", flush=True)
                t, size = scrape(NODE_PORT)
                theirs.append(t)
                print(f"node_exporter /metrics: {t:.2f} s, {size} bytes", flush=True)
        ratio_scrape = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
        res["scrape"] = statistics.median(ours)
        res["scrape_node_exporter"] = statistics.median(theirs)
        log = (tmp / "lvsmon.log").read_text()
        if log.strip():
            print("daemon log:\n" + log[-2000:])

    print(f"full_sync_lvsmon_s={res['full_sync']:.2f}")
    print(f"full_sync_ipvsadm_restore_s={anchor:.2f}")
    for label in ("one_change", "1pct_change"):
        print(f"apply_{label}_ms={ms(res[f'apply_{label}'])}")
        print(f"cycle_{label}_ms={ms(res[f'cycle_{label}'])}")
    print(f"snapshot_s={res['snapshot']:.2f}")
    if ratio_scrape is not None:
        print(f"scrape_lvsmon_s={res['scrape']:.2f}")
        print(f"scrape_node_exporter_s={res['scrape_node_exporter']:.2f}")
    print(f"ratio_full_sync={res['full_sync'] / anchor:.2f}")
    if ratio_scrape is not None:
        print(f"ratio_scrape={ratio_scrape:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
