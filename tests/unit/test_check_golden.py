"""`lvsmon check` on every example config prints exactly what it printed before the
config layer was restructured (tests/data/check/<example>.out). A change in the
output of a valid config is a change operators see: update the golden file in the
same commit that means it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsmon import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.toml"))
GOLDEN = ROOT / "tests" / "data" / "check"


def test_every_example_has_a_golden_output() -> None:
    assert {p.stem for p in EXAMPLES} == {p.stem for p in GOLDEN.glob("*.out")}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_check_output_is_unchanged(
    example: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["check", "-c", f"config/{example.name}"]) == 0
    assert capsys.readouterr().out == (GOLDEN / f"{example.stem}.out").read_text()
