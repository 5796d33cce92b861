"""What a health check is: frozen, hashable definitions, and what a probe reports.

A `HealthCheck` compares equal to another exactly when both would send the
same probe and judge it the same way: the monitor runs one probe per distinct
(connect address, connect port, check), whatever number of virtual servers
share that real server. Nothing here imports `lvsmon.model` (it imports us).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum


class CheckType(StrEnum):
    TCP = "tcp"  # connect only
    HTTP = "http"
    HTTPS = "https"
    SEND_EXPECT = "send_expect"  # Piranha's send/expect over TCP or UDP
    EXEC = "exec"  # an external program (keepalived's MISC_CHECK)
    DNS = "dns"


class Reason(StrEnum):
    """Why a probe failed: the `reason` label of lvsmon_healthcheck_failures_total."""

    TIMEOUT = "timeout"  # no (complete) answer within `timeout`
    REFUSED = "refused"  # RST to our SYN, or ICMP port unreachable (UDP)
    RESET = "reset"  # connection reset after it was established
    UNREACHABLE = "unreachable"  # no route / host unreachable
    CLOSED = "closed"  # the server closed before a complete answer
    TLS = "tls"  # handshake or certificate failure
    BAD_RESPONSE = "bad_response"  # not HTTP / not DNS
    BAD_STATUS = "bad_status"  # HTTP status not in expect_status
    BAD_BODY = "bad_body"  # expect_body did not match
    BAD_ANSWER = "bad_answer"  # send_expect mismatch; DNS rcode or answer mismatch
    EXEC_FAILED = "exec_failed"  # program said down, crashed, or could not start
    ERROR = "error"  # any other local error (fd exhaustion, ...)


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    reason: Reason | None = None
    detail: str = ""  # human text for the transition log line
    weight: int | None = None  # exec dynamic weight (None: the configured weight)


OK = Result(True)


def fail(reason: Reason, detail: str = "") -> Result:
    return Result(False, reason, detail)


# --- per-type parameters ---


@dataclass(frozen=True, slots=True)
class TcpSpec:
    """Connect, then close with RST (no TIME_WAIT on the director, as HAProxy does)."""


@dataclass(frozen=True, slots=True)
class TlsSpec:
    sni: str = ""  # "" = the Host header when it is a name, else no SNI
    verify: bool = False  # keepalived's SSL_GET does not verify either
    ca_file: str = ""  # "" = the system store (when verify is on)
    client_cert: str = ""
    client_key: str = ""  # "" = the key is in client_cert


@dataclass(frozen=True, slots=True)
class HttpSpec:
    method: str = "GET"
    path: str = "/"
    host: str = ""  # Host header; "" = the connect endpoint
    expect_status: tuple[tuple[int, int], ...] = ((200, 299),)
    expect_body: re.Pattern[bytes] | None = None
    tls: TlsSpec | None = None  # set for type "https"

    def status_ok(self, code: int) -> bool:
        return any(low <= code <= high for low, high in self.expect_status)


@dataclass(frozen=True, slots=True)
class SendExpectSpec:
    protocol: str = "tcp"  # or "udp"
    send: bytes = b""
    expect: re.Pattern[bytes] | None = None  # None and not expect_any: connect+send is enough
    expect_any: bool = False  # expect = "*": any answer at all


@dataclass(frozen=True, slots=True)
class ExecSpec:
    program: str = ""
    args: tuple[str, ...] = ()  # {address} {port} {virtual_server} are substituted
    dynamic_weight: bool = False  # exit 2..255 = up with weight exit-2 (keepalived misc_dynamic)


@dataclass(frozen=True, slots=True)
class DnsSpec:
    query_name: str = ""
    query_type: str = "A"
    expect_rcode: str = "NOERROR"
    expect_answer: tuple[str, ...] = ()  # each must be among the answers' rdata (as text)
    recursion_desired: bool = False


Spec = TcpSpec | HttpSpec | SendExpectSpec | ExecSpec | DnsSpec


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: CheckType
    interval: float = 2.0
    timeout: float = 1.0  # always < interval: a probe never overlaps the next one
    rise: int = 2  # consecutive successes to bring a down server back
    fall: int = 3  # consecutive failures to take an up server out
    connect_address: str = ""  # "" = the real server's address
    connect_port: int = 0  # 0 = the real server's port
    max_response_bytes: int = 65536  # read cap for answers and exec output
    spec: Spec = field(default_factory=TcpSpec)

    def __post_init__(self) -> None:
        # the spec follows the type: HealthCheck(CheckType.HTTP) gets HttpSpec(), and
        # a spec of another type is a bug, not something to probe with
        spec = self.spec
        if isinstance(spec, TcpSpec) and self.type is not CheckType.TCP:
            spec = default_spec(self.type)
        if isinstance(spec, HttpSpec) and self.type is CheckType.HTTPS and spec.tls is None:
            spec = replace(spec, tls=TlsSpec())
        if not isinstance(spec, type(default_spec(self.type))):
            raise ValueError(f"a {self.type} check cannot have {type(spec).__name__}")
        object.__setattr__(self, "spec", spec)

    def endpoint(self, address: str, port: int) -> tuple[str, int]:
        """Where the probe goes for a real server at address:port."""
        return (self.connect_address or address, self.connect_port or port)


def default_spec(kind: CheckType) -> Spec:
    if kind is CheckType.HTTPS:
        return HttpSpec(tls=TlsSpec())
    specs: dict[CheckType, type[Spec]] = {
        CheckType.TCP: TcpSpec,
        CheckType.HTTP: HttpSpec,
        CheckType.SEND_EXPECT: SendExpectSpec,
        CheckType.EXEC: ExecSpec,
        CheckType.DNS: DnsSpec,
    }
    return specs[kind]()
