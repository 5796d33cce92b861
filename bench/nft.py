#!/usr/bin/env python3
"""The nft data plane against HAProxy (and the proxy plane), in one netns topology.

Client, director and real server in network namespaces on veth
(tests/netns/nft_topology.py): one nginx on rs1, wrk in the client, and on the
director three balancers in front of that nginx, in alternating rounds:

  nft      lvsmon run, dataplane = "nft": DNAT in the kernel (VIP:8001)
  proxy    lvsmon run, dataplane = "proxy": the userspace data plane (VIP:8002)
  haproxy  HAProxy, mode tcp, one thread, splice (VIP:8003): the anchor

Two workloads, as bench/proxy.py: conn_rate (a new connection per request,
`Connection: close`, 128-byte body) and throughput (keep-alive, 8 MiB body).
The director's conntrack TIME_WAIT timeout is 1 s (the same for every balancer;
with the default 120 s the conntrack table fills at these rates).

Then, in a namespace of its own, what programming costs (the daemon's sync:
snapshot + reconcile + apply): 1,000 virtual servers x 50 real servers from
nothing in one transaction, then one weight change, for wrr (the IPVS bench's
table with wrr for wlc) and sh (a hash scheduler: changes write table entries only).

Prints per-round progress, then last:
  ratio_conn_rate_nft_vs_haproxy=X.XX     (median of per-round ratios; bar >= 1.5)
  ratio_throughput_nft_vs_haproxy=X.XX    (bar >= 1.0)
  sync_ms_1000x50=N                        (bar <= 2000)
  change_ms=N                              (one weight change; bar <= 10)
Needs root, haproxy, wrk, nginx-light (scripts/install-test-deps).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import ipvs_sync  # noqa: E402
from bench import proxy as proxy_bench  # noqa: E402
from bench.proxy import BIG_BODY, SMALL_BODY, parse_wrk  # noqa: E402
from tests.netns.nft_topology import REALS, VIP, NftTopology  # noqa: E402
from tests.netns.topology import PYTHON, run, wait_for  # noqa: E402

PORTS = {"nft": 8001, "proxy": 8002, "haproxy": 8003}
BACKEND = REALS["rs1"]

# bench/proxy.py's nginx and HAProxy, listening on the topology's addresses
NGINX_CONF = proxy_bench.NGINX_CONF.replace("listen 127.0.0.1:", "listen 0.0.0.0:")
HAPROXY_CONF = proxy_bench.HAPROXY_CONF.replace("bind 127.0.0.1:", f"bind {VIP}:").replace(
    "server s1 127.0.0.1:", f"server s1 {BACKEND}:"
)


def lvsmon_conf(plane: str, port: int, metrics: int, state: Path) -> str:
    return (
        f'[daemon]\ndataplane = "{plane}"\nmetrics_listen = "127.0.0.1:{metrics}"\n'
        f'log_level = "warning"\n[daemon.nft]\nstate_file = "{state}"\n'
        f'[[virtual_server]]\nname = "bench"\naddress = "{VIP}"\nport = {port}\n'
        f'scheduler = "rr"\n[[virtual_server.real_server]]\naddress = "{BACKEND}"\nport = 80\n'
    )


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclasses.dataclass
class Round:
    rate: float  # requests (= connections for conn_rate) per second
    bytes_per_s: float
    errors: str


def wrk(topo: NftTopology, name: str, bulk: bool, duration: int, args: argparse.Namespace) -> Round:
    path, conns = ("/big", args.bulk_conns) if bulk else ("/small", args.conns)
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s"]
    if not bulk:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://{VIP}:{PORTS[name]}{path}")
    out = run(*topo.exec_argv("client", cmd))
    rps, bps, _, errors = parse_wrk(out)
    return Round(rps, bps, errors)


def setup(topo: NftTopology) -> None:
    for host in ("dir", "rs1", "client"):
        run(*topo.exec_argv(host, ["sysctl", "-qw", "net.core.somaxconn=4096"]))
    tw = "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"
    run(*topo.exec_argv("dir", ["sysctl", "-qw", tw]), check=False)
    tmp = topo.workdir
    (tmp / "www").mkdir()
    (tmp / "nginx-tmp").mkdir()
    (tmp / "www" / "small").write_bytes(b"x" * SMALL_BODY)
    (tmp / "www" / "big").write_bytes(os.urandom(1024 * 1024) * (BIG_BODY // (1024 * 1024)))
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=80))
    nginx = ["nginx", "-e", str(tmp / "nginx-error.log"), "-p", str(tmp), "-c"]
    topo.spawn("rs1", "nginx", [*nginx, str(tmp / "nginx.conf")])
    (tmp / "haproxy.cfg").write_text(HAPROXY_CONF.format(port=PORTS["haproxy"], backend=80))
    topo.spawn("dir", "haproxy", ["haproxy", "-db", "-f", str(tmp / "haproxy.cfg")])
    for plane, metrics in (("nft", 9108), ("proxy", 9110)):
        conf = tmp / f"{plane}.toml"
        conf.write_text(lvsmon_conf(plane, PORTS[plane], metrics, tmp / f"{plane}-state.json"))
        topo.spawn("dir", plane, [PYTHON, "-m", "lvsmon.cli", "run", "-c", str(conf)])
    probe = [{"dst": VIP, "port": port} for port in PORTS.values()]
    wait_for(
        "nginx behind every balancer",
        lambda: all("error" not in r for r in _http(topo, probe)),
        30,
        every=0.2,
    )


def _http(topo: NftTopology, jobs: list[dict[str, Any]]) -> list[dict[str, str]]:
    code = (
        "import json, sys, urllib.request as u\n"
        "out = []\n"
        "for j in json.load(sys.stdin):\n"
        "    try:\n"
        "        u.urlopen(f\"http://{j['dst']}:{j['port']}/small\", timeout=2).read()\n"
        "        out.append({})\n"
        "    except OSError as e:\n"
        "        out.append({'error': str(e)})\n"
        "print(json.dumps(out))\n"
    )
    argv = topo.exec_argv("client", [PYTHON, "-c", code])
    result = subprocess.run(argv, input=json.dumps(jobs), capture_output=True, text=True)
    if result.returncode:
        return [{"error": result.stderr}]
    answers: list[dict[str, str]] = json.loads(result.stdout)
    return answers


def traffic(args: argparse.Namespace) -> dict[str, dict[str, list[Round]]]:
    names = list(PORTS)
    results: dict[str, dict[str, list[Round]]] = {n: {"conn": [], "bulk": []} for n in names}
    with NftTopology() as topo:
        setup(topo)
        log("warm-up ...")
        for name in names:
            wrk(topo, name, False, 1, args)
            wrk(topo, name, True, 1, args)
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(names)
            order = names[shift:] + names[:shift]
            for bulk in (False, True):
                for name in order:
                    r = wrk(topo, name, bulk, args.duration, args)
                    results[name]["bulk" if bulk else "conn"].append(r)
                    what = (
                        f"throughput {r.bytes_per_s / 1e9:7.2f} GB/s"
                        if bulk
                        else f"conn_rate  {r.rate:9.0f} conn/s"
                    )
                    log(
                        f"round {rnd}/{args.rounds} {what}  {name:8} "
                        f"load {os.getloadavg()[0]:4.2f} {r.errors}"
                    )
    return results


def ratio(a: list[Round], b: list[Round], bulk: bool) -> float:
    def key(r: Round) -> float:
        return r.bytes_per_s if bulk else r.rate

    return statistics.median(key(x) / key(y) for x, y in zip(a, b, strict=True))


# -- programming cost ----------------------------------------------------------------------


def config_text(scheduler: str, services: int, reals: int, state: str) -> str:
    """bench/ipvs_sync.py's table (weights 1..5), on the nft plane with `scheduler`."""
    text = ipvs_sync.config_text(services, reals, state)
    text = text.replace('dataplane = "ipvs"', 'dataplane = "nft"')
    text = text.replace("[daemon.ipvs]", '[daemon.nft]\ntable = "bench"')
    return text.replace('scheduler = "wlc"', f'scheduler = "{scheduler}"')


