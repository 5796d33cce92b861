"""Alert rules: promtool accepts them and their unit tests pass; every alert has a runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "lvsmon.rules.yml"


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not installed: run scripts/install-test-deps (Debian package prometheus)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    tests = sorted(str(p) for p in (ROOT / "alerts" / "tests").glob("*.yml"))
    result = promtool("test", "rules", *tests, cwd=ROOT / "alerts" / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_section_and_is_tested() -> None:
    rules = RULES.read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    runbook = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {h.lower() for h in re.findall(r"^## (\w+)", runbook, re.M)}
    tested = "".join(p.read_text() for p in (ROOT / "alerts" / "tests").glob("*.yml"))
    for alert in alerts:
        assert alert.startswith("Lvsmon")
        assert alert.lower() in anchors, f"docs/runbooks.md has no section for {alert}"
        assert f"docs/runbooks.md#{alert.lower()}" in rules
        fires = rf"alertname: {alert}\n\s+exp_alerts:[^\n]*\n\s+- exp_labels"
        assert re.search(fires, tested), alert
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts: \[\]", tested), alert
