"""Can this director serve a virtual server? One pure predicate, a reason for each "no".

Every announcer asks the same question before it draws traffic to this box:
BGP announces a VIP only while the answer is yes (lvsmon.bgp), and the reasons
are what `lvsmon status` and the metrics show. (VRRP's tracking, in
lvsmon.ha.tracking, lowers a priority from the same facts: real servers in
service out of those configured.) No I/O, no clock: facts in, verdict out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from lvsmon.model import DestKey, IPAddress, ServiceKey, VirtualServer

Programmed = Iterable[tuple[DestKey, int]]  # the data plane's real servers: (identity, weight)


class Reason(StrEnum):
    SERVING = "serving"  # the only "yes"
    NOT_PROGRAMMED = "not_programmed"  # the data plane does not hold the virtual server
    TOO_FEW_REAL_SERVERS = "too_few_real_servers"  # fewer in service than the threshold
    DRAINED = "drained"  # this director is leaving (lvsmon drain, SIGTERM)


REASONS = tuple(Reason)


@dataclass(frozen=True, slots=True)
class Facts:
    programmed: bool  # the virtual server is in the data plane's table
    in_service: int  # its real servers programmed with a weight > 0 and not down
    configured: int  # its configured real servers
    drained: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Reason
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is Reason.SERVING


def can_serve(facts: Facts, threshold: int) -> Verdict:
    """Yes only while programmed, with >= `threshold` real servers in service, not drained."""
    if facts.drained:
        return Verdict(Reason.DRAINED, "this director is draining out")
    if not facts.programmed:
        return Verdict(Reason.NOT_PROGRAMMED, "not in the data plane's table")
    if facts.in_service < threshold:
        return Verdict(
            Reason.TOO_FEW_REAL_SERVERS,
            f"{facts.in_service} of {facts.configured} real servers in service, {threshold} needed",
        )
    return Verdict(Reason.SERVING, f"{facts.in_service} of {facts.configured} in service")


def facts_of(
    vs: VirtualServer,
    programmed: Programmed | None,
    down: Collection[tuple[ServiceKey, DestKey]],
    *,
    drained: bool = False,
) -> Facts:
    """The facts about `vs` from what the data plane holds for it (None: nothing) and the
    health verdicts (a sorry server is not a real server in service)."""
    configured = {rs.key for rs in vs.real_servers}
    in_service = 0
    if programmed is not None:
        in_service = sum(
            1
            for key, weight in programmed
            if key in configured and weight > 0 and (vs.key, key) not in down
        )
    return Facts(programmed is not None, in_service, len(configured), drained)


def by_address(
    verdicts: Iterable[tuple[VirtualServer, Verdict]],
) -> Mapping[IPAddress, tuple[Verdict, str]]:
    """One verdict per VIP: serving only when every virtual server on that address is
    (an address is routed whole: a director that cannot serve one of its ports must not
    draw that port's clients); otherwise the first "no", with the virtual server's name."""
    out: dict[IPAddress, tuple[Verdict, str]] = {}
    for vs, verdict in verdicts:
        if vs.address is None:
            continue
        held = out.get(vs.address)
        if held is None or (held[0].ok and not verdict.ok):
            out[vs.address] = (verdict, vs.name)
    return out
