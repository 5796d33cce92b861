"""`[virtual_server.health_check]` and `[virtual_server.real_server.health_check]` -> HealthCheck.

The virtual server's table is the default for all its real servers; a real
server's own table is laid over it key by key (when it names another `type`,
only the keys common to every type are inherited). `enabled = false` in a
real server's table turns checking off for that real server.

Built on lvsmon.configkit, so errors read like every other config error:
`virtual_server[web].health_check.timeout: "3s" is not valid: expected a
duration shorter than interval ("2s")`.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lvsmon import configkit as ck
from lvsmon.health import dnswire
from lvsmon.model.health import (
    CheckType,
    DnsSpec,
    ExecSpec,
    HealthCheck,
    HttpSpec,
    SendExpectSpec,
    Spec,
    TcpSpec,
    TlsSpec,
    default_spec,
)

TYPES = tuple(t.value for t in CheckType)
COMMON_KEYS = (
    "type",
    "enabled",
    "interval",
    "timeout",
    "rise",
    "fall",
    "connect_address",
    "connect_port",
    "max_response_bytes",
)
_TOKEN = re.compile(r"[A-Z]{1,20}")
_STATUS_RANGE = re.compile(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
PROGRAM = "an executable program (path or name)"
HEALTH_DURATION = 'a duration such as "100ms", "2s" or "1m"'
MAX_PEM_BYTES = 1 * 2**20


def health_check_of(
    sec: ck.Section, *, base: HealthCheck | None = None, port: int | None = None
) -> HealthCheck | None:
    """The check for `sec` (a virtual server's or a real server's table): its
    `health_check` table over `base`, or `base` when it has none. `port` is the
    real server's port; 0 (a port-less fwmark real server) needs connect_port."""
    sec.known.add("health_check")
    path = sec.key_path("health_check")
    if "health_check" in sec.data:
        data = sec.table("health_check")
        check = read_health_check(data, path, sec.problems, base=base)
    else:
        check = base
    portless = port == 0 and check is not None and not check.connect_port
    if portless and check is not None and check.type is not CheckType.EXEC:
        sec.error(
            "health_check.connect_port",
            "missing: the real server has no port (fwmark), so the check needs one",
        )
    return check


def read_health_check(
    data: dict[str, Any], path: str, problems: list[ck.Problem], *, base: HealthCheck | None = None
) -> HealthCheck | None:
    """One `health_check` table at `path`. None: disabled, or too broken to use
    (the reasons are in `problems`)."""
    sec = ck.Section(data, path, problems)
    if not sec.get("enabled", ck.boolean, True, "true or false"):
        sec.known.update(data)  # a disabled check's other keys are not checked
        return None
    before = len(problems)
    choose = ck.choice(TYPES)
    if base is not None:
        name: str | None = sec.get("type", choose, base.type.value, _one_of(TYPES))
    else:
        name = sec.require("type", choose, _one_of(TYPES))
    if name is None or ("type" in data and data["type"] not in TYPES):
        return None  # without a type, its other keys cannot be judged
    kind = CheckType(name)
    if base is None or base.type is not kind:
        inherited: HealthCheck = HealthCheck(kind, spec=default_spec(kind))
        if base is not None:
            inherited = replace(base, type=kind, spec=default_spec(kind))
    else:
        inherited = base
    check = _read_common(sec, kind, inherited)
    spec = _SPEC_READERS[kind](sec, inherited.spec)
    sec.check_unknown()
    if len(problems) > before or spec is None:
        return None
    return replace(check, spec=spec)


def _one_of(options: tuple[str, ...]) -> str:
    return "one of " + ", ".join(f'"{o}"' for o in options)


def _read_common(sec: ck.Section, kind: CheckType, d: HealthCheck) -> HealthCheck:
    interval = sec.get("interval", ck.positive_duration, d.interval, HEALTH_DURATION + " above 0")
    timeout = sec.get("timeout", ck.positive_duration, d.timeout, HEALTH_DURATION + " above 0")
    if timeout >= interval and "timeout" not in sec.data:
        timeout = interval / 2  # an inherited or default timeout follows a shorter interval
    if timeout >= interval:
        shown = ck.show(sec.data["timeout"])
        limit = ck.format_duration(interval)
        sec.error(
            "timeout",
            f'{shown} is not valid: expected a duration shorter than interval ("{limit}")',
        )
    rise = sec.get("rise", ck.int_in(1, 1000), d.rise, "an integer 1..1000")
    fall = sec.get("fall", ck.int_in(1, 1000), d.fall, "an integer 1..1000")
    address = sec.get("connect_address", ck.address, None, "an IPv4 or IPv6 address")
    port = sec.get("connect_port", ck.int_in(1, 65535), d.connect_port, ck.PORT)
    cap = sec.get(
        "max_response_bytes",
        ck.int_in(64, 64 * 2**20),
        d.max_response_bytes,
        "an integer 64..67108864",
    )
    return HealthCheck(
        type=kind,
        interval=interval,
        timeout=timeout,
        rise=rise,
        fall=fall,
        connect_address=str(address) if address is not None else d.connect_address,
        connect_port=port,
        max_response_bytes=cap,
        spec=d.spec,
    )


