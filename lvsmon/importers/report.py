"""What an import could not translate exactly: one finding per directive, with file:line.

Three severities, like a compiler's:
  error    the translation cannot express it (a virtual server, real server, weight,
           scheduler or address would differ): `lvsmon import` exits 1
  warning  translated approximately, or dropped with an effect on behaviour: review it
  note     dropped without effect on what lvsmon does (mail alerts, SNMP, ...)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

# the longest line an importer reads (keepalived's own buffer is far shorter): a longer one is
# an error, so no line-level work can grow with a megabyte line
MAX_LINE = 16384
# findings kept and shown: past this a hostile file (a megabyte of '{') is counted, not listed
MAX_FINDINGS = 1000


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a directive came from (the including file's line for spliced text)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Finding:
    origin: Origin
    severity: Severity
    directive: str
    message: str

    def render(self) -> str:
        return f"{self.origin}: {self.severity}: {self.directive}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    unlisted: Counter[Severity] = field(default_factory=Counter)

    def add(self, origin: Origin, severity: Severity, directive: str, message: str) -> None:
        if len(self.findings) >= MAX_FINDINGS:
            self.unlisted[severity] += 1
        else:
            self.findings.append(Finding(origin, severity, directive, message))

    def error(self, origin: Origin, directive: str, message: str) -> None:
        self.add(origin, Severity.ERROR, directive, message)

    def warning(self, origin: Origin, directive: str, message: str) -> None:
        self.add(origin, Severity.WARNING, directive, message)

    def note(self, origin: Origin, directive: str, message: str) -> None:
        self.add(origin, Severity.NOTE, directive, message)

    def overlong(self, origin: Origin, line: str) -> bool:
        """Whether `line` is past MAX_LINE (then reported as an error: the line is not read)."""
        if len(line) <= MAX_LINE:
            return False
        self.error(origin, "line", f"{len(line)} characters, more than {MAX_LINE}: not read")
        return True

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity) + self.unlisted[severity]

    @property
    def has_errors(self) -> bool:
        return self.count(Severity.ERROR) > 0

    def render(self) -> str:
        lines = [f.render() for f in self.findings]
        if self.unlisted:
            lines.append(
                f"lvsmon import: {sum(self.unlisted.values())} more findings not listed "
                f"(the first {MAX_FINDINGS} are)"
            )
        counts = ", ".join(
            f"{self.count(s)} {s}{'' if self.count(s) == 1 else 's'}" for s in Severity
        )
        return "\n".join([*lines, f"lvsmon import: {counts}"]) + "\n"
