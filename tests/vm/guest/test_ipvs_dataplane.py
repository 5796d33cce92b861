"""The IPVS data plane against the real kernel, driven in-process (no daemon).

Every kind of virtual server round-trips through the kernel; edits cost one
request each; foreign entries are refused, adopted only when configured, and
never touched elsewhere; errors say what went wrong; sysctls, timeouts and the
connection-sync daemon follow the config and the runtime switch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon import config as configmod
from lvsmon.dataplane.ipvs import IpvsDataPlane, IpvsError
from lvsmon.dataplane.ipvs_modules import kernel_ipvs_schedulers
from lvsmon.desired import desired_table
from lvsmon.model import Config, SyncDaemon, SyncState
from lvsmon.reconcile import AddService, EditDest, EditService, Op, reconcile
from tests.vm.guest.ipvs_topology import rst_close, saved, sh, topology

NET = 32


def toml(state: Path, body: str, ipvs: str = "", timeouts: str = "") -> str:
    return f"""
[daemon]
dataplane = "ipvs"
[daemon.timeouts]
{timeouts}
[daemon.ipvs]
state_file = "{state}"
{ipvs}
{body}
"""


EVERY_KIND = """
[[virtual_server]]
name = "web"
address = "10.32.9.1"
port = 80
scheduler = "wlc"
persistence_timeout = "5m"
persistence_netmask = "255.255.255.0"
[[virtual_server.real_server]]
address = "10.32.1.11"
port = 8080
weight = 3
upper_threshold = 100
lower_threshold = 10
[[virtual_server.real_server]]
address = "10.32.1.12"
port = 8080
[[virtual_server]]
name = "dns"
address = "10.32.9.1"
port = 53
protocol = "udp"
scheduler = "sh"
scheduler_flags = ["sh-port", "sh-fallback"]
[[virtual_server.real_server]]
address = "10.32.1.11"
forwarding = "dr"
[[virtual_server]]
name = "sig"
address = "10.32.9.1"
port = 3868
protocol = "sctp"
scheduler = "rr"
[[virtual_server.real_server]]
address = "10.32.1.11"
forwarding = "tunnel"
[[virtual_server]]
name = "mark"
fwmark = 7
scheduler = "mh"
scheduler_flags = ["mh-port"]
persistence_timeout = 30
[[virtual_server.real_server]]
address = "10.32.1.12"
port = 0
forwarding = "dr"
[[virtual_server]]
name = "mark6"
fwmark = 8
address = "2001:db8::1"
scheduler = "wrr"
persistence_timeout = 30
persistence_netmask = 64
[[virtual_server.real_server]]
address = "2001:db8::11"
port = 0
forwarding = "dr"
[[virtual_server]]
name = "web6"
address = "2001:db8::100"
port = 443
scheduler = "lc"
[[virtual_server.real_server]]
address = "2001:db8::11"
port = 8443
weight = 5
"""

SAVED = """\
-A -t 10.32.9.1:80 -s wlc -p 300 -M 255.255.255.0
-a -t 10.32.9.1:80 -r 10.32.1.11:8080 -m -w 3
-a -t 10.32.9.1:80 -r 10.32.1.12:8080 -m -w 1
-A -u 10.32.9.1:53 -s sh -b sh-fallback,sh-port
-a -u 10.32.9.1:53 -r 10.32.1.11:53 -g -w 1
-A --sctp-service 10.32.9.1:3868 -s rr
-a --sctp-service 10.32.9.1:3868 -r 10.32.1.11:3868 -i -w 1 --tun-type ipip
-A -t [2001:db8::100]:443 -s lc
-a -t [2001:db8::100]:443 -r [2001:db8::11]:8443 -m -w 5
-A -f 7 -s mh -p 30 -b mh-port
-a -f 7 -r 10.32.1.12:0 -g -w 1
-A -f 8 -6 -s wrr -p 30 -M 64
-a -f 8 -6 -r [2001:db8::11]:0 -g -w 1
"""


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def sync(dp: IpvsDataPlane, cfg: Config) -> list[Op]:
    snap = dp.snapshot()
    ops = reconcile(desired_table(cfg), snap.table(), snap.in_use)
    run(dp.apply(ops))
    return ops


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sh("ipvsadm", "-C")
    yield tmp_path_factory.mktemp("ipvs-dp") / "owned.json"
    sh("ipvsadm", "-C")
    sh("ipvsadm", "--stop-daemon", "master", check=False)
    sh("ipvsadm", "--stop-daemon", "backup", check=False)


@pytest.fixture
def plane(state: Path) -> Iterator[tuple[IpvsDataPlane, Config]]:
    cfg = configmod.loads(toml(state, EVERY_KIND))
    dp = IpvsDataPlane(cfg.daemon)
    run(dp.configure(cfg))
    run(dp.start())
    yield dp, cfg
    run(dp.stop(0))


def test_every_kind_of_virtual_server_round_trips(plane: tuple[IpvsDataPlane, Config]) -> None:
    dp, cfg = plane
    ops = sync(dp, cfg)
    assert len(ops) == 13
    assert dp.last_outcome is not None and dp.last_outcome.failures == []
    snap = dp.snapshot()
    assert reconcile(desired_table(cfg), snap.table(), snap.in_use) == []  # read back = config
    assert {s.service.name for s in snap.services} == {vs.name for vs in cfg.virtual_servers}
    assert sh("ipvsadm", "-Sn") == SAVED
    assert re.search(r"-> 10\.32\.1\.11:8080 +100 +10 ", sh("ipvsadm", "-Ln", "--thresholds"))


def test_edits_cost_one_request_each(plane: tuple[IpvsDataPlane, Config]) -> None:
    dp, cfg = plane
    sync(dp, cfg)
    web = cfg.virtual_servers[0]
    heavier = dataclasses.replace(web.real_servers[1], weight=7)
    rr = dataclasses.replace(web, scheduler="rr", real_servers=(web.real_servers[0], heavier))
    changed = dataclasses.replace(cfg, virtual_servers=(rr, *cfg.virtual_servers[1:]))
    ops = sync(dp, changed)
    assert [type(op) for op in ops] == [EditService, EditDest]
    assert dp.last_outcome is not None and dp.last_outcome.requests == 2
    assert "-A -t 10.32.9.1:80 -s rr -p 300 -M 255.255.255.0" in sh("ipvsadm", "-Sn")
    assert "-r 10.32.1.12:8080 -m -w 7" in sh("ipvsadm", "-Sn")
    assert sync(dp, changed) == []


def test_ownership_outlives_the_process_through_the_state_file(
    plane: tuple[IpvsDataPlane, Config],
    state: Path,
) -> None:
    dp, cfg = plane
    sync(dp, cfg)
    owned = json.loads(state.read_text())["services"]
    assert {o["name"] for o in owned} == {vs.name for vs in cfg.virtual_servers}
    # a new process that has not even read the config recognises lvsmon's entries
    fresh = IpvsDataPlane(cfg.daemon)
    run(fresh.start())
    assert len(fresh.snapshot().services) == len(cfg.virtual_servers)
    run(fresh.stop(0))


def test_foreign_entries_are_left_alone_unless_adopted(state: Path) -> None:
    sh("ipvsadm", "-C")
    state.unlink(missing_ok=True)
    sh("ipvsadm", "-A", "-t", "10.32.9.1:80", "-s", "rr")  # at a configured identity
    sh("ipvsadm", "-a", "-t", "10.32.9.1:80", "-r", "10.32.1.99:8080", "-m")
    sh("ipvsadm", "-A", "-t", "10.32.9.50:80", "-s", "rr")  # elsewhere
    cfg = configmod.loads(toml(state, EVERY_KIND))
    dp = IpvsDataPlane(cfg.daemon)
    run(dp.configure(cfg))
    run(dp.start())
    try:
        snap = dp.snapshot()
        assert "web" not in {s.service.name for s in snap.services}
        ops = reconcile(desired_table(cfg), snap.table(), snap.in_use)
        with pytest.raises(IpvsError) as info:
            run(dp.apply(ops))
        assert str(info.value).startswith(
            "add virtual server TCP 10.32.9.1:80 (web): EEXIST (a virtual server with this "
            "identity exists in the kernel and lvsmon did not create it"
        )
        assert "(10 of 13 operations applied" in str(info.value)
        assert saved("10.32.9.1:80") == (
            "-A -t 10.32.9.1:80 -s rr\n-a -t 10.32.9.1:80 -r 10.32.1.99:8080 -m -w 1\n"
        )
        # adopted: converged with the minimal edits (scheduler, real servers)
        adopting = configmod.loads(toml(state, EVERY_KIND, 'adopt = ["web"]'))
        run(dp.configure(adopting))
        ops = sync(dp, adopting)
        assert [str(op) for op in ops] == [
            "edit virtual server TCP 10.32.9.1:80 (web)",
            "delete real server 10.32.1.99:8080 from TCP 10.32.9.1:80",
            "add real server 10.32.1.11:8080 weight 3 to TCP 10.32.9.1:80",
            "add real server 10.32.1.12:8080 weight 1 to TCP 10.32.9.1:80",
        ]
        assert "web" in {o["name"] for o in json.loads(state.read_text())["services"]}
        assert sync(dp, adopting) == []
        # the entry at an identity lvsmon does not manage was never read nor touched
        assert all(s.service.key.address != "10.32.9.50" for s in dp.snapshot().services)
        assert saved("10.32.9.50:80") == "-A -t 10.32.9.50:80 -s rr\n"
    finally:
        run(dp.stop(0))


def test_a_scheduler_the_kernel_lacks_is_named(state: Path) -> None:
    schedulers = kernel_ipvs_schedulers() or frozenset()
    if "twos" in schedulers:
        pytest.skip("this kernel has twos")
    cfg = configmod.loads(toml(state, EVERY_KIND))
    dp = IpvsDataPlane(cfg.daemon)
    run(dp.start())
    try:
        web = dataclasses.replace(
            cfg.virtual_servers[0],
            address=None,
            port=0,
            fwmark=99,
            scheduler="twos",
            real_servers=(),
        )
        with pytest.raises(IpvsError) as info:
            run(dp.apply([AddService(web)]))
        assert str(info.value).startswith(
            "add virtual server FWM 99 (web): ENOENT (the running kernel has no IPVS scheduler "
            '"twos" (module ip_vs_twos missing))'
        )
    finally:
        run(dp.stop(0))


def test_without_cap_net_admin_the_error_says_so(state: Path) -> None:
    script = (
        "import asyncio\n"
        "from lvsmon.dataplane.ipvs import IpvsDataPlane, IpvsError\n"
        "from lvsmon.model import DaemonSettings\n"
        "dp = IpvsDataPlane(DaemonSettings(dataplane='ipvs'))\n"
        "try:\n    asyncio.run(dp.start())\nexcept IpvsError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parents[3]),
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "not permitted to use IPVS: lvsmon needs CAP_NET_ADMIN (run it as root)\n"
    ), out.stdout


def test_sysctls_and_timeouts_follow_the_config(state: Path) -> None:
    cfg = configmod.loads(
        toml(
            state,
            "",
            """
