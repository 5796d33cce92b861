"""[daemon.nft] keys, and what `lvsmon check` rejects for `dataplane = "nft"`."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from lvsmon import config
from lvsmon.dataplane.registry import capabilities_of
from lvsmon.model import Config, NftSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "nft-nat.toml"

BASE = """
[daemon]
dataplane = "nft"
{extra}
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
scheduler = "{scheduler}"
{vs_extra}
[[virtual_server.real_server]]
address = "10.0.0.2"
{rs_extra}
"""


def load(extra: str = "", scheduler: str = "wrr", vs_extra: str = "", rs_extra: str = "") -> Config:
    text = BASE.format(extra=extra, scheduler=scheduler, vs_extra=vs_extra, rs_extra=rs_extra)
    return config.loads(text, "t.toml")


def errors(**kw: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        load(**kw)
    return info.value.render().splitlines()[1:]


def test_defaults() -> None:
    assert load().daemon.nft == NftSettings()
    assert load().daemon.dataplane == "nft"


def test_the_example_documents_every_key_with_its_default() -> None:
    doc = tomllib.loads(EXAMPLE.read_text())
    keys = set(doc["daemon"]["nft"])
    fields = set(NftSettings.__dataclass_fields__)
    assert keys == fields, keys ^ fields
    assert config.load(EXAMPLE).daemon.nft == NftSettings()


def test_every_key() -> None:
    settings = load("""
[daemon.nft]
table = "lb_main"
flush_on_stop = false
state_file = "/run/lvsmon/other.json"
masquerade = true
snat_address = ["198.51.100.1", "2001:db8::1"]
hash_seed = 7
persistence_size = 1024
conntrack_limit = 5000
ip_forward = false
""").daemon.nft
    assert settings == NftSettings(
        table="lb_main",
        flush_on_stop=False,
        state_file="/run/lvsmon/other.json",
        masquerade=True,
        snat_address=(ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("2001:db8::1")),
        hash_seed=7,
        persistence_size=1024,
        conntrack_limit=5000,
        ip_forward=False,
    )


@pytest.mark.parametrize("scheduler", ["lc", "wlc", "sed", "nq", "lblc", "lblcr", "ovf", "twos"])
def test_connection_count_schedulers_are_rejected_with_the_way_out(scheduler: str) -> None:
    (line,) = errors(scheduler=scheduler)
    assert line.startswith(
        f't.toml: virtual_server[web].scheduler: "{scheduler}" is not available on data plane '
        '"nft": connection-count schedulers cannot be decided per packet in nftables; use "mh" '
        'or "wrr" with [virtual_server.adaptive_weights]'
    )
    assert line.endswith("available: dh, fo, mh, rr, sh, wrr")


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "sh", "dh", "mh", "fo"])
def test_the_schedulers_a_table_can_hold_are_accepted(scheduler: str) -> None:
    assert load(scheduler=scheduler).virtual_servers[0].scheduler == scheduler


def test_what_else_the_plane_cannot_do_is_named_by_key() -> None:
    assert errors(scheduler="mh", vs_extra='scheduler_flags = ["mh-port", "mh-fallback"]') == [
        't.toml: virtual_server[web].scheduler_flags: "mh-fallback" is not available on data '
        'plane "nft" (flags of "mh" there: "mh-port")'
    ]
    assert errors(rs_extra="upper_threshold = 100") == [
        "t.toml: virtual_server[web].real_server[1].upper_threshold: 100: connection limits are "
        'not available on data plane "nft" (no connection counts at decision time)'
    ]
    assert errors(vs_extra='forwarding = "dr"') == [
        't.toml: virtual_server[web].forwarding: "dr" is not supported on data plane "nft": '
        "the nftables data plane forwards by DNAT (NAT only; TCP and UDP)"
    ]
    assert errors(vs_extra='protocol = "sctp"')[0].startswith(
        't.toml: virtual_server[web].protocol: "sctp" is not supported on data plane "nft"'
    )


def test_nft_key_mistakes() -> None:
    lines = errors(
        extra="""
[daemon.nft]
table = "my table"
snat_address = ["198.51.100.1", "198.51.100.2"]
hash_seed = -1
persistence_sise = 10
"""
    )
    assert lines == [
        't.toml: daemon.nft.table: "my table" is not valid: expected an nftables table name '
        "(letters, digits, _)",
        "t.toml: daemon.nft.snat_address: an array is not valid: expected an array of "
        "addresses, one per family (at most one address per family)",
        "t.toml: daemon.nft.hash_seed: -1 is not valid: expected an integer 0..4294967295",
        't.toml: daemon.nft.persistence_sise: unknown key (did you mean "persistence_size"?); '
        "known keys here: conntrack_limit, flush_on_stop, hash_seed, ip_forward, masquerade, "
        "persistence_size, snat_address, state_file, table",
    ]


def test_capabilities() -> None:
    caps = capabilities_of("nft")
    assert caps.name == "nft" and caps.fwmark and not caps.thresholds
    assert caps.forwarding == {"nat"} and caps.protocols == {"tcp", "udp"}
