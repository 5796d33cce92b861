"""Config validation: every problem reported at once, each naming file, key path, value."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lvsmon import config, configkit
from lvsmon.model import Forwarding, Protocol

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[daemon]
dataplane = "proxy"
metrics_listen = "127.0.0.1:9108"

[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
protocol = "tcp"
scheduler = "wlc"

[[virtual_server.real_server]]
address = "10.0.0.2"
port = 80
weight = 1
"""


def errors(text: str, source: str = "lvsmon.toml") -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.loads(text, source)
    return info.value.render().splitlines()


def test_minimal_config_from_the_design_contract_loads() -> None:
    cfg = config.loads(MINIMAL)
    (vs,) = cfg.virtual_servers
    assert vs.name == "web" and vs.address == ipaddress.ip_address("192.0.2.10")
    assert vs.protocol is Protocol.TCP and vs.scheduler == "wlc"
    assert vs.real_servers[0].weight == 1 and vs.real_servers[0].forwarding is Forwarding.NAT
    assert cfg.daemon.metrics_listen.port == 9108


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_example_config_is_valid(path: Path) -> None:
    cfg = config.load(path)
    assert cfg.virtual_servers


# Snapshots of the exact text an operator sees for typical mistakes.
MISTAKES = {
    "typo in a key": (
        MINIMAL.replace("scheduler =", "schedular ="),
        [
            'lvsmon.toml: virtual_server[web].schedular: unknown key (did you mean "scheduler"?); '
            "known keys here: adaptive_weights, address, announce, forwarding, fwmark, "
            "health_check, name, on_failure, persistence_netmask, persistence_timeout, port, "
            "protocol, real_server, scheduler, scheduler_flags, slow_start, sorry_server",
        ],
    ),
    "weight out of range": (
        MINIMAL.replace("weight = 1", "weight = 70000"),
        [
            "lvsmon.toml: virtual_server[web].real_server[1].weight: 70000 is not valid: "
            "expected an integer weight 0..65535"
        ],
    ),
    "unknown scheduler": (
        MINIMAL.replace('"wlc"', '"wlcc"'),
        [
            'lvsmon.toml: virtual_server[web].scheduler: "wlcc" is not valid: expected one of '
            "rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh, fo, ovf, twos "
            '(did you mean "wlc"?)'
        ],
    ),
    "port as a string": (
        MINIMAL.replace("port = 80\nprotocol", 'port = "80"\nprotocol'),
        [
            'lvsmon.toml: virtual_server[web].port: "80" is not valid: '
            "expected an integer port 1..65535"
        ],
    ),
    "bad address": (
        MINIMAL.replace('"10.0.0.2"', '"10.0.0.256"'),
        [
            'lvsmon.toml: virtual_server[web].real_server[1].address: "10.0.0.256" is not valid: '
            "expected an IPv4 or IPv6 address"
        ],
    ),
    "direct routing on the proxy": (
        MINIMAL.replace('scheduler = "wlc"', 'scheduler = "wlc"\nforwarding = "dr"'),
        [
            'lvsmon.toml: virtual_server[web].forwarding: "dr" is not supported on data plane '
            '"proxy": the userspace proxy terminates connections (NAT only, no fwmark, no SCTP)'
        ],
    ),
    "bad duration": (
        MINIMAL.replace('scheduler = "wlc"', 'scheduler = "wlc"\npersistence_timeout = "5 min"'),
        [
            'lvsmon.toml: virtual_server[web].persistence_timeout: "5 min" is not valid: expected '
            'a duration such as "100ms", "2s", "5m" or "1h30m" (0 = off)'
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_error_text_for_typical_mistakes(case: str) -> None:
    text, expected = MISTAKES[case]
    lines = errors(text)
    assert lines[0] == f"lvsmon.toml: {len(expected)} error" + ("s" if len(expected) > 1 else "")
    assert lines[1:] == expected


def test_all_errors_in_a_file_are_reported_at_once() -> None:
    text = MINIMAL.replace("weight = 1", "weight = -1").replace('"tcp"', '"tcpp"') + (
        '\n[[virtual_server.real_server]]\naddress = "10.0.0.2"\nport = 80\n'
    )
    lines = errors(text.replace('dataplane = "proxy"', 'dataplane = "proxy"\nbogus = 1'))
    assert lines[0] == "lvsmon.toml: 4 errors"
    joined = "\n".join(lines)
    assert "daemon.bogus: unknown key" in joined
    assert 'virtual_server[web].protocol: "tcpp" is not valid' in joined
    assert "real_server[1].weight: -1 is not valid" in joined
    assert "real_server[2]: duplicate real server 10.0.0.2:80 (also real_server[1])" in joined


def test_duplicate_virtual_servers_by_name_and_by_identity() -> None:
    second = MINIMAL.split("[[virtual_server]]")[1]
    lines = errors(MINIMAL + "[[virtual_server]]" + second)
    assert 'virtual_server[web].name: "web" is used by two virtual servers (#1 and #2)' in lines[1]
    other = second.replace('name = "web"', 'name = "web2"')
    lines = errors(MINIMAL + "[[virtual_server]]" + other)
    assert "virtual_server[web2]: duplicate virtual server TCP 192.0.2.10:80" in lines[1]


def test_ipv6_and_mixed_families() -> None:
    v6 = MINIMAL.replace('"192.0.2.10"', '"2001:db8::10"').replace('"10.0.0.2"', '"2001:db8::2"')
    (vs,) = config.loads(v6).virtual_servers
    assert vs.family == 6 and vs.persistence_netmask == 128
    assert vs.real_servers[0].label == "[2001:db8::2]:80"
    mixed = MINIMAL.replace('"192.0.2.10"', '"2001:db8::10"')
    assert "is IPv4 but the virtual server is IPv6" in "\n".join(errors(mixed))


def test_durations() -> None:
    assert configkit.parse_duration("100ms") == 0.1
    assert configkit.parse_duration("2s") == 2
    assert configkit.parse_duration("5m") == 300
    assert configkit.parse_duration("1h30m") == 5400
    for bad in ("", "5", "5 m", "m5", "1x", "-1s"):
        with pytest.raises(ValueError):
            configkit.parse_duration(bad)


def test_options_the_data_plane_cannot_honour() -> None:
    sctp = MINIMAL.replace('"tcp"', '"sctp"')
    assert 'protocol: "sctp" is not supported on data plane "proxy"' in "\n".join(errors(sctp))
    ipvs = sctp.replace('dataplane = "proxy"', 'dataplane = "ipvs"')
    assert config.loads(ipvs).virtual_servers[0].protocol is Protocol.SCTP
    flags = MINIMAL.replace('scheduler = "wlc"', 'scheduler = "wlc"\nscheduler_flags = ["sh-port"]')
    assert '"sh-port" is not a flag of scheduler "wlc"' in "\n".join(errors(flags))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read: No such file"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    with pytest.raises(config.ConfigError, match=r"bad.toml: not valid TOML"):
        config.load(bad)


def test_persistence_netmask_forms() -> None:
    base = MINIMAL.replace('scheduler = "wlc"', 'scheduler = "wlc"\npersistence_timeout = "300s"')
    dotted = base.replace(
        "persistence_timeout", 'persistence_netmask = "255.255.255.0"\npersistence_timeout'
    )
    assert config.loads(dotted).virtual_servers[0].persistence_netmask == 24
    prefix = base.replace("persistence_timeout", "persistence_netmask = 16\npersistence_timeout")
    assert config.loads(prefix).virtual_servers[0].persistence_netmask == 16
    assert config.loads(base).virtual_servers[0].persistence_timeout == 300
