"""twos against the real kernel: distributions, not sequences (Linux 6.12 guest).

ip_vs_twos.c appeared in Linux 6.2, so this boots Debian 12's 6.12 kernel
(``linux-image-6.12-amd64``, from bookworm-security) in one extra guest.
The kernel draws its two candidates with get_random_u32_below(): no run can
be replayed decision for decision, so the test compares the distribution of
chosen real servers under a fixed, known load with lvsmon's PowerOfTwoChoices.

How the load is fixed: each case is a UDP virtual service. Its "load" is
long-lived UDP connection entries (one per client port, udp timeout 1 h),
placed on one real server at a time while the others have weight 0. Then the
service is switched to twos with one-packet scheduling (ipvsadm -E -s twos
-o): every probe datagram is scheduled by twos and its entry is freed as soon
as it is forwarded, so every decision sees the same active/inactive counts.
The kernel's per-server choice counts come from ipvsadm --stats, its
per-server counters from /proc/net/ip_vs (checked unchanged after the probes).
lvsmon's scheduler is run on the host with exactly that state (list order,
weights, counters, overload flags) for many seeded decisions.

Per server, the kernel's share of N probes must equal lvsmon's within 5
standard errors of the difference (about +-1.5 percentage points for an even
share at N = 30000); servers lvsmon never picks (weight 0, overloaded) must
get no probe at all. The cases cover the draw itself (the first server of
the list has one extra chance in total_weight + 1), the weighted overhead
comparison, weight 0 and overload, and the kernel's 32-bit int products
(weight * overhead wraps past 2**31): for that case the test also shows that
a non-wrapping comparison is rejected by the same bounds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lvsmon.schedulers import Dest, Flow, create
from lvsmon.schedulers import twos as twos_module

REPO = Path(__file__).resolve().parents[2]
VIP = "198.51.100.1"
BASE_PORT = 5000
PROBES = 30_000
MODEL_DECISIONS = 400_000
MAX_Z = 5.0
RESULT_TAG = "LVSMON-TWOS-RESULT "
FLOW = Flow(ipaddress.IPv4Address("192.0.2.1"), 40000, ipaddress.IPv4Address(VIP), 53, "udp")


@dataclass(frozen=True)
class Server:
    weight: int
    load: int = 0  # long-lived UDP entries placed on it before the probes
    upper: int = 0  # upper connection threshold (-x)


@dataclass(frozen=True)
class Case:
    name: str
    #: in the order they are added (the kernel's list is the reverse: newest first)
    servers: tuple[Server, ...]


CASES = (
    # all idle: the first candidate always wins, so the shares are the draw's own:
    # (w + 1) / (W + 1) for the head of the list, w / (W + 1) for the others
    Case("idle", (Server(1), Server(2), Server(3), Server(4))),
    # overhead / weight decides between the two candidates
    Case("loaded", (Server(3, load=40), Server(1), Server(2, load=10))),
    # weight 0 and overloaded (load reached the upper threshold) servers are never drawn
    Case("weight0-overloaded", (Server(2, 4), Server(0, 7), Server(3, 5, upper=5), Server(1, 1))),
    # 65535 * 33000 > 2**31: the kernel's int product wraps negative, so the loaded
    # server wins every comparison it is part of against the idle one
    Case("int-wrap", (Server(40000, load=2000), Server(65535, load=33000), Server(65535))),
)


def rs_addr(n: int) -> str:
    return f"10.0.0.{n + 1}"


# -- guest side ---------------------------------------------------------------------------


def _sh(cmd: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; a failure raises. (ipvsadm -R goes on past a failing line and
    exits 0: for it any complaint on stderr is a failure.)"""
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or (list(cmd[:2]) == ["ipvsadm", "-R"] and proc.stderr.strip()):
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}\n{stdin or ''}")
    return proc.stdout


def _proc_counts(port: int) -> dict[str, list[int]]:
    token = ["UDP", f"{int(ipaddress.IPv4Address(VIP)):08X}:{port:04X}"]
    out: dict[str, list[int]] = {}
    inside = False
    with open("/proc/net/ip_vs") as fh:
        for line in fh:
            parts = line.split()
            if parts and parts[0] != "->":
                inside = parts[:2] == token
            elif inside and len(parts) >= 6 and parts[1] != "RemoteAddress:Port":
                addr = str(ipaddress.IPv4Address(int(parts[1].split(":")[0], 16)))
                out[addr] = [int(parts[4]), int(parts[5])]
    return out


