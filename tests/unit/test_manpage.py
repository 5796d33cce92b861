"""docs/lvsmon.8 is generated from the argparse definitions (python -m lvsmon.manpage,
make man) and must stay in sync with them; man(1) formats it without warnings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lvsmon import manpage
from lvsmon.cli import _parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "lvsmon.8"


def test_the_checked_in_man_page_matches_the_command_line() -> None:
    assert PAGE.read_text() == manpage.render(_parser()), "stale: run `make man`"


def test_every_command_and_option_is_documented() -> None:
    text = PAGE.read_text()
    for command in ("run", "check", "status", "save", "reload", "demo", "import", "install-unit"):
        assert f".SS {command.replace('-', chr(92) + '-')}\n" in text
    assert "\\-\\-log\\-format" in text and "\\-\\-config\\-id" in text


def test_man_formats_it_without_warnings() -> None:
    assert shutil.which("man"), "man (Debian package man-db)"
    result = subprocess.run(
        ["man", "--warnings", "-l", "-P", "cat", str(PAGE)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "lvsmon import" in result.stdout
