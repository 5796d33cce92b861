"""`lvsmon import FORMAT FILE`: keepalived.conf, Piranha's lvs.cf and `ipvsadm -S -n` rules
translated into an lvsmon config, with a report of every directive not translated
exactly. Pure: files come through a `Source`, the caller prints."""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon.importers import draft as draftmod
from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import Source

FORMATS = ("keepalived", "lvs.cf", "ipvsadm")


@dataclass(frozen=True, slots=True)
class Translation:
    toml: str
    report: Report
    # where each written virtual server and failover group came from, by its key path
    # prefix in `lvsmon check` messages: "virtual_server[web]" -> keepalived.conf:12
    origins: dict[str, Origin]

    def origin_of(self, key_path: str, default: Origin) -> Origin:
        for prefix, origin in self.origins.items():
            if key_path == prefix or key_path.startswith((prefix + ".", prefix + "[")):
                return origin
        return default


def translate(fmt: str, path: str, source: Source, *, config_id: str = "") -> Translation:
    if fmt == "keepalived":
        from lvsmon.importers import keepalived

        draft, report = keepalived.translate(path, source, config_id)
    elif fmt == "lvs.cf":
        from lvsmon.importers import lvscf

        draft, report = lvscf.translate(path, source)
    elif fmt == "ipvsadm":
        from lvsmon.importers import ipvsadm

        draft, report = ipvsadm.translate(path, source)
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    origins = {f"virtual_server[{vs.name}]": vs.origin for vs in draft.virtual_servers}
    origins.update({f"failover_group[{g.name}]": g.origin for g in draft.groups})
    return Translation(draftmod.render(draft), report, origins)


def verify(result: Translation, path: str) -> None:
    """Run the real checker on a translation whose report has no error and add what it
    finds as errors at the virtual server or failover group it is about: a report
    without errors then means `lvsmon check` accepts the TOML."""
    from lvsmon import config as configmod

    if result.report.has_errors:
        return
    try:
        configmod.loads(result.toml, "<import>")
    except configmod.ConfigError as exc:
        for problem in exc.problems:
            where = result.origin_of(problem.path, Origin(path, 0))
            result.report.error(where, problem.path or "lvsmon check", problem.message)
