"""`lvsmon assets`: where the dashboards, alert rules, example configs, docs, the systemd
unit and the man page are, in an installed wheel (lvsmon/share/, see setup.py) or in a
source checkout (the repository's top-level directories)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
KINDS = {
    "dashboards": ("dashboards", "Grafana dashboards (JSON) and their grafanalib sources"),
    "alerts": ("alerts", "Prometheus alert rules and their promtool tests"),
    "config": ("config", "example configs, each one valid"),
    "docs": ("docs", "runbooks, metric catalog, web config"),
    "man": ("docs/lvsmon.8", "the lvsmon(8) man page"),
    "unit": ("", "the systemd unit (lvsmon install-unit writes one for your config)"),
}


def root() -> Path:
    """lvsmon/share in a wheel, the repository root in a checkout."""
    packaged = PACKAGE / "share"
    return packaged if (packaged / "alerts").is_dir() else PACKAGE.parent


def path(kind: str) -> Path:
    if kind == "unit":
        return PACKAGE / "service" / "lvsmon.service"
    return root() / KINDS[kind][0]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    text = "print where the dashboards, alert rules, example configs, unit and man page are"
    p = sub.add_parser("assets", help=text, description=text)
    p.add_argument("kind", nargs="?", choices=tuple(KINDS), help="print only this path")


def run(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(KINDS)
    missing = [k for k in kinds if not path(k).exists()]
    for kind in kinds:
        if args.kind:
            print(path(kind))
        else:
            print(f"{kind:<11}{path(kind)}    {KINDS[kind][1]}")
    if missing:
        print(f"lvsmon: missing from this installation: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0
