"""`pip wheel .` gives a working lvsmon: built from a copy of the tree, installed into a
fresh venv, its `lvsmon` runs, and `lvsmon assets` finds the dashboards, alert rules,
example configs, unit and man page inside the installed package.

Offline: the wheel is built with the build tools of the test's own venv
(--no-build-isolation) and installed with --no-deps; the fresh venv sees the
dependencies through a .pth line naming the test venv's site-packages (a .pth line
adds a directory, not that directory's own .pth files, so the checkout's editable
install stays invisible, which the test asserts)."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tests"
)


def run(*argv: str | Path, cwd: Path = Path("/")) -> str:
    """Away from the checkout: `python -c` would import lvsmon from the working directory."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_installs_a_working_lvsmon_with_its_assets(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    dist = tmp_path / "dist"
    build = ["wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    run(sys.executable, "-m", "pip", *build, cwd=src)
    (wheel,) = dist.glob("lvsmon-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    code = "import site, sys; print(site.getsitepackages()[0])"
    fresh_site = Path(run(venv / "bin" / "python", "-c", code).strip())
    (fresh_site / "lvsmon-test-deps.pth").write_text(site.getsitepackages()[0] + "\n")

    lvsmon = venv / "bin" / "lvsmon"
    where = run(venv / "bin" / "python", "-c", "import lvsmon; print(lvsmon.__file__)")
    assert Path(where.strip()).is_relative_to(fresh_site)  # the wheel's, not the checkout's
    assert run(lvsmon, "--version").startswith("lvsmon ")

    kinds = ("dashboards", "alerts", "config", "docs", "man", "unit")
    paths = {kind: Path(run(lvsmon, "assets", kind).strip()) for kind in kinds}
    for kind, path in paths.items():
        assert path.is_relative_to(fresh_site) and path.exists(), (kind, path)
    dashboards = sorted(p.name for p in paths["dashboards"].glob("*.json"))
    assert dashboards == ["director.json", "overview.json", "virtual-server.json"]
    for board in paths["dashboards"].glob("*.json"):
        assert json.loads(board.read_text())["panels"]
    assert (paths["alerts"] / "lvsmon.rules.yml").read_text().count("alert: Lvsmon") >= 10
    assert (paths["docs"] / "runbooks.md").exists()
    assert paths["man"].read_text().startswith(".TH LVSMON 8")
    assert "Type=notify" in paths["unit"].read_text()
    examples = sorted(paths["config"].glob("*.toml"))
    assert len(examples) >= 10
    assert "configuration is valid" in run(lvsmon, "check", "-c", paths["config"] / "demo.toml")
    loads = "import sys; from lvsmon import config; [config.load(p) for p in sys.argv[1:]]"
    run(venv / "bin" / "python", "-c", loads, *examples)  # every example, one process
    assert run(lvsmon, "assets").count(str(fresh_site)) == 6
