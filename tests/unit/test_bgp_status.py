"""`lvsmon status` shows BGP: the announcer's phase, its sessions per peer, and per VIP
whether it is announced and why (lvsmon/bgp/status.py), carried through /status's JSON
as the CLI reads it."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

from lvsmon import config
from lvsmon.bgp.announcer import BgpStatus, Phase, VipStatus, status_rows, summary_of
from lvsmon.bgp.plan import Session
from lvsmon.dataplane.base import snapshot_of
from lvsmon.desired import desired_table
from lvsmon.serving import Reason, Verdict
from lvsmon.status import DirectorView, build_view, render_table

ROOT = Path(__file__).resolve().parents[2]
VIP = ipaddress.ip_address("192.0.2.100")
VIP2 = ipaddress.ip_address("192.0.2.101")
SINCE = 1_700_000_000.0


def status(phase: Phase, *, up: bool = True, error: str = "") -> BgpStatus:
    serving = VipStatus(VIP, "web", Verdict(Reason.SERVING, "2 of 2 in service"), True)
    held = VipStatus(
        VIP2,
        "api",
        Verdict(Reason.TOO_FEW_REAL_SERVERS, "0 of 2 real servers in service, 1 needed"),
        False,
    )
    session = Session("tor1", "established" if up else "down", up)
    return BgpStatus(
        phase, SINCE, (session,), (serving, held), "bird", up, 3, 1 if error else 0, error
    )


def text(bgp: BgpStatus | None, example: str = "bgp-scaleout.toml") -> str:
    """render_table of the view /status would carry, after a JSON round trip (the CLI's)."""
    cfg = config.load(ROOT / "config" / example)
    rows = summary = None
    if bgp is not None:
        assert cfg.bgp is not None
        rows, summary = status_rows(bgp, cfg.bgp), summary_of(bgp, cfg.bgp).to_json()
    view = build_view(cfg, snapshot_of(desired_table(cfg)), bgp=rows, bgp_announcer=summary)
    return render_table(DirectorView.from_json(json.loads(json.dumps(view.to_json()))))


def bgp_lines(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[lines.index("") + 1 :]


def test_active_each_peer_each_vip_and_why() -> None:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(SINCE))
    head, *rest = bgp_lines(text(status(Phase.ACTIVE)))
    assert head.startswith(f"BGP via bird (answering): ACTIVE since {since}, "), head
    assert rest == [
        "  peer tor1 10.0.0.1: established",
        "  192.0.2.100/32 announced: serving: 2 of 2 in service (web)",
        "  192.0.2.101/32 withdrawn: too_few_real_servers: 0 of 2 real servers in service, "
        "1 needed (api)",
    ]


def test_draining_says_what_happens_to_the_routes() -> None:
    head, _, announced, _ = bgp_lines(text(status(Phase.DRAINING)))
    assert "DRAINING since" in head
    assert head.endswith("(routes less preferred, withdrawn when bgp.drain.period ends)")
    assert announced.startswith("  192.0.2.100/32 draining: serving")


def test_a_routing_daemon_that_does_not_answer_and_its_error() -> None:
    error = "birdc: /run/bird/bird.ctl: connection refused"
    lines = bgp_lines(text(status(Phase.WITHDRAWN, up=False, error=error)))
    assert lines[0].startswith("BGP via bird (not answering): WITHDRAWN since")
    assert lines[0].endswith("(nothing announced)")
    assert lines[1] == "  peer tor1 10.0.0.1: down"
    assert lines[2] == f"  last error (1 in all): {error}"


def test_no_announced_virtual_server() -> None:
    bgp = BgpStatus(Phase.ACTIVE, SINCE, (), (), "bird", True, 1, 0, "")
    assert bgp_lines(text(bgp))[-1] == (
        "  no VIP to announce (no virtual server has announce = true)"
    )


def test_no_section_without_the_announcer_parts() -> None:
    """As `lvsmon check` renders a config with [bgp]: nothing runs, nothing to show."""
    out = text(None)
    assert "BGP" not in out and "" not in out.splitlines()