def programming(scheduler: str, services: int, reals: int, changes: int) -> dict[str, Any]:
    """`--program`: run inside a fresh namespace; one JSON line of timings (ms)."""
    from lvsmon import config
    from lvsmon.dataplane.nft import NftDataPlane
    from lvsmon.desired import desired_table
    from lvsmon.reconcile import EditDest, reconcile

    cfg = config.loads(config_text(scheduler, services, reals, "/run/lvsmon-bench-nft.json"))

    async def main() -> dict[str, Any]:
        dp = NftDataPlane(cfg.daemon)
        await dp.configure(cfg)
        await dp.start()
        t0 = time.perf_counter()
        snap = dp.snapshot()
        ops = reconcile(desired_table(cfg), snap.table(), snap.in_use)
        await dp.apply(ops)
        sync = time.perf_counter() - t0
        full_tx = dp.last_transaction_ms
        change, change_tx = [], []
        for k in range(changes):
            vs = cfg.virtual_servers[k % len(cfg.virtual_servers)]
            rs = vs.real_servers[k % len(vs.real_servers)]
            op = EditDest(vs.key, dataclasses.replace(rs, weight=rs.weight + 1 + k % 3))
            t1 = time.perf_counter()
            await dp.apply([op])
            change.append((time.perf_counter() - t1) * 1000)
            change_tx.append(dp.last_transaction_ms)
        await dp.stop(0)
        return {
            "sync_ms": sync * 1000,
            "full_transaction_ms": full_tx,
            "ops": len(ops),
            "change_ms": statistics.median(change),
            "change_transaction_ms": statistics.median(change_tx),
            "change_ms_max": max(change),
        }

    return asyncio.run(main())


