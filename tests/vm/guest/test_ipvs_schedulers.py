"""Every IPVS scheduler the guest kernel offers: created by lvsmon, used by real
connections, read back; and the one it lacks rejected by `lvsmon check`.

Three real servers with weights 1, 2, 3 (added in that order, so the kernel
lists them r3, r2, r1), one client address, twelve connections one after the
other, each closed (RST) before the next: the expected spread follows from each
algorithm as the kernel implements it (ties go to the newest server).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon import config as configmod
from lvsmon.dataplane.ipvs import IpvsDataPlane
from lvsmon.dataplane.ipvs_modules import kernel_ipvs_schedulers
from lvsmon.desired import desired_table
from lvsmon.model import Config
from lvsmon.reconcile import reconcile
from tests.vm.guest.ipvs_topology import Topology, sh, topology

NET = 33
CONNECTIONS = 12
LVSMON = str(Path(sys.executable).with_name("lvsmon"))

# r1:r2:r3 after 12 sequential connections
EXPECTED = {
    "rr": {"r1": 4, "r2": 4, "r3": 4},
    "wrr": {"r1": 2, "r2": 4, "r3": 6},
    "lc": {"r1": 4, "r2": 4, "r3": 4},  # closed connections count (inactive)
    "wlc": {"r1": 2, "r2": 4, "r3": 6},
    "sed": {"r3": 12},  # ignores inactive: (0 + 1) / weight is lowest for the heaviest
    "nq": {"r3": 12},  # first idle server in list order (newest first)
    "fo": {"r3": 12},  # highest weight
    "ovf": {"r3": 12},  # highest weight while active < weight
    # hashing and locality: one client, one destination -> one server
    "sh": None,
    "dh": None,
    "mh": None,
    "lblc": None,
    "lblcr": None,
}


def schedulers() -> list[str]:
    found = kernel_ipvs_schedulers()
    assert found, "no IPVS schedulers found in the guest kernel's module files"
    return sorted(found)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, Config]]:
    sh("ipvsadm", "-C")
    tmp = tmp_path_factory.mktemp("ipvs-sched")
    names = schedulers()
    with topology(NET) as topo:
        reals = "".join(
            f'[[virtual_server.real_server]]\naddress = "{topo.real_address(i)}"\n'
            f"port = 8080\nweight = {i}\n"
            for i in (1, 2, 3)
        )
        body = "".join(
            f'[[virtual_server]]\nname = "{name}"\naddress = "{topo.vip(10 + n)}"\nport = 80\n'
            f'scheduler = "{name}"\n{reals}'
            for n, name in enumerate(names)
        )
        cfg = configmod.loads(f"""
[daemon]
dataplane = "ipvs"
[daemon.ipvs]
state_file = "{tmp}/owned.json"
{body}""")
        for n in range(len(names)):
            topo.add_vip(topo.vip(10 + n))
        for rs in topo.servers:
            rs.listen(8080)
        dp = IpvsDataPlane(cfg.daemon)
        asyncio.run(dp.configure(cfg))
        asyncio.run(dp.start())
        snap = dp.snapshot()
        asyncio.run(dp.apply(reconcile(desired_table(cfg), snap.table(), snap.in_use)))
        try:
            yield topo, cfg
            # read back: per real server, the kernel counted what the servers saw
            deadline = time.monotonic() + 15
            while True:
                snap = dp.snapshot()
                if all(s.counters.connections == CONNECTIONS for s in snap.services):
                    break
                assert time.monotonic() < deadline, [
                    (s.service.name, s.counters.connections) for s in snap.services
                ]
                time.sleep(0.5)
            for s in snap.services:
                assert s.service.scheduler == s.service.name
                counts = {d.key.address: d.counters.connections for d in s.dests}
                assert sum(counts.values()) == CONNECTIONS
        finally:
            asyncio.run(dp.stop(0))
            sh("ipvsadm", "-C")


@pytest.mark.parametrize("name", schedulers() if kernel_ipvs_schedulers() else ["none"])
def test_scheduler_balances_real_connections(name: str, lab: tuple[Topology, Config]) -> None:
    topo, cfg = lab
    vs = next(v for v in cfg.virtual_servers if v.name == name)
    assert f"TCP  {vs.address}:80 {name}" in sh("ipvsadm", "-Ln", "-t", f"{vs.address}:80")
    served = Counter(topo.request(str(vs.address), 80) for _ in range(CONNECTIONS))
    assert sum(served.values()) == CONNECTIONS
    expected = EXPECTED.get(name)
    if expected is not None:
        assert dict(served) == expected
    elif name in EXPECTED:
        assert len(served) == 1, served  # same client, same destination: same server
    assert "-> " in sh("ipvsadm", "-Ln", "-t", f"{vs.address}:80")


def test_the_guest_kernel_offers_the_classic_thirteen() -> None:
    classic = {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo"}
    assert set(schedulers()) >= classic | {"ovf"}


def test_a_scheduler_the_kernel_lacks_fails_the_config_check(tmp_path: Path) -> None:
    if "twos" in schedulers():
        pytest.skip("this kernel has twos")
    cfg = tmp_path / "twos.toml"
    cfg.write_text(
        '[daemon]\ndataplane = "ipvs"\n[[virtual_server]]\nname = "web"\n'
        'address = "192.0.2.1"\nport = 80\nscheduler = "twos"\n'
    )
    out = subprocess.run(
        [LVSMON, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 1
    release = sh("uname", "-r").strip()
    assert (
        f'{cfg}: virtual_server[web].scheduler: "twos" is not available on data plane '
        f'"ipvs": the running kernel ({release}) has no such IPVS scheduler (module '
        "ip_vs_<name>); available: " + ", ".join(schedulers())
    ) in out.stderr
