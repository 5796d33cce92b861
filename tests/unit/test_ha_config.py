"""`[[failover_group]]` reading: defaults, every key, and errors that name the key path."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lvsmon.config.failover import read_failover_groups
from lvsmon.configkit import Problem
from lvsmon.configkit import Section as _Section
from lvsmon.model.failover import FailoverGroup, TrackInterface

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[[failover_group]]
name = "edge"
vrid = 51
interface = "eth0"

[[failover_group.address]]
address = "192.0.2.100/24"
"""


def read(text: str) -> tuple[tuple[FailoverGroup, ...], list[str]]:
    problems: list[Problem] = []
    groups = read_failover_groups(tomllib.loads(text), problems)
    return groups, [p.render("lvsmon.toml") for p in problems]


def errors(text: str) -> list[str]:
    groups, problems = read(text)
    assert problems and not groups
    return problems


def test_minimal_group_and_defaults() -> None:
    (g,), problems = read(MINIMAL)
    assert problems == []
    assert (g.name, g.vrid, g.interface, g.family, g.priority) == ("edge", 51, "eth0", 4, 100)
    assert g.advert_interval == 1.0 and g.preempt and g.preempt_delay == 0
    assert g.addresses[0].address == ipaddress.ip_address("192.0.2.100")
    assert g.addresses[0].prefixlen == 24 and g.addresses[0].interface == "eth0"
    assert g.garp_repeat == 5 and g.garp_refresh == 10.0 and g.auth_key == b""
    assert g.effective_handover_timeout == 4.0
    assert g.advertised == (ipaddress.ip_address("192.0.2.100"),)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "config").glob("failover-*.toml")), ids=lambda p: p.name
)
def test_shipped_failover_examples_are_valid(path: Path) -> None:
    doc: dict[str, Any] = tomllib.loads(path.read_text())
    (group,), problems = read(path.read_text())
    assert problems == []
    assert group.addresses
    # only the failover tables are ours; everything else in the file is the daemon's
    root = _Section(doc, "", [])
    root.known.update(k for k in doc if k != "failover_group")
    root.tables("failover_group")
    root.check_unknown()
    assert root.problems == []


def test_nat_example_moves_vip_ipv6_and_nat_gateway_together() -> None:
    (g,), _ = read((ROOT / "config/failover-nat.toml").read_text())
    assert [(str(a.address), a.interface) for a in g.addresses] == [
        ("192.0.2.100", "eth0"),
        ("2001:db8::100", "eth0"),
        ("198.51.100.1", "eth1"),
    ]
    assert g.advertised == (
        ipaddress.ip_address("192.0.2.100"),
        ipaddress.ip_address("198.51.100.1"),
    )
    assert g.track_interfaces == (TrackInterface("eth1", -100),)
    assert g.track_real_servers is not None and g.track_real_servers.virtual_servers == ("web",)
    assert g.hooks.for_state("master") == ("/usr/local/sbin/ha-event", "master")
    assert g.hooks.for_state("initialize") == ("/usr/local/sbin/ha-event", "stop")


def test_unicast_auth_example() -> None:
    (g,), _ = read((ROOT / "config/failover-ipvs-unicast.toml").read_text())
    assert g.unicast_peers == (ipaddress.ip_address("192.0.2.3"),)
    assert g.auth_key == b"change-me-to-a-long-random-secret"
    assert g.advert_interval == 0.1


def test_auth_key_file(tmp_path: Path) -> None:
    key = tmp_path / "ha.key"
    key.write_text("0123456789abcdef0123\n")
    (g,), _ = read(with_group(f'auth = "hmac-sha256"\nauth_key_file = "{key}"'))
    assert g.auth_key == b"0123456789abcdef0123"


def with_group(extra: str) -> str:
    head, addr = MINIMAL.split("[[failover_group.address]]")
    return head + extra + "\n[[failover_group.address]]" + addr


