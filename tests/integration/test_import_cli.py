"""`lvsmon import` as a user runs it: TOML on stdout that `lvsmon check` accepts, the
report on stderr with file:line, exit 1 when the report has errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "import"
LVSMON = [sys.executable, "-m", "lvsmon.cli"]
FINDING = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<sev>error|warning|note): (?P<rest>.+)$")


def lvsmon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LVSMON, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_import_then_check(tmp_path: Path) -> None:
    for fmt, name in (("keepalived", "keepalived/basic-nat.conf"), ("lvs.cf", "lvs.cf/nat-web.cf")):
        result = lvsmon("import", fmt, str(DATA / name))
        assert result.returncode == 0, result.stderr
        out = tmp_path / f"{Path(name).stem}.toml"
        out.write_text(result.stdout)
        check = lvsmon("check", "-c", str(out))
        assert check.returncode == 0, check.stdout + check.stderr
        assert "configuration is valid" in check.stdout
        lines = result.stderr.splitlines()
        assert lines[-1].startswith("lvsmon import: 0 errors")
        for line in lines[:-1]:
            m = FINDING.match(line)
            assert m, line
            assert Path(m["file"]).exists() and int(m["line"]) > 0


def test_errors_exit_1_and_name_the_line() -> None:
    result = lvsmon("import", "keepalived", str(DATA / "keepalived" / "untranslatable.conf"))
    assert result.returncode == 1
    errors = [
        m
        for line in result.stderr.splitlines()
        if (m := FINDING.match(line)) and m["sev"] == "error"
    ]
    assert [int(m["line"]) for m in errors] == [2, 12]
    assert "[[virtual_server]]" in result.stdout  # what could be translated still is


def test_config_id_and_output_file(tmp_path: Path) -> None:
    src = DATA / "keepalived" / "interop-web.conf"
    out = tmp_path / "dir2.toml"
    result = lvsmon("import", "keepalived", str(src), "--config-id", "dir2", "-o", str(out))
    assert result.returncode == 0 and result.stdout == ""
    assert "priority = 100" in out.read_text()
    assert re.search(r"interop-web.conf:\d+: note: @dir1: conditional line skipped", result.stderr)


def test_ipvsadm_from_standard_input() -> None:
    rules = "-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 10.0.0.2:80 -g -w 1\n"
    result = subprocess.run(
        [*LVSMON, "import", "ipvsadm", "-"], input=rules, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert 'scheduler = "rr"' in result.stdout and 'forwarding = "dr"' in result.stdout


def test_what_the_checker_still_rejects_is_an_error_at_its_virtual_server(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        "# a path lvsmon cannot send\n"
        "virtual_server 192.0.2.1 80 {\n"
        "  real_server 10.0.0.1 80 {\n"
        '    HTTP_GET { url { path "/a b" } }\n'
        "  }\n"
        "}\n"
    )
    result = lvsmon("import", "keepalived", str(conf))
    assert result.returncode == 1
    errors = [
        m
        for line in result.stderr.splitlines()
        if (m := FINDING.match(line)) and m["sev"] == "error"
    ]
    assert [(m["file"], int(m["line"])) for m in errors] == [(str(conf), 2)], result.stderr
    assert "health_check.path" in errors[0]["rest"]
