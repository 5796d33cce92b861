"""`lvsmon install-unit`: write the systemd unit for this director's config.

Reads the config (when it exists) for its data plane and whether it has failover
groups, so the unit's capability set fits; writes /etc/systemd/system/lvsmon.service
(or --output), then says what to run next.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from lvsmon.service.unit import DEFAULT_BINARY, DEFAULT_CONFIG, UNIT_PATH, UnitSpec, render


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    text = "write the systemd unit (Type=notify, hardened for the config's data plane)"
    p = sub.add_parser("install-unit", help=text, description=text)
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file the unit runs")
    p.add_argument("--dataplane", choices=("proxy", "ipvs"), help="default: from the config")
    p.add_argument(
        "--failover",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="grant what VRRP needs (default: when the config has failover groups)",
    )
    p.add_argument("--binary", help="the lvsmon executable (default: this one)")
    p.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt")
    p.add_argument("-o", "--output", default=UNIT_PATH, help='where to write ("-": stdout)')


def run(args: argparse.Namespace) -> int:
    dataplane, failover = args.dataplane, args.failover
    if dataplane is None or failover is None:
        from lvsmon import config as configmod

        try:
            cfg = configmod.load(args.config)
        except configmod.ConfigError as exc:
            if Path(args.config).exists():
                print(exc.render(), file=sys.stderr)
                return 1
            cfg = None  # not written yet: the defaults below
        if dataplane is None:
            dataplane = cfg.daemon.dataplane if cfg else "ipvs"
        if failover is None:
            failover = bool(cfg.failover_groups) if cfg else True
    spec = UnitSpec(
        dataplane=dataplane,
        failover=failover,
        binary=args.binary or _this_binary(),
        config=os.path.abspath(args.config),
        log_format=args.log_format,
    )
    text = render(spec)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"lvsmon: wrote {out} ({dataplane}, capabilities {' '.join(spec.capabilities())})")
    print("next: systemctl daemon-reload && systemctl enable --now lvsmon")
    return 0


def _this_binary() -> str:
    found = shutil.which("lvsmon")
    if found:
        return os.path.abspath(found)
    script = Path(sys.argv[0])
    return str(script.resolve()) if script.name == "lvsmon" else DEFAULT_BINARY
