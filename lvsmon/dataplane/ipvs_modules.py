"""Which IPVS schedulers the running kernel has, read from its module files (no side effects)."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import re
from pathlib import Path

from lvsmon import schedulers
from lvsmon.model.capabilities import Capabilities

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


def narrow_to_kernel(
    caps: Capabilities, kernel_schedulers: frozenset[str] | None = None, kernel: str = ""
) -> Capabilities:
    """`caps` with only the schedulers the kernel has (all of them when it has no IPVS)."""
    return dataclasses.replace(
        caps,
        schedulers=kernel_schedulers or caps.schedulers,
        why=f"the running kernel{f' ({kernel})' if kernel else ''} has no such IPVS scheduler "
        "(module ip_vs_<name>)",
    )


def probe(caps: Capabilities) -> Capabilities:
    return narrow_to_kernel(caps, kernel_ipvs_schedulers(), platform.release())
