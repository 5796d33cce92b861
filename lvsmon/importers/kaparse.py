"""keepalived.conf's grammar (keepalived.conf(5)): text in, a tree of directives out.

Done in keepalived's order, line by line:
  - comments: '#' or '!' to the end of the line, outside quotes;
  - `include` / `includer` `includem` `includew` `includeb` `includea` FILE: shell
    wildcards and {a,b} braces, relative to the including file's directory;
  - `@ID line` / `@^ID line`: kept only when the config id is (is not) ID;
  - `$NAME=value` definitions (multi-line with a trailing '\\'), then `$NAME` (followed
    by white space) and `${NAME}` substituted, recursively, at use; ${_PWD},
    ${_INSTANCE}, ${_HASH}, ${_BANG}, ${_RANDOM} predefined;
  - `~SEQ(var, start, step, end)`, `~SEQx(...)`, `~LST(var, v1, v2, ...)` line repetition;
  - words split on white space, "double" or 'single' quoted strings joined with
    their escapes; '{' and '}' are tokens wherever they stand.
A block opens with '{' at the end of its line or alone on the next one. Every
node keeps the file:line it came from (the line that used a definition).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from lvsmon.configkit import MAX_FILE_BYTES
from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import MAX_GLOB, Source

INCLUDES = ("include", "includer", "includem", "includew", "includeb", "includea")
MAX_DEPTH = 32  # include nesting and substitution recursion
# Budgets for one import, so that no file (a ~SEQ(i, 1, 1e9), a $A=$A $A, a glob or a
# {a,b}{a,b}... that names thousands of files) costs more than a few seconds and a few
# hundred MB: past one, an error names the line and the rest is not read.
MAX_REPEAT = 65536  # lines all ~SEQ/~LST together produce
MAX_TEXT = MAX_FILE_BYTES  # characters read from all files, and again made by $NAME and ~SEQ
MAX_DIRECTIVES = 262144  # directives in the tree
MAX_FILES = MAX_GLOB  # files read (an empty file costs no characters)
MAX_NESTING = 64  # blocks inside blocks (keepalived's deepest is 4)
_DEFINITION = re.compile(r"\s*\$([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)
_CONDITIONAL = re.compile(r"\s*@(\^?)(\S*)\s*(.*)\Z", re.S)
_PARAM = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\s+([^}]{0,256}))?\}|\$([A-Za-z_][A-Za-z0-9_]*)(?=\s|\Z)"
)
_HEX = re.compile(r"[0-9A-Fa-f]+")
_OCTAL = re.compile(r"[0-7]{1,3}")
_REPEAT = re.compile(r"\s*~(SEQx?|LST)\(")
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


@dataclass(frozen=True, slots=True)
class Line:
    origin: Origin
    text: str


@dataclass(slots=True)
class Node:
    """One directive: `keyword args...`, with a block of children when it has one."""

    keyword: str
    args: list[str]
    origin: Origin
    children: list[Node] | None = None

    @property
    def words(self) -> list[str]:
        return [self.keyword, *self.args]

    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class Parser:
    source: Source
    report: Report
    config_id: str = ""
    definitions: dict[str, list[str]] = field(default_factory=dict)
    # what this import has spent of its budgets; `exhausted` once one ran out
    read: int = 0
    made: int = 0
    repeated: int = 0
    files: int = 0
    exhausted: bool = False
    including: list[str] = field(default_factory=list)  # the files being read, outermost first

    def _over(self, origin: Origin, directive: str, what: str) -> bool:
        """Report a spent budget once; every later call just says so."""
        if not self.exhausted:
            self.exhausted = True
            self.report.error(origin, directive, f"{what}: the rest of the config is not read")
        return True

    # --- lines: includes, conditionals, definitions, substitution, repetition ---

    def lines(self, path: str, depth: int = 0, origin: Origin | None = None) -> Iterator[Line]:
        where = origin or Origin(path, 0)
        if depth > MAX_DEPTH:
            self.report.error(where, "include", f'"{path}": includes nest too deep')
            return
        if posixpath.normpath(path) in self.including:
            self.report.error(where, "include", f'"{path}": includes itself (a loop): not included')
            return
        self.files += 1
        if self.files > MAX_FILES:
            self._over(where, "include", f'"{path}": more than {MAX_FILES} files read')
            return
        try:
            text = self.source.read(path)
        except OSError as exc:
            self.report.error(where, "include" if depth else "file", f'"{path}": {exc.strerror}')
            return
        self.read += len(text)
        if self.read > MAX_TEXT:
            self._over(
                where,
                "include" if depth else "file",
                f'"{path}": the config and its includes pass {MAX_TEXT} characters',
            )
            return
        self.including.append(posixpath.normpath(path))
        try:
            yield from self._lines(path, text.splitlines(), depth)
        finally:
            self.including.pop()

    def _lines(self, path: str, raw: list[str], depth: int) -> Iterator[Line]:
        i = 0
        while i < len(raw) and not self.exhausted:
            start = i
            if self.report.overlong(Origin(path, i + 1), raw[i]):
                i += 1
                continue
            line = _strip_comment(raw[i])
            i += 1
            match = _DEFINITION.match(line)
            if match and match.group(2).rstrip().endswith("\\"):
                # a multi-line definition: each further line ending in '\' continues it
                body = [match.group(2).rstrip()[:-1]]
                while i < len(raw):
                    more = _strip_comment(raw[i]).rstrip()
                    i += 1
                    if more.endswith("\\"):
                        body.append(more[:-1])
                    else:
                        body.append(more)
                        break
                name = match.group(1)
                self.definitions[name] = [b for b in body if b.strip()]
                continue
            yield from self._process(Line(Origin(path, start + 1), line), path, depth, 0)

    def _process(self, line: Line, path: str, depth: int, level: int) -> Iterator[Line]:
        if level > MAX_DEPTH:
            self.report.error(line.origin, "$", "parameter substitution recurses too deep")
            return
        text = line.text
        if not text.strip() or self.exhausted:
            return
        if level and self.report.overlong(line.origin, text):
            return
        cond = _CONDITIONAL.match(text)
        if cond:
            negate, wanted, rest = cond.group(1) == "^", cond.group(2), cond.group(3)
            keep = (wanted == self.config_id) != negate
            shown = "@" + ("^" if negate else "") + wanted
            seen = f'config id "{self.config_id}"' if self.config_id else "no config id"
            self.report.note(
                line.origin,
                shown,
                f"conditional line {'kept' if keep else 'skipped'} for {seen} "
                "(lvsmon import --config-id chooses)",
            )
            if not keep:
                return
            text = rest
            if not text.strip():
                return
        match = _DEFINITION.match(text)
        if match:
            self.definitions[match.group(1)] = [match.group(2).strip()]
            return
        repeat = _REPEAT.match(text)
        if repeat:
            yield from self._repeat(Line(line.origin, text), path, depth, level)
            return
        substituted = self._substitute(text, path, line.origin)
        if substituted is None:
            return
        if substituted != [text]:
            for piece in substituted:
                yield from self._process(Line(line.origin, piece), path, depth, level + 1)
            return
        words = text.split()
        if words and words[0] in INCLUDES:
            yield from self._include(words, path, depth, line.origin)
            return
        yield Line(line.origin, text)

    def _substitute(self, text: str, path: str, origin: Origin) -> list[str] | None:
        """`text` with one round of definitions replaced; a multi-line value splits it.
        None (and an error) when what it makes passes the budget."""
        lines = [""]
        pos = 0
        for m in _PARAM.finditer(text):
            name = m.group(1) or m.group(3)
            value = self._value(name, m.group(2), path, origin)
            if value is None:
                continue
            self.made += m.start() - pos + sum(len(v) + 1 for v in value)
            if self.made > MAX_TEXT:
                self._over(origin, "$" + name, f"definitions make more than {MAX_TEXT} characters")
                return None
            lines[-1] += text[pos : m.start()] + value[0]
            lines.extend(value[1:])
            pos = m.end()
        lines[-1] += text[pos:]
        return lines

    def _value(self, name: str, arg: str | None, path: str, origin: Origin) -> list[str] | None:
        predefined = {
            "_PWD": posixpath.dirname(path) or ".",
            "_INSTANCE": self.config_id,
            "_HASH": "#",
            "_BANG": "!",
        }
        if name in self.definitions:
            return self.definitions[name] or [""]
        if name in predefined:
            return [predefined[name]]
        if name == "_RANDOM":
            low = (arg or "0").split()[0]
            self.report.warning(
                origin, "${_RANDOM}", f"replaced by {low} (its minimum): the import is repeatable"
            )
            return [low]
        return None  # undefined: left as it is (keepalived does the same)

    def _repeat(self, line: Line, path: str, depth: int, level: int) -> Iterator[Line]:
        text = line.text.lstrip()
        m = _REPEAT.match(text)
        assert m is not None
        close = _matching_paren(text, m.end() - 1)
        if close < 0:
            self.report.error(line.origin, f"~{m.group(1)}", "no closing parenthesis")
            return
        inner, rest = text[m.end() : close], text[close + 1 :]
        try:
            runs = _repetitions(m.group(1), inner, MAX_REPEAT - self.repeated)
        except ValueError as exc:
            self.report.error(line.origin, f"~{m.group(1)}", f"cannot read ({exc})")
            return
        except OverflowError as exc:
            self._over(line.origin, f"~{m.group(1)}", str(exc))
            return
        self.repeated += len(runs)
        for assignments in runs:
            if self.exhausted:
                return
            saved = {name: self.definitions.get(name) for name in assignments}
            for name, value in assignments.items():
                self.definitions[name] = [value]
            yield from self._process(Line(line.origin, rest), path, depth, level + 1)
            for name, old in saved.items():
                if old is None:
                    self.definitions.pop(name, None)
                else:
                    self.definitions[name] = old

    def _include(self, words: list[str], path: str, depth: int, origin: Origin) -> Iterator[Line]:
        if len(words) < 2:
            self.report.error(origin, words[0], "names no file")
            return
        pattern = " ".join(words[1:]).strip("\"'")
        base = posixpath.dirname(path)
        found: list[str] = []
        try:
            alternatives = _braces(pattern)
        except OverflowError as exc:
            self.report.error(origin, words[0], f'"{pattern}": {exc}: nothing included')
            return
        for alternative in alternatives:
            full = (
                alternative if posixpath.isabs(alternative) else posixpath.join(base, alternative)
            )
            if any(c in full for c in "*?["):
                found.extend(self.source.glob(full))
            else:
                found.append(full)
            if len(found) > MAX_GLOB:
                self.report.error(
                    origin,
                    words[0],
                    f'"{pattern}" matches more than {MAX_GLOB} files: nothing included',
                )
                return
        if not found:
            self.report.warning(origin, words[0], f'"{pattern}" matches no file: nothing included')
        for file in found:
            yield from self.lines(file, depth + 1, origin)


# --- tokens and the tree ---


def tokenize(text: str) -> list[str]:
    """Words, quoted strings (quotes removed, escapes applied, adjacent parts joined)
    and '{' '}' as tokens of their own."""
    tokens: list[str] = []
    word: list[str] | None = None
    i = 0
    closes = text.find("}") >= 0  # none left: no ${ needs looking for its '}'
    while i < len(text):
        c = text[i]
        if c in "\"'":
            end, part = _quoted(text, i)
            word = (word or []) + [part]
            i = end
            continue
        if c == "$" and closes and text.startswith("${", i):  # an undefined ${NAME}: one word
            end = text.find("}", i)
            closes = end >= 0
            if end > 0:
                word = (word or []) + [text[i : end + 1]]
                i = end + 1
                continue
        if c.isspace() or c in "{}":
            if word is not None:
                tokens.append("".join(word))
                word = None
            if c in "{}":
                tokens.append(c)
            i += 1
            continue
        if word is None:
            word = []
        word.append(c)
        i += 1
    if word is not None:
        tokens.append("".join(word))
    return tokens


def parse(parser: Parser, path: str) -> Node:
    """The whole file (and what it includes) as a tree under a root node."""
    root = Node("", [], Origin(path, 0), [])
    stack: list[Node] = [root]
    last: Node | None = None  # the previous directive: a lone '{' opens its block
    too_deep = 0  # blocks opened past MAX_NESTING: their directives are not kept
    directives = 0
    for line in parser.lines(path):
        words: list[str] = []
        for token in [*tokenize(line.text), "\n"]:
            if token not in ("{", "}", "\n"):
                words.append(token)
                continue
            if words and not too_deep:
                directives += 1
                if directives > MAX_DIRECTIVES:
                    parser._over(line.origin, words[0], f"more than {MAX_DIRECTIVES} directives")
                    break
                node = Node(words[0], words[1:], line.origin, None)
                assert stack[-1].children is not None
                stack[-1].children.append(node)
                last = node
            words = []
            if token == "{":
                if too_deep or len(stack) > MAX_NESTING:
                    if not too_deep:
                        parser.report.error(
                            line.origin, "{", f"blocks nest deeper than {MAX_NESTING}: not read"
                        )
                    too_deep += 1
                    continue
                if last is None or last.children is not None:
                    parser.report.error(line.origin, "{", "a block with no directive before it")
                    last = Node("", [], line.origin, [])
                last.children = []
                stack.append(last)
                last = None
            elif token == "}":
                if too_deep:
                    too_deep -= 1
                elif len(stack) == 1:
                    parser.report.error(line.origin, "}", "closes no block")
                else:
                    stack.pop()
                last = None
    for node in stack[1:]:
        parser.report.error(node.origin, node.keyword, "its block is never closed ('}' missing)")
    return root


# --- helpers ---


def _strip_comment(line: str) -> str:
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == "\\":
                continue
            if c == quote and (i == 0 or line[i - 1] != "\\"):
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "#!":
            return line[:i]
    return line


def _quoted(text: str, start: int) -> tuple[int, str]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return i + 1, "".join(out)
        if c == "\\" and i + 1 < len(text):
            i, ch = _escape(text, i + 1)
            out.append(ch)
            continue
        out.append(c)
        i += 1
    return i, "".join(out)  # unterminated: to the end of the line


def _escape(text: str, i: int) -> tuple[int, str]:
    c = text[i]
    if c in _ESCAPES:
        return i + 1, _ESCAPES[c]
    if c == "x":
        m = _HEX.match(text, i + 1)
        if m:
            return m.end(), chr(int(m.group()[-2:], 16))
    if c in "01234567":
        m = _OCTAL.match(text, i)
        assert m is not None
        return m.end(), chr(int(m.group(), 8) & 0xFF)
    if c == "c" and i + 1 < len(text):
        return i + 2, chr(ord(text[i + 1].upper()) ^ 0x40)
    return i + 1, c


def _matching_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _repetitions(kind: str, inner: str, most: int) -> list[dict[str, str]]:
    """The assignments of each repetition; OverflowError past `most` of them."""
    if kind == "LST":
        runs = _list_runs(inner)
        if len(runs) > most:
            raise OverflowError(f"more than {MAX_REPEAT} repeated lines in all")
        return runs
    parts = [p.strip() for p in inner.split(",")]
    if not 2 <= len(parts) <= 4 or not re.fullmatch(r"[A-Za-z_]\w*", parts[0]):
        raise ValueError("expected (var, [start, [step,]] end)")
    nums = [int(p, 0) for p in parts[1:]]
    if len(nums) == 1:
        end = nums[0]
        start, step = (1, 1) if end > 0 else (-1, -1)
    elif len(nums) == 2:
        start, end = nums
        step = 1 if end >= start else -1
    else:
        start, step, end = nums
    if step == 0 or (end - start) * step < 0:
        return []
    count = (end - start) // step + 1
    if count > most:
        raise OverflowError(f"{count} repetitions: more than {MAX_REPEAT} repeated lines in all")
    fmt = "{:x}" if kind == "SEQx" else "{:d}"
    return [{parts[0]: fmt.format(start + n * step)} for n in range(count)]


def _list_runs(inner: str) -> list[dict[str, str]]:
    inner = inner.strip()
    if inner.startswith("{"):
        close = inner.index("}")
        names = [n.strip() for n in inner[1:close].split(",")]
        rest = inner[close + 1 :]
        groups = re.findall(r"\{([^}]*)\}", rest)
        values = [[v.strip() for v in g.split(",")] for g in groups]
    else:
        first, *vals = [p.strip() for p in inner.split(",")]
        names, values = [first], [[v] for v in vals]
    if not values or any(len(v) != len(names) for v in values):
        raise ValueError("expected (var, v1, v2, ...) or ({a, b}, {1, 2}, ...)")
    return [dict(zip(names, v, strict=True)) for v in values]


def _braces(pattern: str) -> list[str]:
    """csh-style {a,b} expansion (nested), as glob(GLOB_BRACE) does; OverflowError past
    MAX_GLOB alternatives."""
    done: list[str] = []
    todo = [pattern]
    while todo:
        text = todo.pop()
        m = re.search(r"\{([^{}]*)\}", text)
        if not m:
            done.append(text)
        else:
            todo.extend(text[: m.start()] + alt + text[m.end() :] for alt in m.group(1).split(","))
        if len(done) + len(todo) > MAX_GLOB:
            raise OverflowError(f"more than {MAX_GLOB} alternatives")
    return done[::-1]
