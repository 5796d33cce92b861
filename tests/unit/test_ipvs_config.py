"""[daemon.ipvs] keys and the kernel-scheduler check of `dataplane = "ipvs"` configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsmon import config
from lvsmon.dataplane import registry
from lvsmon.dataplane.ipvs_modules import kernel_ipvs_schedulers, narrow_to_kernel
from lvsmon.model import Config, IpvsSettings, IpvsSysctls, SyncDaemon, SyncState
from lvsmon.model.capabilities import Capabilities

BASE = """
[daemon]
dataplane = "ipvs"
{extra}
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
scheduler = "{scheduler}"

[[virtual_server.real_server]]
address = "10.0.0.2"
"""


def load(extra: str = "", scheduler: str = "wlc", caps: Capabilities | None = None) -> Config:
    return config.loads(BASE.format(extra=extra, scheduler=scheduler), "t.toml", caps)


def errors(extra: str = "", scheduler: str = "wlc", caps: Capabilities | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        load(extra, scheduler, caps)
    return info.value.render().splitlines()[1:]


def test_defaults() -> None:
    assert load().daemon.ipvs == IpvsSettings()
    assert IpvsSysctls() == IpvsSysctls(True, True, False, 1)


def test_every_key() -> None:
    ipvs_settings = load("""
[daemon.ipvs]
flush_on_stop = true
adopt = ["web"]
state_file = "/run/lvsmon/other.json"
[daemon.ipvs.sysctl]
expire_nodest_conn = false
expire_quiescent_template = false
conntrack = true
conn_reuse_mode = 2
[daemon.ipvs.sync_daemon]
state = "backup"
interface = "eth1"
syncid = 7
""").daemon.ipvs
    assert ipvs_settings == IpvsSettings(
        flush_on_stop=True,
        adopt=False,
        adopt_names=frozenset({"web"}),
        state_file="/run/lvsmon/other.json",
        sysctl=IpvsSysctls(False, False, True, 2),
        sync_daemon=SyncDaemon(SyncState.BACKUP, "eth1", 7),
    )
    assert ipvs_settings.adopts("web") and not ipvs_settings.adopts("mail")
    assert load("[daemon.ipvs]\nadopt = true").daemon.ipvs.adopts("anything")


def test_mistakes_are_named_by_key_path() -> None:
    assert errors("""
