"""Structural mutations of a parsed TOML document, for fuzzing `lvsmon check`.

Every value in an example config (tables and arrays included) is replaced, one at
a time, by each hostile value below, or deleted; tables gain an unknown key,
arrays of tables repeat their first entry (duplicate names and identities). The
held-back corpus that checks a landing is built the same way from configs we have
not seen, so the generator walks whatever document it is given, not our schema.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import tomli_w

Path = tuple[str | int, ...]
DELETE = object()

HOSTILE: tuple[Any, ...] = (
    "x",
    "",
    " ",
    "üñíçødé ☃",
    "a" * 5000,
    "1s\x00",
    -1,
    0,
    1,
    65536,
    2**63 - 1,
    -(2**63),
    0.5,
    -0.0,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    [],
    ["x"],
    [1, 2],
    [[]],
    {},
    {"x": 1},
    {"name": {"name": "x"}},
)


def nodes(doc: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, value) below the root, depth first."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*path, key), value
            yield from nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield (*path, i), value
            yield from nodes(value, (*path, i))


def replaced(doc: dict[str, Any], path: Path, new: Any) -> dict[str, Any]:
    """A deep copy of doc with the value at path replaced (or deleted: new is DELETE)."""
    out = copy.deepcopy(doc)
    parent: Any = out
    for step in path[:-1]:
        parent = parent[step]
    if new is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(new)
    return out


def mutations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(description, mutated document) for every structural mutation of doc."""
    for path, value in nodes(doc):
        where = ".".join(str(p) for p in path)
        yield f"{where}: deleted", replaced(doc, path, DELETE)
        for new in HOSTILE:
            if type(new) is type(value) and new == value:
                continue
            yield f"{where} = {short(new)}", replaced(doc, path, new)
        if isinstance(value, dict):
            yield f"{where}: unknown key", replaced(doc, path, {**value, "bogus_key": 1})
        if isinstance(value, list) and value and isinstance(value[0], dict):
            yield f"{where}: first entry twice", replaced(doc, path, [value[0], *value])


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def dumps(doc: dict[str, Any]) -> str:
    return tomli_w.dumps(doc)


def deep_nesting(depth: int = 100_000) -> list[str]:
    """TOML texts nested far past any recursion limit."""
    return [
        "x = " + "[" * depth + "]" * depth + "\n",
        "x = " + "{a = " * depth + "1" + "}" * depth + "\n",
        "[daemon]\ndataplane = " + "[" * depth + "]" * depth + "\n",
        "[" + ".".join(["a"] * 5000) + "]\n",
    ]


# --- line-oriented configs (keepalived.conf, lvs.cf, `ipvsadm -S -n`): text edits ---

# words put where a config has words: the hostile TOML scalars above as text, then what
# only a line-oriented grammar can get wrong
WORDS: tuple[str, ...] = (
    *(str(v) for v in HOSTILE if isinstance(v, int | float | str) and v != ""),
    "0x10",
    "1e9",
    "9" * 5000,
    "²",
    "٣",
    "-",
    "::",
    "::ffff:192.0.2.1",
    "fe80::1%eth0",
    "[2001:db8::1]:80",
    "2001:db8::1/129",
    "256.1.1.1",
    "192.0.2.1-300",
    "10.0.0.0/8",
    "\x00",
    "\ufffd",
    "{",
    "}",
    "{ }",
    '"',
    "'",
    "\\",
    "#",
    "!",
    "$X",
    "${X}",
    "${_RANDOM 1 9}",
    "$X=$X $X",
    "@id",
    "@^id",
    "~SEQ(i,1,1000000000)",
    "~LST(a,1,2)",
    "include /nonexistent/*",
    "include {a,b}{c,d}",
)
TEXT_EDITS = (
    "delete line",
    "duplicate line",
    "swap lines",
    "truncate at byte",
    "replace word",
    "insert word",
    "insert bytes",
    "open braces",
    "close braces",
    "giant line",
)


def edit_text(text: str, edit: str, a: int, b: int, word: str) -> str:
    """`text` with one edit from TEXT_EDITS at the places a and b pick (taken modulo what
    is there), `word` for the edits that put one in."""
    lines = text.splitlines()
    n = max(len(lines), 1)
    i, j = a % n, b % n
    if not lines:
        lines = [""]
    words = lines[i].split()
    if edit == "delete line":
        del lines[i]
    elif edit == "duplicate line":
        lines.insert(i, lines[i])
    elif edit == "swap lines":
        lines[i], lines[j] = lines[j], lines[i]
    elif edit == "truncate at byte":  # possibly inside a UTF-8 sequence
        data = text.encode()
        return data[: a % (len(data) + 1)].decode("utf-8", errors="replace")
    elif edit == "replace word" and words:
        words[b % len(words)] = word
        lines[i] = " ".join(words)
    elif edit == "insert word":
        words.insert(b % (len(words) + 1), word)
        lines[i] = " ".join(words)
    elif edit == "insert bytes":  # what a decoder makes of random bytes, NULs included
        noise = bytes((a * 7 + k * b) % 256 for k in range(b % 16 + 1))
        lines[i] += noise.decode("latin-1") + "\x00"
    elif edit == "open braces":
        lines.insert(i, "x {\n" * (b % 200 + 1))
    elif edit == "close braces":
        lines.insert(i, "}" * (b % 5 + 1))
    elif edit == "giant line":
        lines.insert(i, (word + " ") * (2**20 // (len(word) + 1)))
    return "\n".join(lines) + "\n"
