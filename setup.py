"""Packaging hook: the wheel carries the dashboards, alert rules, example configs and docs.

They live at the top of the repository (dashboards/, alerts/, config/, docs/), outside
the package; building copies them into lvsmon/share/ inside the wheel, where
`lvsmon assets` finds them (in a checkout it finds the top-level directories).
Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ASSETS = ("dashboards", "alerts", "config", "docs")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "lvsmon" / "share"
        for name in ASSETS:
            if (root / name).is_dir():
                shutil.copytree(root / name, target / name, ignore=IGNORE, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithAssets})