[daemon.ipvs]
adopt = ["wbe"]
flush_on_stop = "yes"
[daemon.ipvs.sysctl]
expire_nodest = true
conn_reuse_mode = 9
[daemon.ipvs.sync_daemon]
state = "primary"
syncid = 300
""") == [
        't.toml: daemon.ipvs.flush_on_stop: "yes" is not valid: expected true or false',
        "t.toml: daemon.ipvs.sysctl.conn_reuse_mode: 9 is not valid: expected an integer 0..3 "
        "(a bitmap)",
        "t.toml: daemon.ipvs.sysctl.expire_nodest: unknown key (did you mean "
        '"expire_nodest_conn"?); known keys here: conn_reuse_mode, conntrack, '
        "expire_nodest_conn, expire_quiescent_template, sloppy_sctp, sloppy_tcp",
        't.toml: daemon.ipvs.sync_daemon.state: "primary" is not valid: expected one of '
        '"none", "master", "backup"',
        "t.toml: daemon.ipvs.sync_daemon.syncid: 300 is not valid: expected an integer 0..255",
        't.toml: daemon.ipvs.adopt: "wbe" names no virtual server',
    ]


def test_a_sync_daemon_needs_an_interface() -> None:
    assert errors('[daemon.ipvs.sync_daemon]\nstate = "master"') == [
        "t.toml: daemon.ipvs.sync_daemon.interface: missing: the sync daemon needs an "
        'interface when state is "master"'
    ]


GROUP = """
[[failover_group]]
name = "www"
vrid = 10
interface = "eth0"
[[failover_group.address]]
address = "192.0.2.10/24"
"""


def test_the_sync_daemon_follows_a_failover_group() -> None:
    sync = load(
        '[daemon.ipvs.sync_daemon]\nfollow = "www"\ninterface = "eth1"\nsyncid = 10\n' + GROUP
    ).daemon.ipvs.sync_daemon
    assert sync == SyncDaemon(SyncState.NONE, "eth1", 10, follow="www")
    # master sends; every other role receives (keepalived's lvs_sync_daemon)
    assert sync.for_role("master") == SyncDaemon(SyncState.MASTER, "eth1", 10)
    for role in ("backup", "fault", "initialize"):
        assert sync.for_role(role) == SyncDaemon(SyncState.BACKUP, "eth1", 10)
    example = config.load(str(Path(__file__).parents[2] / "config/failover-ipvs-unicast.toml"))
    assert example.daemon.ipvs.sync_daemon.follow == example.failover_groups[0].name


def test_follow_mistakes() -> None:
    assert errors('[daemon.ipvs.sync_daemon]\nfollow = "wwww"\nstate = "master"\n' + GROUP) == [
        't.toml: daemon.ipvs.sync_daemon.state: "master" conflicts with follow = "wwww": the '
        "role of that failover group decides master or backup; remove one",
        "t.toml: daemon.ipvs.sync_daemon.interface: missing: the sync daemon needs an "
        'interface when follow = "wwww"',
        't.toml: daemon.ipvs.sync_daemon.follow: "wwww" names no failover_group ("www")',
    ]


def _kernel_tree(tmp: Path, schedulers: list[str], builtin: tuple[str, ...] = ()) -> Path:
    mods = tmp / "lib" / "6.1.0-test"
    mods.mkdir(parents=True)
    lines = ["kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko"]
    lines += [
        f"kernel/net/netfilter/ipvs/ip_vs_{s}.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko"
        for s in [*schedulers, "ftp", "pe_sip"]
    ]
    (mods / "modules.dep").write_text("\n".join(lines) + "\n")
    (mods / "modules.builtin").write_text(
        "".join(f"kernel/net/netfilter/ipvs/ip_vs_{s}.ko\n" for s in builtin)
    )
    return tmp / "lib"


def test_kernel_schedulers_come_from_the_module_files(tmp_path: Path) -> None:
    lib = _kernel_tree(tmp_path, ["rr", "wlc", "mh"], builtin=("sh",))
    sysfs = tmp_path / "sys"
    (sysfs / "module" / "ip_vs_fo").mkdir(parents=True)  # loaded (e.g. from elsewhere)
    found = kernel_ipvs_schedulers("6.1.0-test", lib, sysfs)
    assert found == frozenset({"rr", "wlc", "mh", "sh", "fo"})  # not ftp / pe_sip: no schedulers
    # a kernel without IPVS at all narrows nothing (checking a config for another machine)
    assert kernel_ipvs_schedulers("5.0-none", lib, tmp_path / "nosys") is None


def test_a_scheduler_the_kernel_lacks_is_a_config_error(tmp_path: Path) -> None:
    lib = _kernel_tree(tmp_path, ["rr", "wrr", "wlc"])
    ipvs = registry.plane("ipvs").static_capabilities
    caps = narrow_to_kernel(ipvs, kernel_ipvs_schedulers("6.1.0-test", lib, tmp_path), "6.1.0-test")
    assert load(scheduler="wlc", caps=caps).virtual_servers[0].scheduler == "wlc"
    assert errors(scheduler="twos", caps=caps) == [
        't.toml: virtual_server[web].scheduler: "twos" is not available on data plane '
        '"ipvs": the running kernel (6.1.0-test) has no such IPVS scheduler (module '
        "ip_vs_<name>); available: rr, wlc, wrr"
    ]


def test_one_fwmark_per_address_family() -> None:
    extra = '[[virtual_server]]\nname = "m{n}"\nfwmark = 5\nprotocol = "{p}"\n{a}'
    text = BASE.format(extra="", scheduler="wlc") + "".join(
        extra.format(n=n, p=p, a=a)
        for n, p, a in ((1, "tcp", ""), (2, "udp", ""), (3, "udp", 'address = "2001:db8::1"\n'))
    )
    with pytest.raises(config.ConfigError) as info:
        config.loads(text, "t.toml")
    assert info.value.render().splitlines()[1:] == [
        "t.toml: virtual_server[m2]: duplicate virtual server FWM 5 (also virtual_server[m1])"
    ]
