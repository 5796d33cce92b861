"""Every data plane, declared once: name, capabilities, factory.

`lvsmon check` validates a config against `capabilities_of(name)`, the daemon builds
its plane with `create(settings)`, and docs/dataplanes.md is generated from `PLANES`
(`python -m lvsmon.dataplane.registry`; a test keeps it in step). A new plane is one
module that declares a `Plane` plus one entry below.
"""

from __future__ import annotations

import sys

from lvsmon.dataplane import ipvs, nft, proxy
from lvsmon.dataplane.base import DataPlane, Plane
from lvsmon.model import DaemonSettings
from lvsmon.model.capabilities import Capabilities

PLANES: dict[str, Plane] = {p.name: p for p in (proxy.PLANE, ipvs.PLANE, nft.PLANE)}
NAMES = tuple(PLANES)


class UnknownDataPlane(Exception):
    """A plane name this build does not have; the message lists the ones it has."""


def plane(name: str) -> Plane:
    try:
        return PLANES[name]
    except KeyError:
        known = ", ".join(f'"{n}"' for n in NAMES)
        raise UnknownDataPlane(
            f'daemon.dataplane = "{name}": this build has no such data plane; use {known}'
        ) from None


def capabilities_of(name: str) -> Capabilities:
    """What the named plane can do on this host (ipvs: narrowed to the kernel's schedulers)."""
    return plane(name).capabilities()


def create(settings: DaemonSettings) -> DataPlane:
    return plane(settings.dataplane).factory(settings)


def markdown() -> str:
    """The capability table of docs/dataplanes.md, from the declarations above."""
    rows = [
        "| | " + " | ".join(f"`{n}`" for n in NAMES) + " |",
        "|---|" + "---|" * len(NAMES),
    ]
    caps = [p.static_capabilities for p in PLANES.values()]

    def row(what: str, cells: list[str]) -> None:
        rows.append(f"| {what} | " + " | ".join(cells) + " |")

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    row("what it is", [p.summary for p in PLANES.values()])
    row("protocols", [", ".join(sorted(c.protocols)) for c in caps])
    row("forwarding", [", ".join(sorted(c.forwarding)) for c in caps])
    row("fwmark services", [yes(c.fwmark) for c in caps])
    row("persistence", [yes(c.persistence) for c in caps])
    row("IPv6", [yes(c.ipv6) for c in caps])
    row("schedulers", [", ".join(sorted(c.schedulers)) for c in caps])
    row(
        "privileges",
        [", ".join(sorted(c.privileges)) or "none (any user)" for c in caps],
    )
    row("when a scheduler is refused", [c.scheduler_why or c.why for c in caps])
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