# --- per type ---


def _read_tcp(sec: ck.Section, d: Spec) -> Spec | None:
    return TcpSpec()


def _read_http(sec: ck.Section, d: Spec) -> Spec | None:
    assert isinstance(d, HttpSpec)
    method = sec.get("method", _regex_text(_TOKEN), d.method, 'an HTTP method such as "GET"')
    path = sec.get("path", _request_path, d.path, 'a request path starting with "/"')
    host = sec.get("host", _regex_text(_HEADER_SAFE), d.host, "a Host header value")
    status = sec.get(
        "expect_status",
        _status_ranges,
        d.expect_status,
        'status codes and ranges such as 200, "200-299" or [200, 301]',
    )
    body = sec.get("expect_body", _bytes_regex, d.expect_body, "a regular expression")
    tls = _read_tls(sec, d.tls) if d.tls is not None else None
    return HttpSpec(method, path, host, status, body, tls)


def _read_tls(sec: ck.Section, d: TlsSpec) -> TlsSpec:
    sni = sec.get("tls_sni", _regex_text(_HEADER_SAFE), d.sni, "a server name")
    verify = sec.get("tls_verify", ck.boolean, d.verify, "true or false")
    ca = sec.get("ca_file", _readable("CA"), d.ca_file, "a readable file of PEM certificates")
    cert = sec.get(
        "client_cert", _readable("certificate"), d.client_cert, "a readable PEM certificate file"
    )
    key = sec.get("client_key", _readable("key"), d.client_key, "a readable PEM key file")
    if key and not cert:
        sec.error("client_key", "is set but client_cert is not")
    tls = TlsSpec(sni, verify, ca, cert, key)
    if ca and "ca_file" in sec.data:
        try:
            ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, ValueError) as exc:
            sec.error("ca_file", f'"{ca}" is not valid: expected PEM CA certificates ({exc})')
    if cert and {"client_cert", "client_key"} & set(sec.data):
        try:
            ssl.create_default_context().load_cert_chain(cert, key or None)
        except (ssl.SSLError, OSError) as exc:
            sec.error(
                "client_cert",
                f'"{cert}" is not valid: expected a PEM certificate and its key ({exc})',
            )
    return tls


EXPECT_FORMS: dict[str, tuple[Callable[[Any], re.Pattern[bytes]], str]] = {
    "expect": (lambda v: _bytes_regex(v), 'a regular expression, or "*" for any answer'),
    "expect_literal": (lambda v: _literal(_utf8(v)), "a string"),
    "expect_hex": (lambda v: _literal(_hex(v)), 'hex digits such as "2b4f4b"'),
}


def _read_send_expect(sec: ck.Section, d: Spec) -> Spec | None:
    assert isinstance(d, SendExpectSpec)
    protocol = sec.get("protocol", ck.choice(("tcp", "udp")), d.protocol, '"tcp" or "udp"')
    if "send" in sec.data and "send_hex" in sec.data:
        sec.error("send_hex", "conflicts with send: set only one of them")
    send = sec.get("send", _utf8, d.send, "a string")
    send = sec.get("send_hex", _hex, send, 'hex digits such as "0d0a"')
    given = [k for k in EXPECT_FORMS if k in sec.data]
    sec.known.update(EXPECT_FORMS)
    expect, expect_any = d.expect, d.expect_any
    if len(given) > 1:
        sec.error(
            given[1], f"conflicts with {given[0]}: set only one of " + ", ".join(EXPECT_FORMS)
        )
    elif given == ["expect"] and sec.data["expect"] == "*":
        expect, expect_any = None, True
    elif given:
        convert, expected = EXPECT_FORMS[given[0]]
        expect, expect_any = sec.get(given[0], convert, None, expected), False
    if protocol == "udp" and expect is None and not expect_any:
        sec.error("expect", 'missing: a UDP check needs an answer to judge ("*" = any answer)')
        return None
    return SendExpectSpec(protocol, send, expect, expect_any)