def _stats(port: int, total: int) -> dict[str, int]:
    """Per-server scheduled-connection counters once the service's reach `total`
    (the kernel folds its per-CPU counters in every 2 s)."""
    deadline = time.monotonic() + 30
    while True:
        out = _sh(["ipvsadm", "-Ln", "--stats", "--exact", "-u", f"{VIP}:{port}"])
        per: dict[str, int] = {}
        svc_total = -1
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["UDP"]:
                svc_total = int(parts[2])
            elif parts[:1] == ["->"] and parts[1][0].isdigit():
                per[parts[1].rsplit(":", 1)[0]] = int(parts[2])
        if svc_total == total:
            return per
        if time.monotonic() > deadline:
            raise RuntimeError(f"service {VIP}:{port} counted {svc_total} != {total}:\n{out}")
        time.sleep(0.25)


def _send(sources: Iterator[tuple[str, int]], count: int, port: int) -> None:
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(next(sources))
            sock.sendto(b"x", (VIP, port))


def guest_main() -> None:
    """Runs in the 6.12 guest: place the load, probe twos, print the counts as JSON."""
    for mod in ("ip_vs", "ip_vs_rr", "ip_vs_twos"):
        _sh(["modprobe", mod])
    _sh(
        ["ip", "-batch", "-"],
        "link add lvsk-twos type dummy\nlink set lvsk-twos up\n"
        "addr add 10.0.0.254/24 dev lvsk-twos\n"
        "addr add 192.0.2.1/32 dev lvsk-twos\naddr add 192.0.2.2/32 dev lvsk-twos\n"
        f"route add local {VIP}/32 dev lo\n",
    )
    _sh(["ipvsadm", "--set", "0", "0", "3600"])  # udp entries outlive the test
    sources = ((f"192.0.2.{1 + i // 60000}", 2000 + i % 60000) for i in range(10**6))
    report: dict[str, Any] = {"kernel": _sh(["uname", "-r"]).strip(), "cases": []}
    for index, case in enumerate(CASES):
        port = BASE_PORT + index
        svc = f"-u {VIP}:{port}"
        _sh(["ipvsadm", "-A", *svc.split(), "-s", "rr"])
        added: list[int] = []
        for n, server in enumerate(case.servers):
            lines = [f"-a {svc} -r {rs_addr(n)}:53 -m -w 1 -x {server.upper}"]
            lines += [
                f"-e {svc} -r {rs_addr(k)}:53 -m -w 0 -x {case.servers[k].upper}" for k in added
            ]
            _sh(["ipvsadm", "-R"], "".join(f"{line}\n" for line in lines))
            _send(sources, server.load, port)
            added.append(n)
        final = [
            f"-e {svc} -r {rs_addr(n)}:53 -m -w {s.weight} -x {s.upper}"
            for n, s in enumerate(case.servers)
        ]
        final.append(f"-E {svc} -s twos -o")
        _sh(["ipvsadm", "-R"], "".join(f"{line}\n" for line in final))
        load_total = sum(s.load for s in case.servers)
        before = _stats(port, load_total)
        counts = _proc_counts(port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("192.0.2.2", 1999))
            for _ in range(PROBES):
                probe.sendto(b"p", (VIP, port))
        after = _stats(port, load_total + PROBES)
        report["cases"].append(
            {
                "name": case.name,
                "order": list(counts),  # /proc/net/ip_vs lists them in the kernel's order
                "counts": counts,
                "counts_after": _proc_counts(port),
                "picks": {a: after.get(a, 0) - before.get(a, 0) for a in counts},
            }
        )
    print(RESULT_TAG + json.dumps(report), flush=True)


# -- host side ----------------------------------------------------------------------------


def model_shares(case: Case, result: dict[str, Any], decisions: int, seed: int) -> dict[str, float]:
    """lvsmon's twos under the kernel's state: share of `decisions` per server."""
    by_addr = {rs_addr(n): s for n, s in enumerate(case.servers)}
    dests: list[Dest] = []
    for addr in result["order"]:  # the kernel's list order
        server = by_addr[addr]
        dest = Dest(ipaddress.IPv4Address(addr), 53, server.weight, server.upper)
        dest.active, dest.inactive = result["counts"][addr]
        dest.refresh_overload()  # as ip_vs_bind_dest() left it after the load
        dests.append(dest)
    sched = create("twos", rng=random.Random(seed))
    sched.update(dests)
    tally = dict.fromkeys(result["order"], 0)
    for _ in range(decisions):
        picked = sched.schedule(dests, FLOW, 0.0)
        assert picked is not None
        tally[str(picked.address)] += 1
    return {a: k / decisions for a, k in tally.items()}


