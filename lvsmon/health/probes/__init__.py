"""One module per check type; `make_checker` picks one. The I/O of health checking.

A checker is built once per probe (requests pre-encoded, TLS context loaded)
and run once per interval, never concurrently with itself. Two kinds (see
base.py): tcp and plain http are `SocketChecker`s, state machines the engine
drives from its epoll set; the others are coroutines run in a task. Either
returns a `Result` or raises; the engine applies the timeout (abort, or
cancellation) and maps exceptions to failure reasons with `classify`. Every
checker releases what it holds (sockets, the exec process group) when it
ends, is aborted or cancelled, so a timed-out probe leaks nothing.
"""

from __future__ import annotations

from lvsmon.health.probes.base import Checker as CoroutineChecker
from lvsmon.health.probes.base import SocketChecker, classify
from lvsmon.health.probes.dns import DnsChecker
from lvsmon.health.probes.exec import ExecChecker
from lvsmon.health.probes.http import HttpChecker, HttpsChecker
from lvsmon.health.probes.send_expect import SendExpectChecker
from lvsmon.health.probes.tcp import TcpChecker
from lvsmon.model.health import (
    DnsSpec,
    ExecSpec,
    HealthCheck,
    HttpSpec,
    Result,
    SendExpectSpec,
    TcpSpec,
)

__all__ = ["Checker", "CoroutineChecker", "SocketChecker", "classify", "make_checker"]

Checker = CoroutineChecker | SocketChecker


class Broken:
    """A checker that could not be built (a CA file gone since the config was loaded):
    every probe fails with the reason, instead of the whole reload failing."""

    def __init__(self, result: Result):
        self.result = result
        self.phase = "set up"

    async def __call__(self) -> Result:
        return self.result


def make_checker(check: HealthCheck, address: str, port: int, virtual_server: str = "") -> Checker:
    """A checker for the probe endpoint address:port (connect overrides already applied)."""
    try:
        return _make(check, address, port, virtual_server)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return Broken(classify(exc))


def _make(check: HealthCheck, address: str, port: int, virtual_server: str) -> Checker:
    spec = check.spec
    if isinstance(spec, TcpSpec):
        return TcpChecker(address, port)
    if isinstance(spec, HttpSpec):
        if spec.tls is not None:
            return HttpsChecker(spec, address, port, check.max_response_bytes)
        return HttpChecker(spec, address, port, check.max_response_bytes)
    if isinstance(spec, SendExpectSpec):
        return SendExpectChecker(spec, address, port, check.max_response_bytes)
    if isinstance(spec, ExecSpec):
        return ExecChecker(
            spec, address, port, virtual_server, check.max_response_bytes, check.timeout
        )
    if isinstance(spec, DnsSpec):
        return DnsChecker(spec, address, port)
    raise AssertionError(spec)
