"""The import graph of lvsmon/ runs one way down; the architecture picture and the
data-plane table in docs/ are generated from the code and must match it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from lvsmon.dataplane import registry

ROOT = Path(__file__).resolve().parents[2]


def _layers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layers", ROOT / "scripts" / "layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["layers"] = module
    spec.loader.exec_module(module)
    return module


def test_no_cycle_no_upward_import_every_module_in_a_layer() -> None:
    assert _layers().problems() == []


def test_the_checker_sees_an_upward_import_and_a_cycle() -> None:
    layers = _layers()
    edges = {
        "lvsmon.model": {"lvsmon.daemon"},  # ground -> wiring
        "lvsmon.daemon": {"lvsmon.model"},
    }
    assert layers.upward(edges) == [
        "lvsmon.model (ground) imports lvsmon.daemon (wiring), a layer above"
    ]
    assert layers.cycles(edges) == [["lvsmon.daemon", "lvsmon.model"]]


def test_lazy_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lvsmon.daemon import Director\n")
    known = {"lvsmon.daemon", "lvsmon.model"}
    assert _layers().imports("lvsmon.model.x", source, known) == {"lvsmon.daemon"}


def test_architecture_picture_is_current() -> None:
    layers = _layers()
    assert (ROOT / "docs" / "architecture.svg").read_text() == layers.svg(), (
        "docs/architecture.svg is stale: run python scripts/layers.py --svg"
    )


def test_dataplane_table_is_current() -> None:
    doc = (ROOT / "docs" / "dataplanes.md").read_text()
    match = re.search(r"<!-- generated: .*? -->\n(.*?)<!-- end generated -->", doc, re.S)
    assert match, "docs/dataplanes.md lost its generated table markers"
    assert match.group(1) == registry.markdown(), (
        "docs/dataplanes.md is stale: paste python -m lvsmon.dataplane.registry"
    )