def programming_in_netns(scheduler: str, args: argparse.Namespace) -> dict[str, Any]:
    ns = f"lvnb{os.getpid() % 10000}"
    run("ip", "netns", "add", ns)
    try:
        argv = ["ip", "netns", "exec", ns, PYTHON, __file__, "--program", scheduler]
        argv += [str(args.services), str(args.reals), str(args.changes)]
        out = run(*argv)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        run("ip", "netns", "del", ns, check=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    p.add_argument("--conns", type=int, default=64, help="wrk connections, conn_rate")
    p.add_argument("--bulk-conns", type=int, default=8, help="wrk connections, throughput")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--reals", type=int, default=50)
    p.add_argument("--changes", type=int, default=21)
    p.add_argument("--skip-traffic", action="store_true")
    p.add_argument("--program", nargs=4, metavar=("SCHED", "VS", "RS", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.program:
        sched, services, reals, changes = args.program
        print(json.dumps(programming(sched, int(services), int(reals), int(changes))))
        return 0
    missing = [t for t in ("haproxy", "wrk", "nginx", "nft") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        log(f"needs root and {', '.join(missing) or 'nothing else'} (scripts/install-test-deps)")
        return 2
    lines = []
    if not args.skip_traffic:
        log(
            f"wrk -t1 -c{args.conns} (conn_rate, Connection: close) / -c{args.bulk_conns} "
            f"(throughput, {BIG_BODY >> 20} MiB keep-alive); {args.rounds} rounds of "
            f"{args.duration}s; {os.cpu_count()} CPUs shared by wrk, nginx and the balancers"
        )
        results = traffic(args)
        for name, res in results.items():
            rate = statistics.median(r.rate for r in res["conn"])
            tput = statistics.median(r.bytes_per_s for r in res["bulk"])
            log(f"{name:8} conn_rate {rate:9.0f}/s  throughput {tput / 1e9:6.2f} GB/s")
        ha = results["haproxy"]
        for name in ("nft", "proxy"):
            for bulk, what in ((False, "conn_rate"), (True, "throughput")):
                key = "bulk" if bulk else "conn"
                value = ratio(results[name][key], ha[key], bulk)
                lines.append(f"ratio_{what}_{name}_vs_haproxy={value:.2f}")
    table = f"{args.services}x{args.reals}"
    for scheduler in ("sh", "wrr"):
        r = programming_in_netns(scheduler, args)
        log(
            f"{scheduler} {table}: sync {r['sync_ms']:.0f} ms (transaction "
            f"{r['full_transaction_ms']:.0f} ms, {r['ops']} operations); one weight change "
            f"{r['change_ms']:.1f} ms (transaction {r['change_transaction_ms']:.1f} ms, "
            f"max {r['change_ms_max']:.1f} ms over {args.changes})"
        )
        if scheduler == "sh":
            lines.append(f"change_ms_sh={r['change_ms']:.1f}")
        else:
            lines.append(f"sync_ms_{table}={r['sync_ms']:.0f}")
            lines.append(f"change_ms={r['change_ms']:.1f}")
    lines.sort(key=lambda line: not line.startswith("ratio_"))
    for line in lines:
        log(line)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
