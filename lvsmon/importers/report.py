"""What an import could not translate exactly: one finding per directive, with file:line.

Three severities, like a compiler's:
  error    the translation cannot express it (a virtual server, real server, weight,
           scheduler or address would differ): `lvsmon import` exits 1
  warning  translated approximately, or dropped with an effect on behaviour: review it
  note     dropped without effect on what lvsmon does (mail alerts, SNMP, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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

    def add(self, origin: Origin, severity: Severity, directive: str, message: str) -> None:
        self.findings.append(Finding(origin, severity, directive, message))

    def error(self, origin: Origin, directive: str, message: str) -> None:
        self.add(origin, Severity.ERROR, directive, message)

    def warning(self, origin: Origin, directive: str, message: str) -> None:
        self.add(origin, Severity.WARNING, directive, message)

    def note(self, origin: Origin, directive: str, message: str) -> None:
        self.add(origin, Severity.NOTE, directive, message)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    @property
    def has_errors(self) -> bool:
        return self.count(Severity.ERROR) > 0

    def render(self) -> str:
        lines = [f.render() for f in self.findings]
        counts = ", ".join(
            f"{self.count(s)} {s}{'' if self.count(s) == 1 else 's'}" for s in Severity
        )
        return "\n".join([*lines, f"lvsmon import: {counts}"]) + "\n"
