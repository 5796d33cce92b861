"""BGP for the VIPs next to VRRP for the real servers' NAT gateway: `lvsmon check`
accepts it where each director gets its own replies, and refuses NAT in the kernel
without SNAT (lvsmon/config/announce_nat.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsmon import config
from lvsmon.dataplane.registry import capabilities_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "config" / "bgp-vrrp-gateway.toml").read_text()
SLOPPY = "[daemon.ipvs.sysctl]\nsloppy_tcp = true\n"


def on(plane: str, text: str = EXAMPLE) -> str:
    return text.replace('dataplane = "proxy"', f'dataplane = "{plane}"')


def problems(text: str, plane: str) -> list[str]:
    try:
        config.loads(text, "f.toml", capabilities_of(plane))
    except config.ConfigError as exc:
        return [p.render("f.toml") for p in exc.problems]
    return []


def test_the_example_combines_bgp_and_vrrp() -> None:
    cfg = config.load(ROOT / "config" / "bgp-vrrp-gateway.toml")
    (group,) = cfg.failover_groups
    assert cfg.bgp is not None and cfg.virtual_servers[0].announce
    assert [str(a.address) for a in group.addresses] == ["198.51.100.1"]


@pytest.mark.parametrize(
    ("plane", "extra", "fix"),
    [
        ("ipvs", SLOPPY, 'use forwarding = "dr" or "tunnel"'),
        ("nft", "", "set daemon.nft.masquerade = true"),
    ],
)
def test_kernel_nat_with_a_vrrp_gateway_is_refused(plane: str, extra: str, fix: str) -> None:
    text = on(plane).replace('scheduler_flags = ["mh-port", "mh-fallback"]', "") + extra
    got = problems(text, plane)
    assert len(got) == 1, got
    assert got[0].startswith(
        f'f.toml: virtual_server[web].forwarding: "nat" on the {plane} data plane with '
        "announce = true, but failover_group[gateway] moves 198.51.100.1/24, on the network "
        "of real server 198.51.100.11:80"
    ), got
    assert fix in got[0]


@pytest.mark.parametrize(
    ("plane", "change"),
    [
        ("ipvs", 'forwarding = "dr"\nannounce = true'),  # replies go straight to the client
        ("ipvs", 'forwarding = "tunnel"\nannounce = true'),
        ("ipvs", "announce = false"),  # VRRP alone: the classic NAT pair
    ],
)
def test_where_each_director_gets_its_replies_it_is_accepted(plane: str, change: str) -> None:
    text = on(plane).replace("announce = true ", change + " ") + SLOPPY
    assert problems(text, plane) == []


def test_nft_with_source_nat_is_accepted() -> None:
    text = on("nft").replace('scheduler_flags = ["mh-port", "mh-fallback"]', "")
    masq = text.replace(
        'shutdown_grace = "10s"', 'shutdown_grace = "10s"\n[daemon.nft]\nmasquerade = true'
    )
    assert problems(masq, "nft") == []


def test_a_group_address_off_the_real_servers_network_is_not_their_gateway() -> None:
    text = on("ipvs").replace('"198.51.100.1/24"', '"203.0.113.1/24"') + SLOPPY
    assert problems(text, "ipvs") == []
