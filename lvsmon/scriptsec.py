"""Script security (keepalived's `enable_script_security`): refuse a program that
someone other than root (or the daemon's own user) could change.

A program is unsafe when it, or any directory on the way to it (as named and
after symlinks), is owned by another user, or is writable by others (by its
group, unless that group is root's). A directory writable by all with the
sticky bit (like /tmp) is allowed: nobody can replace an entry they don't own.
A program that does not exist yet is judged by its directories (who could create
it). Checked when the config is loaded: `lvsmon check`, start and every reload.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lvsmon.model.health import ExecSpec

if TYPE_CHECKING:
    from lvsmon.model import VirtualServer
    from lvsmon.model.failover import FailoverGroup


def unsafe(program: str) -> str | None:
    """Why `program` (an absolute path) must not run, or None when it is safe."""
    own = {0, os.geteuid()}
    paths = [Path(program), Path(os.path.realpath(program))]
    seen: set[Path] = set()
    for path in paths:
        for entry in (path, *path.parents):
            if entry in seen:
                continue
            seen.add(entry)
            try:
                st = os.lstat(entry)
            except FileNotFoundError:
                continue  # not there (yet): whoever may create it is judged by its directory
            except OSError as exc:
                return f"{entry}: {exc.strerror}"
            if stat.S_ISLNK(st.st_mode):
                continue  # the link's directory is checked, and its target after it
            why = _why(entry, st, own)
            if why:
                return why
    return None


def _why(entry: Path, st: os.stat_result, own: set[int]) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    shared_dir = stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX and st.st_uid == 0
    if st.st_uid not in own:
        return f"{entry} is owned by uid {st.st_uid}, not by root"
    if mode & stat.S_IWOTH and not shared_dir:
        return f"{entry} is writable by everyone (mode {mode:04o})"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return f"{entry} is writable by group {st.st_gid} (mode {mode:04o})"
    return None


def programs(
    services: Iterable[VirtualServer], groups: Iterable[FailoverGroup]
) -> Iterator[tuple[str, str]]:
    """(key path, program) of every exec health check and notify hook, each program
    once (at the first key that names it)."""
    seen: set[str] = set()
    for vs in services:
        for i, rs in enumerate(vs.real_servers, start=1):
            check = rs.health_check
            if check is not None and isinstance(check.spec, ExecSpec):
                key = f"virtual_server[{vs.name}].real_server[{i}].health_check.program"
                if check.spec.program not in seen:
                    seen.add(check.spec.program)
                    yield key, check.spec.program
    for g in groups:
        for state in ("master", "backup", "fault", "stop"):
            argv = g.hooks.for_state("initialize" if state == "stop" else state)
            if argv:
                found = shutil.which(argv[0]) or argv[0]
                if found not in seen:
                    seen.add(found)
                    yield f"failover_group[{g.name}].notify.on_{state}", found


def problems(
    services: Iterable[VirtualServer], groups: Iterable[FailoverGroup]
) -> Iterator[tuple[str, str]]:
    """(key path, message) for each program that daemon.script_security refuses."""
    for key, program in programs(services, groups):
        if not os.path.isabs(program):
            yield key, f'"{program}" is not found (script security needs a path to check)'
            continue
        why = unsafe(program)
        if why:
            yield (
                key,
                f'"{program}" is not safe to run: {why} (daemon.script_security = true; '
                "make it root's and not writable by others, or set script_security = false)",
            )
