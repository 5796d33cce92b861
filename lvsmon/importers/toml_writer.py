"""A small TOML writer for the importers' output: tables, arrays of tables, comments.

Only what an lvsmon config needs: strings, integers, floats, booleans and flat
arrays of them. Comments say where each table came from (file:line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

Scalar = str | int | float | bool
Value = Scalar | Sequence[Scalar]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(v)
        return repr(v)
    if isinstance(v, str):
        return string(v)
    return "[" + ", ".join(value(item) for item in v) + "]"


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


@dataclass
class Table:
    """One `[header]` or `[[header]]` with its keys; `comment` goes above the header."""

    header: str
    array: bool = False
    comment: str = ""
    items: list[tuple[str, Value, str]] = field(default_factory=list)

    def set(self, name: str, v: Value, comment: str = "") -> None:
        self.items.append((name, v, comment))

    def render(self) -> str:
        lines = [f"# {c}" for c in self.comment.splitlines()] if self.comment else []
        lines.append(f"[[{self.header}]]" if self.array else f"[{self.header}]")
        for name, v, comment in self.items:
            line = f"{key(name)} = {value(v)}"
            lines.append(f"{line}  # {comment}" if comment else line)
        return "\n".join(lines) + "\n"


def document(head: str, tables: Sequence[Table]) -> str:
    """The whole file: a comment block, then the tables separated by blank lines."""
    top = "".join(f"# {line}\n" if line else "#\n" for line in head.splitlines())
    return top + "".join("\n" + t.render() for t in tables)
