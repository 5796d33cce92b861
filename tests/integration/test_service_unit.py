"""The systemd unit: `systemd-analyze verify` accepts every variant `lvsmon install-unit`
writes (the man page it documents must be found too), the capability set follows the
data plane, and the unit shipped in the repo is the default rendering."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvsmon.service.unit import UnitSpec, render

REPO = Path(__file__).resolve().parents[2]
LVSMON = str(Path(sys.executable).with_name("lvsmon"))


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    man = tmp_path / "man" / "man8"
    man.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "docs" / "lvsmon.8", man / "lvsmon.8")  # Documentation=man:lvsmon(8)
    assert shutil.which("systemd-analyze"), "systemd-analyze (scripts/install-test-deps)"
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(tmp_path / "man")},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("dataplane", "failover", "caps"),
    [
        ("ipvs", True, "CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE"),
        ("ipvs", False, "CAP_NET_ADMIN"),
        ("proxy", False, "CAP_NET_BIND_SERVICE"),
        ("proxy", True, "CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_SYS_NICE"),
    ],
)
def test_systemd_analyze_verifies_every_variant(
    tmp_path: Path, dataplane: str, failover: bool, caps: str
) -> None:
    unit = tmp_path / "lvsmon.service"
    config = REPO / "config" / "demo.toml"
    unit.write_text(render(UnitSpec(dataplane, failover, binary=LVSMON, config=str(config))))
    result = verify(unit, tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    text = unit.read_text()
    assert f"CapabilityBoundingSet={caps}\n" in text
    assert "Type=notify\n" in text and "WatchdogSec=" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in text
    assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    assert ("ProtectKernelTunables=yes" in text) == (dataplane == "proxy")


def test_install_unit_reads_the_config(tmp_path: Path) -> None:
    out = tmp_path / "lvsmon.service"
    for config, caps in (
        ("failover-ipvs-unicast.toml", "CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE"),
        ("demo.toml", "CAP_NET_BIND_SERVICE"),
    ):
        result = subprocess.run(
            [LVSMON, "install-unit", "-c", str(REPO / "config" / config), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        text = out.read_text()
        assert f"CapabilityBoundingSet={caps}\n" in text
        assert f"ExecStart={LVSMON} run -c {REPO / 'config' / config}" in text
        assert verify(out, tmp_path).returncode == 0


def test_the_shipped_unit_is_the_default_rendering() -> None:
    shipped = REPO / "lvsmon" / "service" / "lvsmon.service"
    assert shipped.read_text() == render(UnitSpec()), "regenerate: see lvsmon/service/unit.py"
