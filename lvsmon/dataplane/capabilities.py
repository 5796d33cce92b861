"""What each data plane can honour, so config validation can reject the rest up front."""

from __future__ import annotations

import contextlib
import platform
import re
from dataclasses import dataclass
from pathlib import Path

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


def ipvs(kernel_schedulers: frozenset[str] | None = None, kernel: str = "") -> Capabilities:
    """IPVS capabilities; `kernel_schedulers` narrows to what the running kernel has."""
    return Capabilities(
        name="ipvs",
        protocols=frozenset({"tcp", "udp", "sctp"}),
        forwarding=frozenset({"nat", "dr", "tunnel"}),
        fwmark=True,
        schedulers=kernel_schedulers or frozenset(schedulers.IPVS_SCHEDULERS),
        why=f"the running kernel{f' ({kernel})' if kernel else ''} has no such IPVS scheduler "
        "(module ip_vs_<name>)",
    )


# modules.dep / modules.builtin lines: "kernel/net/netfilter/ipvs/ip_vs_wlc.ko[.xz]: ..."
_MODULE = re.compile(r"(?m)^\S*/ip_vs(?:_(\w+))?\.ko(?:\.\w+)?:?")


def kernel_ipvs_schedulers(
    release: str | None = None, modules: Path = Path("/lib/modules"), sysfs: Path = Path("/sys")
) -> frozenset[str] | None:
    """IPVS schedulers the running kernel has (loaded, built in or loadable), from the
    module files: no side effects. None when it has no IPVS at all (e.g. checking a
    config on a machine that will not run it): then nothing can be narrowed."""
    release = release or platform.release()
    found: set[str] = set()
    ipvs = False
    for name in ("modules.builtin", "modules.dep"):
        with contextlib.suppress(OSError):
            for match in _MODULE.finditer((modules / release / name).read_text()):
                ipvs = True
                if match.group(1):
                    found.add(match.group(1))
    with contextlib.suppress(OSError):
        for entry in (sysfs / "module").iterdir():
            if entry.name == "ip_vs":
                ipvs = True
            elif entry.name.startswith("ip_vs_"):
                found.add(entry.name.removeprefix("ip_vs_"))
    if not ipvs:
        return None
    return frozenset(found) & frozenset(schedulers.IPVS_SCHEDULERS)


def for_dataplane(name: str) -> Capabilities:
    if name == "proxy":
        return proxy()
    return ipvs(kernel_ipvs_schedulers(), platform.release())