def z_scores(picks: dict[str, int], shares: dict[str, float], decisions: int) -> dict[str, float]:
    """Per server: (kernel share - model share) / standard error of that difference."""
    n = sum(picks.values())
    out: dict[str, float] = {}
    for addr, p_model in shares.items():
        p_kernel = picks[addr] / n
        pooled = (picks[addr] + p_model * decisions) / (n + decisions)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / decisions))
        out[addr] = (p_kernel - p_model) / se
    return out


@pytest.fixture(scope="module")
def kernel_report() -> dict[str, Any]:
    from tests.vm import vmharness

    assets = vmharness.ensure_assets(
        progress=lambda line: print(f"vm: {line}", flush=True),
        meta_package=vmharness.KERNEL_6_12_META_PACKAGE,
    )
    result = vmharness.run_in_vm(
        [sys.executable, "-m", "tests.vm.test_twos_kernel", "--guest"],
        cwd=str(REPO),
        timeout=600,
        assets=assets,
    )
    print(f"vm: {assets.kver}: boot {result.boot_seconds:.1f}s, total {result.total_seconds:.1f}s")
    assert result.returncode == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith(RESULT_TAG)]
    assert lines, result.output
    report: dict[str, Any] = json.loads(lines[-1][len(RESULT_TAG) :])
    return report


@pytest.mark.vm
@pytest.mark.timeout(1200)
def test_guest_kernel_has_twos(kernel_report: dict[str, Any]) -> None:
    major, minor = (int(x) for x in kernel_report["kernel"].split(".")[:2])
    assert (major, minor) >= (6, 2), kernel_report["kernel"]
    assert [c["name"] for c in kernel_report["cases"]] == [c.name for c in CASES]


@pytest.mark.vm
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_twos_distribution_matches_the_kernel(kernel_report: dict[str, Any], case: Case) -> None:
    result = next(c for c in kernel_report["cases"] if c["name"] == case.name)
    # the probes left the counters alone, so every decision saw the same state
    assert result["counts_after"] == result["counts"]
    assert sum(result["picks"].values()) == PROBES
    shares = model_shares(case, result, MODEL_DECISIONS, seed=len(case.name))
    for addr, share in shares.items():
        if share == 0:
            assert result["picks"][addr] == 0, f"{addr}: never chosen by lvsmon, by the kernel"
    z = z_scores(result["picks"], shares, MODEL_DECISIONS)
    table = {a: (result["picks"][a] / PROBES, round(shares[a], 4), round(z[a], 2)) for a in z}
    assert all(abs(v) < MAX_Z for v in z.values()), f"(kernel, lvsmon, z) per server: {table}"


@pytest.mark.vm
@pytest.mark.timeout(1200)
def test_a_non_wrapping_comparison_is_rejected(kernel_report: dict[str, Any]) -> None:
    """The bounds are tight enough to tell the kernel's int arithmetic apart."""
    case = next(c for c in CASES if c.name == "int-wrap")
    result = next(c for c in kernel_report["cases"] if c["name"] == case.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(twos_module, "_s32", lambda value: value)
        wide = model_shares(case, result, MODEL_DECISIONS, seed=1)
    z = z_scores(result["picks"], wide, MODEL_DECISIONS)
    assert max(abs(v) for v in z.values()) > 10 * MAX_Z, z


def test_cases_are_well_formed() -> None:
    for case in CASES:
        assert any(s.weight for s in case.servers), case.name
        # a server stops taking load once overloaded: the load must end right there
        assert all(s.upper in (0, s.load) for s in case.servers), case.name
    wrap = next(c for c in CASES if c.name == "int-wrap")
    assert max(s.weight for s in wrap.servers) * max(s.load for s in wrap.servers) >= 2**31


if __name__ == "__main__" and sys.argv[1:] == ["--guest"]:
    with contextlib.suppress(BrokenPipeError):
        guest_main()
