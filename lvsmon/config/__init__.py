"""TOML -> validated `Config`. Every problem in a file is reported at once.

Each error names the file, the key path (`virtual_server[web].real_server[2].weight`),
the bad value and what was expected. Unknown keys are errors (typo protection)
with a "did you mean" when a known key is close.

This module only assembles: each top-level section has its own reader (a module of
this package, built on lvsmon.configkit), listed once in SECTIONS with the Config
field it fills and the cross-checks that run once it has been read. A new section
is one reader module, one SECTIONS line and its field in lvsmon.model.Config.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvsmon import configkit as ck
from lvsmon.config import announce_nat, bgp, daemon, failover, virtual_servers
from lvsmon.config.readout import Readout
from lvsmon.configkit import ConfigError, Problem
from lvsmon.model import Config
from lvsmon.model.capabilities import Capabilities

__all__ = ["SECTIONS", "ConfigError", "Problem", "build", "load", "loads", "parse", "read"]


@dataclass(frozen=True, slots=True)
class SectionReader:
    key: str  # the top-level TOML key it reads
    field: str  # the Config field it fills
    read: Callable[[ck.Section, Readout], object]
    checks: tuple[Callable[[Readout], None], ...] = ()  # run once this section is read


SECTIONS: tuple[SectionReader, ...] = (
    SectionReader("daemon", "daemon", daemon.read),
    SectionReader(
        "virtual_server",
        "virtual_servers",
        virtual_servers.read,
        (daemon.check_adopted_names,),
    ),
    SectionReader(
        "failover_group",
        "failover_groups",
        failover.read,
        (daemon.check_sync_follow, daemon.check_script_security, daemon.check_handover_forward),
    ),
    SectionReader("bgp", "bgp", bgp.read, (bgp.check, announce_nat.check)),
)


def build(
    doc: dict[str, Any], source: str = "<memory>", caps: Capabilities | None = None
) -> Config:
    """Validate a parsed TOML document. Raises ConfigError listing every problem.

    `caps`: validate for these data-plane capabilities instead of the configured
    plane's on this host."""
    problems: list[Problem] = []
    root = ck.Section(doc, "", problems)
    readout = Readout(doc, problems, caps)
    for section in SECTIONS:
        readout.values[section.field] = section.read(root, readout)
        for check in section.checks:
            check(readout)
    root.check_unknown()
    if problems:
        raise ConfigError(source, problems)
    return Config(source=source, **readout.values)  # type: ignore[arg-type]


def parse(text: str, source: str = "<memory>") -> dict[str, Any]:
    """TOML text -> document (the one place lvsmon parses TOML). Raises ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not valid TOML: {exc}")]) from None
    except RecursionError:  # tomllib caps nesting with a RecursionError of its own
        raise ConfigError(
            source, [Problem("", "not valid TOML: nested deeper than the parser allows")]
        ) from None


def read(path: str | Path) -> dict[str, Any]:
    """A config file's document: read with the size cap, regular files only."""
    source = str(path)
    try:
        text = ck.read_text(source)
    except ck.FileProblem as exc:
        raise ConfigError(source, [Problem("", str(exc))]) from None
    return parse(text, source)


def loads(text: str, source: str = "<memory>", caps: Capabilities | None = None) -> Config:
    return build(parse(text, source), source, caps)


def load(path: str | Path, caps: Capabilities | None = None) -> Config:
    return build(read(path), str(path), caps)
