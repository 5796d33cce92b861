"""`health_check` tables -> HealthCheck: every type, inheritance, and errors with key paths."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lvsmon import configkit as cfg
from lvsmon.config.health import health_check_of, read_health_check
from lvsmon.model.health import (
    CheckType,
    DnsSpec,
    ExecSpec,
    HealthCheck,
    HttpSpec,
    SendExpectSpec,
    TlsSpec,
)

ROOT = Path(__file__).resolve().parents[2]
VS = "virtual_server[web].health_check"
RS = "virtual_server[web].real_server[2].health_check"


def read(data: dict[str, Any], base: HealthCheck | None = None) -> HealthCheck | None:
    problems: list[cfg.Problem] = []
    check = read_health_check(data, RS if base else VS, problems, base=base)
    assert not problems, problems
    return check


def errors(data: dict[str, Any], base: HealthCheck | None = None) -> list[str]:
    problems: list[cfg.Problem] = []
    check = read_health_check(data, RS if base else VS, problems, base=base)
    assert check is None and problems
    return [f"{p.path}: {p.message}" for p in problems]


def test_tcp_defaults() -> None:
    assert read({"type": "tcp"}) == HealthCheck(
        CheckType.TCP, interval=2.0, timeout=1.0, rise=2, fall=3
    )


def test_http_every_key() -> None:
    check = read(
        {
            "type": "http",
            "interval": "500ms",
            "timeout": "200ms",
            "rise": 1,
            "fall": 2,
            "connect_address": "::1",
            "connect_port": 8080,
            "max_response_bytes": 4096,
            "method": "HEAD",
            "path": "/healthz?full=1",
            "host": "www.example.com",
            "expect_status": [200, "301-302"],
            "expect_body": "ok|up",
        }
    )
    assert check is not None
    assert (check.interval, check.timeout, check.rise, check.fall) == (0.5, 0.2, 1, 2)
    assert check.endpoint("10.0.0.2", 80) == ("::1", 8080)
    assert check.spec == HttpSpec(
        "HEAD", "/healthz?full=1", "www.example.com", ((200, 200), (301, 302)), re.compile(b"ok|up")
    )


def test_https_tls_keys(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("client.example")
    cert_file = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    check = read(
        {
            "type": "https",
            "tls_sni": "www.example.com",
            "tls_verify": True,
            "ca_file": str(ca_file),
            "client_cert": str(cert_file),
        }
    )
    assert check is not None and isinstance(check.spec, HttpSpec)
    assert check.spec.tls == TlsSpec("www.example.com", True, str(ca_file), str(cert_file), "")


def test_send_expect_forms() -> None:
    check = read({"type": "send_expect", "send_hex": "0d0a", "expect_literal": "+OK"})
    assert check is not None
    assert check.spec == SendExpectSpec("tcp", b"\r\n", re.compile(re.escape(b"+OK")))
    any_answer = read({"type": "send_expect", "protocol": "udp", "send": "ping", "expect": "*"})
    assert any_answer is not None and any_answer.spec == SendExpectSpec("udp", b"ping", None, True)
    banner = read({"type": "send_expect", "expect": "^220 "})
    assert banner is not None and isinstance(banner.spec, SendExpectSpec)
    assert banner.spec.send == b"" and banner.spec.expect == re.compile(b"^220 ")


def test_exec_resolves_the_program_on_path() -> None:
    check = read(
        {"type": "exec", "program": "true", "args": ["{address}", "a b"], "dynamic_weight": True}
    )
    assert check is not None and isinstance(check.spec, ExecSpec)
    assert os.path.isabs(check.spec.program) and check.spec.program.endswith("/true")
    assert check.spec.args == ("{address}", "a b") and check.spec.dynamic_weight


def test_dns_keys() -> None:
    check = read(
        {
            "type": "dns",
            "query_name": "www.example.com",
            "query_type": "aaaa",
            "expect_rcode": "nxdomain",
            "expect_answer": "2001:db8::1",
        }
    )
    assert check is not None
    assert check.spec == DnsSpec("www.example.com", "AAAA", "NXDOMAIN", ("2001:db8::1",))


def test_a_real_server_table_is_laid_over_the_virtual_servers() -> None:
    base = read(
        {
            "type": "http",
            "interval": "1s",
            "timeout": "300ms",
            "path": "/health",
            "expect_status": "200",
        }
    )
    assert base is not None
    same = read({"path": "/other", "fall": 5}, base)
    assert same is not None and isinstance(same.spec, HttpSpec)
    assert (same.interval, same.timeout, same.fall, same.spec.path) == (1.0, 0.3, 5, "/other")
    assert same.spec.expect_status == ((200, 200),)
    other = read({"type": "tcp"}, base)
    assert other == HealthCheck(CheckType.TCP, interval=1.0, timeout=0.3)
    assert read({"enabled": False, "anything": 1}, base) is None


def test_a_shorter_interval_shortens_the_default_timeout() -> None:
    check = read({"type": "tcp", "interval": "500ms"})
    assert check is not None and check.timeout == 0.25


def test_health_check_of_a_section() -> None:
    problems: list[cfg.Problem] = []
    vs = cfg.Section({"health_check": {"type": "tcp"}}, "virtual_server[web]", problems)
    base = health_check_of(vs)
    assert base is not None and "health_check" in vs.known
    rs = cfg.Section({"address": "10.0.0.1"}, "virtual_server[web].real_server[1]", problems)
    assert health_check_of(rs, base=base, port=80) is base
    fw = cfg.Section({}, "virtual_server[fw].real_server[1]", problems)
    assert health_check_of(fw, base=base, port=0) is base
    assert [f"{p.path}: {p.message}" for p in problems] == [
        "virtual_server[fw].real_server[1].health_check.connect_port: missing: the real server "
        "has no port (fwmark), so the check needs one"
    ]


MISTAKES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "unknown type": (
        {"type": "htp"},
        [
            f'{VS}.type: "htp" is not valid: expected one of "tcp", "http", '
            '"https", "send_expect", '
            '"exec", "dns" (did you mean "http"?)',
        ],
    ),
    "missing type": (
        {"interval": "1s"},
        [
            f'{VS}.type: missing: expected one of "tcp", "http", "https", '
            '"send_expect", "exec", "dns"',
        ],
    ),
    "timeout not below interval": (
        {"type": "tcp", "interval": "1s", "timeout": "1s"},
        [
            f'{VS}.timeout: "1s" is not valid: expected a duration shorter than interval ("1s")',
        ],
    ),
    "bad body regex": (
        {"type": "http", "expect_body": "ok("},
        [
            f'{VS}.expect_body: "ok(" is not valid: expected a regular expression '
            "(bad regular expression: missing ), unterminated subpattern at position 2)",
        ],
    ),
    "bad expect regex": (
        {"type": "send_expect", "expect": "+OK"},
        [
            f'{VS}.expect: "+OK" is not valid: expected a regular expression, or '
            '"*" for any answer '
            "(bad regular expression: nothing to repeat at position 0)",
        ],
    ),
    "missing program": (
        {"type": "exec"},
        [
            f"{VS}.program: missing: expected an executable program (path or name)",
        ],
    ),
    "program not found": (
        {"type": "exec", "program": "/nonexistent/check-it"},
        [
            f'{VS}.program: "/nonexistent/check-it" is not valid: expected an executable program '
            "(path or name) (not found)",
        ],
    ),
    "unreadable CA file": (
        {"type": "https", "tls_verify": True, "ca_file": "/nonexistent.pem"},
        [
            f'{VS}.ca_file: "/nonexistent.pem" is not valid: expected a readable file of PEM '
            "certificates (cannot read the CA file: No such file or directory)",
        ],
    ),
    "key of another type": (
        {"type": "tcp", "path": "/"},
        [
            f"{VS}.path: unknown key; known keys here: connect_address, "
            "connect_port, enabled, fall, "
            "interval, max_response_bytes, rise, timeout, type",
        ],
    ),
    "typo": (
        {"type": "http", "expect_statuss": 200},
        [
            f'{VS}.expect_statuss: unknown key (did you mean "expect_status"?); known keys here: '
            "connect_address, connect_port, enabled, expect_body, expect_status, fall, host, "
            "interval, max_response_bytes, method, path, rise, timeout, type",
        ],
    ),
    "bad status range": (
        {"type": "http", "expect_status": "299-200"},
        [
            f'{VS}.expect_status: "299-200" is not valid: expected status codes and ranges such as '
            '200, "200-299" or [200, 301]',
        ],
    ),
    "two expect forms": (
        {"type": "send_expect", "expect": "a", "expect_hex": "00"},
        [
            f"{VS}.expect_hex: conflicts with expect: set only one of expect, expect_literal, "
            "expect_hex",
        ],
    ),
    "udp without expect": (
        {"type": "send_expect", "protocol": "udp", "send": "x"},
        [
            f'{VS}.expect: missing: a UDP check needs an answer to judge ("*" = any answer)',
        ],
    ),
    "bad numbers": (
        {"type": "tcp", "rise": 0, "fall": True, "interval": "0s"},
        [
            f'{VS}.interval: "0s" is not valid: expected a duration such as "100ms", "2s" or '
            '"1m" above 0',
            f"{VS}.rise: 0 is not valid: expected an integer 1..1000",
            f"{VS}.fall: true is not valid: expected an integer 1..1000",
        ],
    ),
    "dns without a name": (
        {"type": "dns", "query_type": "MXX"},
        [
            f'{VS}.query_name: missing: expected a domain name such as "example.com"',
            f'{VS}.query_type: "MXX" is not valid: expected one of "A", "NS", "CNAME", "SOA", '
            '"PTR", "MX", "TXT", "AAAA", "SRV", "ANY" (did you mean "MX"?)',
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_mistakes_are_reported_with_their_key_path(case: str) -> None:
    data, expected = MISTAKES[case]
    assert errors(data) == expected


def test_a_program_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(stat.S_IRUSR)
    assert errors({"type": "exec", "program": str(script)}) == [
        f'{VS}.program: "{script}" is not valid: expected an executable program '
        "(path or name) (not an executable file)"
    ]


def test_a_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    (message,) = errors({"type": "https", "ca_file": str(bad)})
    assert message.startswith(f'{VS}.ca_file: "{bad}" is not valid: expected PEM CA certificates')


def test_errors_in_a_real_server_override_name_its_path() -> None:
    base = read({"type": "http"})
    assert errors({"timeout": "5s"}, base) == [
        f'{RS}.timeout: "5s" is not valid: expected a duration shorter than interval ("2s")'
    ]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "config").glob("health-*.toml")), ids=lambda p: p.name
)
def test_the_shipped_health_examples_are_valid_health_checks(path: Path) -> None:
    """Only the health_check tables (the whole file is checked by test_config once wired)."""
    doc = tomllib.loads(path.read_text())
    problems: list[cfg.Problem] = []
    seen = 0
    for i, vs in enumerate(doc["virtual_server"], start=1):
        vsec = cfg.Section(vs, f"virtual_server[{i}]", problems)
        base = health_check_of(vsec)
        for j, rs in enumerate(vs.get("real_server", []), start=1):
            rsec = cfg.Section(rs, f"{vsec.path}.real_server[{j}]", problems)
            port = rs.get("port", vs.get("port"))
            seen += health_check_of(rsec, base=base, port=port) is not None
    assert not problems and seen