MISTAKES = {
    "missing vrid": (
        MINIMAL.replace("vrid = 51\n", ""),
        [
            "lvsmon.toml: failover_group[edge].vrid: missing: expected an integer virtual router "
            "id 1..255"
        ],
    ),
    "typo": (
        with_group("priorty = 150"),
        [
            'lvsmon.toml: failover_group[edge].priorty: unknown key (did you mean "priority"?); '
            "known keys here: address, advert_interval, auth, auth_key, auth_key_file, family, "
            "garp_interval, garp_refresh, garp_repeat, handover_forward, handover_timeout, "
            "interface, name, notify, preempt, preempt_delay, priority, track_interface, "
            "track_real_servers, unicast_peers, version, vrid"
        ],
    ),
    "handover_forward too long": (
        with_group('handover_forward = "2h"'),
        [
            'lvsmon.toml: failover_group[edge].handover_forward: "2h" is not valid: expected a '
            'duration such as "100ms", "2s", "5m" or "1h30m" up to 1h'
        ],
    ),
    "interval not in centiseconds": (
        with_group('advert_interval = "15ms"'),
        [
            'lvsmon.toml: failover_group[edge].advert_interval: "15ms" is not valid: expected a '
            'duration of whole centiseconds from "10ms" to "40.95s", such as "1s" or "100ms"'
        ],
    ),
    "priority 0": (
        with_group("priority = 0"),
        [
            "lvsmon.toml: failover_group[edge].priority: 0 is not valid: expected an integer "
            "1..255 (255: the address owner; 0 is reserved for handover)"
        ],
    ),
    "version 2": (
        with_group("version = 2"),
        [
            "lvsmon.toml: failover_group[edge].version: 2 is not valid: expected 3 (VRRP version "
            "3, RFC 5798; keepalived: vrrp_version 3)"
        ],
    ),
    "bad address": (
        MINIMAL.replace("192.0.2.100/24", "192.0.2.300/24"),
        [
            'lvsmon.toml: failover_group[edge].address[1].address: "192.0.2.300/24" is not valid: '
            'expected an address with its prefix length, such as "192.0.2.100/24" or '
            '"2001:db8::100/64"'
        ],
    ),
    "no addresses": (
        MINIMAL.split("[[failover_group.address]]")[0],
        [
            "lvsmon.toml: failover_group[edge].address: missing: expected at least one "
            "[[failover_group.address]] table with an address the group moves"
        ],
    ),
    "track weight positive": (
        with_group('[[failover_group.track_interface]]\ninterface = "eth1"\nweight = 10\n'),
        [
            "lvsmon.toml: failover_group[edge].track_interface[1].weight: 10 is not valid: "
            "expected a negative integer -254..-1 (subtracted from the priority); omit to go to "
            "fault"
        ],
    ),
    "hook as a shell string": (
        with_group('[failover_group.notify]\non_master = "/bin/x arg"\n'),
        [
            'lvsmon.toml: failover_group[edge].notify.on_master: "/bin/x arg" is not valid: '
            "expected an array: the program and its arguments, such as "
            '["/usr/local/bin/ha-event", "-v"]'
        ],
    ),
    "short key": (
        with_group('auth = "hmac-sha256"\nauth_key = "short"'),
        ["lvsmon.toml: failover_group[edge].auth_key: is 5 bytes long: expected at least 16"],
    ),
    "key without auth": (
        with_group('auth_key = "0123456789abcdef"'),
        [
            'lvsmon.toml: failover_group[edge].auth_key: is set but auth = "off"; set auth = '
            '"hmac-sha256" to use it'
        ],
    ),
    "owner with tracking": (
        with_group('priority = 255\n[[failover_group.track_interface]]\ninterface = "eth1"\n'),
        [
            "lvsmon.toml: failover_group[edge].priority: 255 (the address owner) cannot be "
            "lowered by tracking; use 1..254 with track_interface/track_real_servers"
        ],
    ),
    "preempt delay without preempt": (
        with_group('preempt = false\npreempt_delay = "5s"'),
        [
            'lvsmon.toml: failover_group[edge].preempt_delay: "5s" has no effect with '
            "preempt = false"
        ],
    ),
    "peer of the other family": (
        with_group('unicast_peers = ["2001:db8::3"]'),
        [
            'lvsmon.toml: failover_group[edge].unicast_peers: "2001:db8::3" is not IPv4, the '
            "family of the adverts"
        ],
    ),
    "sync daemon where it used to be": (
        with_group('[failover_group.sync_daemon]\ninterface = "eth1"\n'),
        [
            "lvsmon.toml: failover_group[edge].sync_daemon: moved: set [daemon.ipvs.sync_daemon] "
            'interface, syncid and follow = "edge" (the IPVS sync daemon follows this group\'s '
            "role)"
        ],
    ),
    "unknown virtual server": (
        '[[virtual_server]]\nname = "web"\n'
        + with_group(
            "[failover_group.track_real_servers]\nmin_fraction = 0.5\nweight = -10\n"
            'virtual_servers = ["wbe"]\n'
        ),
        [
            'lvsmon.toml: failover_group[edge].track_real_servers.virtual_servers: "wbe" is not '
            "a configured virtual server"
        ],
    ),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistakes_name_the_key_path(name: str) -> None:
    text, expected = MISTAKES[name]
    assert errors(text) == expected


def test_duplicates_across_groups() -> None:
    second = MINIMAL.replace('"edge"', '"edge2"')
    _, problems = read(MINIMAL + second)
    assert problems == [
        "lvsmon.toml: failover_group[edge2].vrid: 51 on eth0 (IPv4) is also used by "
        "failover_group[edge]",
    ]
    _, problems = read(MINIMAL + MINIMAL)
    assert problems == [
        'lvsmon.toml: failover_group[edge].name: "edge" is used by two failover groups (#1 and #2)'
    ]
    third = second.replace("vrid = 51", "vrid = 52")
    _, problems = read(MINIMAL + third)
    assert problems == [
        'lvsmon.toml: failover_group[edge2].address[1].address: "192.0.2.100" '
        "is also moved by failover_group[edge]"
    ]


def test_ipv6_family_and_bare_address() -> None:
    (g,), problems = read(MINIMAL.replace("192.0.2.100/24", "2001:db8::100"))
    assert problems == [] and g.family == 6 and g.addresses[0].prefixlen == 128
    _, problems = read(with_group('family = "ipv6"'))
    assert problems == [
        'lvsmon.toml: failover_group[edge].family: "ipv6": no address of the '
        "group is IPv6; adverts must list at least one"
    ]