def _read_exec(sec: ck.Section, d: Spec) -> Spec | None:
    assert isinstance(d, ExecSpec)
    program: str | None
    if d.program:
        program = sec.get("program", _executable, d.program, PROGRAM)
    else:
        program = sec.require("program", _executable, PROGRAM)
    args = sec.get("args", ck.strings, d.args, "an array of strings")
    dynamic = sec.get("dynamic_weight", ck.boolean, d.dynamic_weight, "true or false")
    if program is None:
        return None
    return ExecSpec(program, args, dynamic)


def _read_dns(sec: ck.Section, d: Spec) -> Spec | None:
    assert isinstance(d, DnsSpec)
    name: str | None
    if d.query_name:
        name = sec.get("query_name", _dns_name, d.query_name, "a domain name")
    else:
        name = sec.require("query_name", _dns_name, 'a domain name such as "example.com"')
    qtype = sec.get(
        "query_type", _upper_choice(dnswire.TYPES), d.query_type, _one_of(tuple(dnswire.TYPES))
    )
    rcode = sec.get(
        "expect_rcode",
        _upper_choice(dnswire.RCODES),
        d.expect_rcode,
        _one_of(tuple(dnswire.RCODES)),
    )
    answers = sec.get(
        "expect_answer",
        _strings_or_one,
        d.expect_answer,
        'a record value such as "192.0.2.1", or an array of them',
    )
    rd = sec.get("recursion_desired", ck.boolean, d.recursion_desired, "true or false")
    if name is None:
        return None
    return DnsSpec(name, qtype, rcode, answers, rd)


_SPEC_READERS: dict[CheckType, Callable[[ck.Section, Spec], Spec | None]] = {
    CheckType.TCP: _read_tcp,
    CheckType.HTTP: _read_http,
    CheckType.HTTPS: _read_http,
    CheckType.SEND_EXPECT: _read_send_expect,
    CheckType.EXEC: _read_exec,
    CheckType.DNS: _read_dns,
}


# --- converters (raise ValueError/TypeError; lvsmon.config words the error) ---


def _regex_text(pattern: re.Pattern[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not pattern.fullmatch(ck.text(value)):
            raise ValueError(value)
        return str(value)

    return convert


def _request_path(value: Any) -> str:
    text = ck.text(value)
    if not text.startswith("/") or not _HEADER_SAFE.fullmatch(text):
        raise ValueError(value)
    return text


def _status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(value)
    ranges = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(item)
        if isinstance(item, int):
            low = high = item
        elif isinstance(item, str) and (m := _STATUS_RANGE.fullmatch(item)):
            low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        else:
            raise ValueError(item)
        if not 100 <= low <= high <= 599:
            raise ValueError(item)
        ranges.append((low, high))
    return tuple(ranges)


def _bytes_regex(value: Any) -> re.Pattern[bytes]:
    try:
        return re.compile(ck.text(value).encode())
    except re.error as exc:
        raise ValueError(ck.Hint(f"bad regular expression: {exc}")) from None


def _literal(data: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(data))


def _utf8(value: Any) -> bytes:
    return ck.text(value).encode()


def _hex(value: Any) -> bytes:
    try:
        return bytes.fromhex(ck.text(value))
    except ValueError:
        raise ValueError(value) from None


def _readable(what: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        path = ck.text(value)
        try:
            ck.read_file(path, MAX_PEM_BYTES)
        except ck.FileProblem as exc:
            why = str(exc).removeprefix("cannot read: ")
            raise ValueError(ck.Hint(f"cannot read the {what} file: {why}")) from None
        return path

    return convert


def _executable(value: Any) -> str:
    text = ck.text(value)
    found = shutil.which(text) if "/" not in text else text
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        why = "not found" if not found or not os.path.exists(found) else "not an executable file"
        raise ValueError(ck.Hint(why))
    return os.path.abspath(found)


def _strings_or_one(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else ck.strings(value)


def _upper_choice(options: dict[str, int]) -> Callable[[Any], str]:
    choose = ck.choice(tuple(options))

    def convert(value: Any) -> str:
        return choose(ck.text(value).upper())

    return convert


def _dns_name(value: Any) -> str:
    try:
        dnswire.encode_name(ck.text(value))
    except ValueError:
        raise ValueError(value) from None
    return str(value)