[daemon.ipvs.sysctl]
expire_nodest_conn = false
conntrack = true
conn_reuse_mode = 2
""",
            'tcp = "1h"\nudp = "10s"',
        )
    )
    dp = IpvsDataPlane(cfg.daemon)
    run(dp.configure(cfg))
    run(dp.start())
    try:
        vs = Path("/proc/sys/net/ipv4/vs")
        assert [
            (vs / n).read_text().strip()
            for n in (
                "expire_nodest_conn",
                "expire_quiescent_template",
                "conntrack",
                "conn_reuse_mode",
            )
        ] == ["0", "1", "1", "2"]
        assert "Timeout (tcp tcpfin udp): 3600 120 10" in sh("ipvsadm", "-L", "--timeout")
        run(dp.configure(configmod.loads(toml(state, ""))))  # a reload back to the defaults
        assert (vs / "expire_nodest_conn").read_text().strip() == "1"
        assert (vs / "conntrack").read_text().strip() == "0"
        assert "Timeout (tcp tcpfin udp): 900 120 300" in sh("ipvsadm", "-L", "--timeout")
    finally:
        run(dp.stop(0))


def test_the_sync_daemon_follows_the_role_and_syncs_connections(state: Path) -> None:
    sh("ipvsadm", "-C")
    with topology(NET, reals=1) as topo:
        backup = f"{topo.prefix}b"
        sh("ip", "netns", "add", backup)
        try:
            sh(
                "ip",
                "link",
                "add",
                f"{topo.prefix}s0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                backup,
            )
            sh("ip", "addr", "add", "10.32.2.1/24", "dev", f"{topo.prefix}s0")
            sh("ip", "link", "set", f"{topo.prefix}s0", "up")
            sh("ip", "-n", backup, "addr", "add", "10.32.2.2/24", "dev", "eth0")
            sh("ip", "-n", backup, "link", "set", "eth0", "up")
            sh("ip", "-n", backup, "link", "set", "lo", "up")
            sh(
                "ip",
                "netns",
                "exec",
                backup,
                "ipvsadm",
                "--start-daemon",
                "backup",
                "--mcast-interface",
                "eth0",
                "--syncid",
                "7",
            )
            topo.add_vip(topo.vip(1))
            topo.servers[0].listen(8080)
            body = (
                f'[[virtual_server]]\nname = "web"\naddress = "{topo.vip(1)}"\nport = 80\n'
                f'[[virtual_server.real_server]]\naddress = "{topo.real_address(1)}"\n'
                "port = 8080\n"
            )
            master = (
                '[daemon.ipvs.sync_daemon]\nstate = "master"\n'
                f'interface = "{topo.prefix}s0"\nsyncid = 7'
            )
            cfg = configmod.loads(toml(state, body, master))
            dp = IpvsDataPlane(cfg.daemon)
            run(dp.configure(cfg))
            run(dp.start())
            try:
                assert dp.sync_daemons() == {
                    SyncState.MASTER: SyncDaemon(SyncState.MASTER, f"{topo.prefix}s0", 7)
                }
                sync(dp, cfg)
                held = [topo.connect(topo.vip(1), 80)[1] for _ in range(3)]
                for s in held:
                    s.sendall(b"ping")
                    assert s.recv(16) == b"ping"

                def synced() -> int:
                    table = sh("ip", "netns", "exec", backup, "ipvsadm", "-Lnc")
                    return sum(
                        1
                        for line in table.splitlines()
                        if "ESTABLISHED" in line and topo.client in line
                    )

                deadline = time.monotonic() + 20
                while synced() < 3 and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert synced() == 3, sh("ip", "netns", "exec", backup, "ipvsadm", "-Lnc")
                for s in held:
                    rst_close(s)
                # the failover issue's hook: switch roles at runtime
                run(dp.set_sync_daemon(SyncDaemon(SyncState.BACKUP, f"{topo.prefix}s0", 7)))
                assert "backup sync daemon (mcast=lv32s0, syncid=7," in sh(
                    "ipvsadm", "-L", "--daemon"
                )
                assert "master" not in sh("ipvsadm", "-L", "--daemon")
                run(dp.set_sync_daemon(SyncDaemon()))
                assert sh("ipvsadm", "-L", "--daemon").strip() == ""
            finally:
                run(dp.stop(0))
        finally:
            sh("ip", "netns", "del", backup, check=False)
            sh("ip", "link", "del", f"{topo.prefix}s0", check=False)
