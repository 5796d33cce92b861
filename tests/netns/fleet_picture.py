"""The README's "Scaling out" picture, drawn from a running fleet (tests/netns/fleet.py).

Everything in it comes from the run: the namespaces and addresses as built
(`Fleet.layout()`), the next hops the router's kernel holds for the VIP, each
director's BGP session and announcement as its own /metrics reports them, and
the share of connections each director served. `make fleet-png` redraws
docs/img/fleet.png from a fresh run of tests/netns/test_bgp_fleet.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DirectorFacts:
    name: str
    uplink: str  # the director's address on its link to the router
    back: str
    next_hop: bool  # in the router's ECMP route for the VIP
    session: bool  # lvsmon_bgp_session_up
    share: float  # of the connections measured
    vrrp: str = ""  # its role in the failover group that moves the real servers' gateway


def draw(layout: Mapping[str, Any], facts: list[DirectorFacts], out: Path, note: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    ax.set_xlim(0, 100)
    ax.set_ylim(-5, 60)
    ax.axis("off")

    def box(x: float, y: float, w: float, h: float, text: str, color: str) -> None:
        ax.add_patch(
            FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.6", fc=color, ec="#333", lw=1)
        )
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def line(x1: float, y1: float, x2: float, y2: float, label: str = "", **kw: Any) -> None:
        ax.plot([x1, x2], [y1, y2], color=kw.pop("color", "#555"), lw=kw.pop("lw", 1.2), **kw)
        if label:
            ax.text(
                (x1 + x2) / 2, (y1 + y2) / 2 + 1.2, label, fontsize=7, ha="center", color="#444"
            )

    router = layout["router"]
    box(2, 26, 12, 8, f"client\n{layout['client']}", "#e8eef7")
    box(
        22,
        24,
        16,
        12,
        f"router\nBIRD, AS{router['asn']}\nECMP, L4 hash\nVIP {layout['vip']}",
        "#fdf1d6",
    )
    line(14, 30, 22, 30)
    n = len(facts)
    for i, d in enumerate(facts):
        y = 48 - i * (42 / max(1, n - 1)) if n > 1 else 30
        color = "#dff3e0" if d.next_hop else "#f6d6d6"
        state = "announced" if d.next_hop else "withdrawn"
        session = "BGP+BFD up" if d.session else "BGP down"
        vrrp = f"\nVRRP gateway: {d.vrrp}" if d.vrrp else ""
        box(
            50,
            y - 6,
            20,
            12,
            f"{d.name}: lvsmon + BIRD\n{session}, {state}\n{d.share:.0%} of connections{vrrp}",
            color,
        )
        line(
            38,
            30,
            50,
            y,
            f"{d.uplink}",
            color="#2a7" if d.next_hop else "#c55",
            lw=2 if d.next_hop else 1,
            ls="-" if d.next_hop else "--",
        )
        line(70, y, 80, 30, d.back)
    reals = "\n".join(f"{k} {v}" for k, v in layout["real_servers"].items())
    gateway = layout.get("gateway")
    if gateway:
        reals += f"\n\ntheir gateway (VRRP)\n{gateway}"
    box(80, 20, 16, 20, "back LAN\n" + reals, "#eee")
    ax.text(
        50,
        58,
        "Scaling out: every director announces the VIP it can serve; the router spreads flows",
        ha="center",
        fontsize=9.5,
        weight="bold",
    )
    if note:
        ax.text(50, -3, note, ha="center", fontsize=7.5, color="#444")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
