"""failover_group.handover_forward: the key, where it is allowed, and the new master's
forwarding table (lvsmon.ha.handover; the netns tier proves it on the wire)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

import pytest

from lvsmon import config
from lvsmon.configkit import ConfigError
from lvsmon.ha.handover import forwarding, handover_identity, held_addresses, removal, table_name
from lvsmon.model.failover import FailoverGroup, GroupAddress

ip = ipaddress.ip_address

CONFIG = """
[daemon]
dataplane = "{plane}"

[[virtual_server]]
name = "web"
address = "192.0.2.100"
port = 80
[[virtual_server.real_server]]
address = "198.51.100.11"
forwarding = "{forwarding}"

[[failover_group]]
name = "edge"
vrid = 51
interface = "eth0"
handover_forward = "20s"
[[failover_group.address]]
address = "192.0.2.100/24"
"""


def group(family: int = 4, forward: float = 20.0) -> FailoverGroup:
    addresses = (
        GroupAddress(ip("192.0.2.100"), 24, "eth0"),
        GroupAddress(ip("2001:db8::100"), 64, "eth0"),
        GroupAddress(ip("198.51.100.1"), 24, "eth1"),
    )
    return FailoverGroup("edge", 51, "eth0", family, addresses, handover_forward=forward)


def test_the_proxy_plane_takes_the_key() -> None:
    cfg = config.loads(CONFIG.format(plane="proxy", forwarding="nat"))
    assert cfg.failover_groups[0].handover_forward == 20.0


@pytest.mark.parametrize(("plane", "why"), [("ipvs", "sync daemon"), ("nft", "conntrackd")])
def test_kernel_planes_refuse_the_key_and_say_what_to_use(plane: str, why: str) -> None:
    forwarding_ = "dr" if plane == "ipvs" else "nat"
    with pytest.raises(ConfigError) as exc:
        config.build(config.parse(CONFIG.format(plane=plane, forwarding=forwarding_)))
    text = str(exc.value)
    assert 'failover_group[edge].handover_forward: "20s" is for dataplane = "proxy"' in text
    assert why in text


def rules(doc: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [c["add"]["rule"]["expr"] for c in doc["nftables"] if "rule" in c.get("add", {})]


def test_forwarding_table_sends_unknown_segments_for_the_vips_to_the_peer() -> None:
    doc = json.loads(forwarding(group(), ip("192.0.2.2")))
    cmds = doc["nftables"]
    table = {"family": "ip", "name": "lvsmon_handover_51_eth0"}
    # replaces a table left behind, in the same transaction
    assert cmds[:3] == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    (flows,) = [c["add"]["set"] for c in cmds if "set" in c.get("add", {})]
    assert flows["timeout"] == 20 and "timeout" in flows["flags"]
    (chain,) = [c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})]
    assert chain["hook"] == "prerouting" and chain["prio"] > -200  # after conntrack
    counted, pick_up, pick_up_closing, forward = rules(doc)
    assert '"ct"' in json.dumps(counted) and "dup" not in json.dumps(counted)
    assert '"invalid"' in json.dumps(pick_up_closing) and '"fin", "rst"' in json.dumps(
        pick_up_closing
    )  # a FIN or RST first: conntrack cannot pick it up, the table still does
    text = json.dumps(pick_up)
    # only the group's interface and the adverts' family: not the v6 VIP, not the gateway
    assert '"set": ["192.0.2.100"]' in text
    assert '"right": "new"' in text and '"syn"' in text
    assert {"dup": {"addr": "192.0.2.2", "dev": "eth0"}} in forward and {"drop": None} in forward


def test_ipv6_groups_forward_to_the_peers_link_local_address() -> None:
    doc = json.loads(forwarding(group(family=6), ip("fe80::2")))
    assert doc["nftables"][0]["add"]["table"]["family"] == "ip6"
    *_, forward = rules(doc)
    assert {"dup": {"addr": "fe80::2", "dev": "eth0"}} in forward
    assert '"set": ["2001:db8::100"]' in json.dumps(rules(doc)[0])


def test_removal_deletes_only_the_groups_own_table() -> None:
    doc = json.loads(removal(group()))
    names = {c[verb]["table"]["name"] for c in doc["nftables"] for verb in c}
    assert names == {table_name(group())}


def test_the_old_master_holds_its_vips_of_the_adverts_family_on_lo() -> None:
    held = held_addresses([group(), group(forward=0)])
    assert held == [GroupAddress(ip("192.0.2.100"), 32, "lo")]


def test_without_a_peer_the_table_only_keeps_conntrack_on() -> None:
    """From the VRRP process's start: this director's own connections are then known
    when it takes over, and never taken for the old master's."""
    doc = json.loads(forwarding(group(), None))
    (only,) = rules(doc)
    text = json.dumps(only)
    assert '"ct"' in text and '"new"' in text and "dup" not in text and "drop" not in text


def test_the_table_is_rebuilt_only_when_what_it_is_built_from_changes() -> None:
    g = group()
    assert handover_identity(g) == handover_identity(dataclasses.replace(g, priority=200))
    assert handover_identity(g) != handover_identity(dataclasses.replace(g, handover_forward=5))
    moved = dataclasses.replace(g, addresses=(GroupAddress(ip("192.0.2.101"), 24, "eth0"),))
    assert handover_identity(g) != handover_identity(moved)
    assert (
        table_name(dataclasses.replace(g, interface="bond0.100")) == "lvsmon_handover_51_bond0_100"
    )
