"""What each data plane can honour, so config validation can reject the rest up front."""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon import schedulers


@dataclass(frozen=True, slots=True)
class Capabilities:
    name: str
    protocols: frozenset[str]
    forwarding: frozenset[str]
    fwmark: bool
    schedulers: frozenset[str]
    why: str  # one phrase appended to "not supported" errors


def proxy() -> Capabilities:
    return Capabilities(
        name="proxy",
        protocols=frozenset({"tcp", "udp"}),
        # a userspace proxy terminates the client connection: that is NAT
        forwarding=frozenset({"nat"}),
        fwmark=False,
        schedulers=schedulers.available(),
        why="the userspace proxy terminates connections (NAT only, no fwmark, no SCTP)",
    )


def ipvs(kernel_schedulers: frozenset[str] | None = None) -> Capabilities:
    """IPVS capabilities; `kernel_schedulers` narrows to what the running kernel has."""
    return Capabilities(
        name="ipvs",
        protocols=frozenset({"tcp", "udp", "sctp"}),
        forwarding=frozenset({"nat", "dr", "tunnel"}),
        fwmark=True,
        schedulers=kernel_schedulers or frozenset(schedulers.IPVS_SCHEDULERS),
        why="the running kernel's IPVS does not provide it",
    )


def for_dataplane(name: str) -> Capabilities:
    return proxy() if name == "proxy" else ipvs()
