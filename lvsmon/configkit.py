"""The config toolkit every section reader uses: one way to read, convert and complain.

A reader walks its TOML table with a `Section`, which converts each key with a
converter from this module (or its own), records the keys it knows, and collects
every `Problem` at once, each naming its key path:

    sec = Section(data, "virtual_server[web]", problems)
    port = sec.require("port", int_in(1, 65535), PORT)
    timeout = sec.get("persistence_timeout", duration, 0.0, DURATION)
    sec.check_unknown()      # typos: "unknown key (did you mean ...)"

Converters take the raw TOML value and return the converted one, or raise
`TypeError`/`ValueError` (`OverflowError` too); the section words the error as
`<value> is not valid: expected <what>`. A converter adds a suggestion by raising
`ValueError(Hint("..."))`. Files a config names are read with `read_file`: a size
cap, regular files only, so a FIFO, a device or a huge file is a clean error.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from lvsmon.model import MAX_WEIGHT, Endpoint, IPAddress

T = TypeVar("T")

PORT = "an integer port 1..65535"
WEIGHT = f"an integer weight 0..{MAX_WEIGHT}"
DURATION = 'a duration such as "100ms", "2s", "5m" or "1h30m"'
NAME = "a name of letters, digits, '_', '.', '-' (1-64 chars)"
# the longest duration any key takes: ~100 years (IPVS timeouts are u32 seconds)
MAX_DURATION = 100 * 365 * 86400.0
# the largest file a config may name (keys, certificates, web configs, the config itself)
MAX_FILE_BYTES = 4 * 2**20

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}: {self.path}" if self.path else source
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; `problems` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"{self.source}: {n} error{'s' if n != 1 else ''}"
        return "\n".join([head, *(p.render(self.source) for p in self.problems)])


class Hint(str):
    """A converter's suggestion, appended to the error (e.g. 'did you mean "wlc"?')."""


def parse_duration(text: str) -> float:
    """'100ms', '2s', '5m', '1h30m' -> seconds. Raises ValueError."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    return total


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def show(value: object) -> str:
    """A value as it would appear in TOML, for error messages (long strings cut)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 200 else value[:200] + "..."
        return '"' + "".join(c if c.isprintable() else _escape(c) for c in text) + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _escape(char: str) -> str:
    """A control or otherwise unprintable character as TOML writes it: \\n, \\u0000."""
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(char, f"\\u{ord(char):04x}")


class Section:
    """One TOML table being read: tracks the keys used, collects problems."""

    def __init__(self, data: dict[str, Any], path: str, problems: list[Problem]):
        self.data = data
        self.path = path
        self.problems = problems
        self.known: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.key_path(key) if key else self.path, message))

    def get(self, key: str, convert: Callable[[Any], T], default: T, expected: str) -> T:
        """Convert data[key]; on failure record '<value>: expected <expected>'."""
        self.known.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        try:
            return convert(value)
        except (TypeError, ValueError, OverflowError) as exc:
            hint = f" ({exc.args[0]})" if exc.args and isinstance(exc.args[0], Hint) else ""
            self.error(key, f"{show(value)} is not valid: expected {expected}{hint}")
            return default

    def require(self, key: str, convert: Callable[[Any], T], expected: str) -> T | None:
        self.known.add(key)
        if key not in self.data:
            self.error(key, f"missing: expected {expected}")
            return None
        return self.get(key, convert, None, expected)

    def tables(self, key: str) -> list[dict[str, Any]]:
        self.known.add(key)
        value = self.data.get(key, [])
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            expected = f"[[{self.key_path(key)}]] tables"
            self.error(key, f"{show(value)} is not valid: expected {expected}")
            return []
        return value

    def table(self, key: str) -> dict[str, Any]:
        self.known.add(key)
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.error(key, f"{show(value)} is not valid: expected a [{self.key_path(key)}] table")
            return {}
        return value

    def child(self, key: str) -> Section:
        """The sub-table `key` as a Section of its own (an empty one when absent)."""
        return Section(self.table(key), self.key_path(key), self.problems)

    def check_unknown(self) -> None:
        for key in self.data:
            if key in self.known:
                continue
            close = difflib.get_close_matches(key, sorted(self.known), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            known = ", ".join(sorted(self.known))
            self.error(key, f"unknown key{hint}; known keys here: {known}")


def label_of(data: dict[str, Any], index: int) -> str:
    """How an entry of an array of tables is named in key paths: its `name` when that is a
    printable string of at most 64 characters, else its position (from 1)."""
    raw = data.get("name")
    if isinstance(raw, str) and raw and len(raw) <= 64 and raw.isprintable():
        return raw
    return str(index)


# --- converters: raise ValueError/TypeError, the Section words the error ---


def int_in(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(value)
        return value

    return convert


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    return tuple(value)


def choice(options: Iterable[str]) -> Callable[[Any], str]:
    allowed = tuple(options)

    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(value)
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
            raise ValueError(Hint(f'did you mean "{close[0]}"?') if close else value)
        return value

    return convert


def duration(value: Any) -> float:
    """A duration string ("1h30m") or a number of seconds; finite, >= 0, <= MAX_DURATION."""
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value.strip())
    else:
        raise TypeError(value)
    if not 0 <= seconds <= MAX_DURATION:  # also false for NaN
        raise ValueError(value)
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError(value)
    return seconds


def bounded_duration(high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        seconds = duration(value)
        if seconds > high:
            raise ValueError(value)
        return seconds

    return convert


def fraction(value: Any) -> float:
    """A number 0..1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(value)
    return float(value)


def finite_number(low: float, high: float) -> Callable[[Any], float]:
    """An integer or float in [low, high] (NaN and infinities are never in range)."""

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(value)
        return float(value)

    return convert


def address(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise TypeError(value)
    return ipaddress.ip_address(value)


def addresses(value: Any) -> tuple[IPAddress, ...]:
    if not isinstance(value, list):
        raise TypeError(value)
    return tuple(address(v) for v in value)


def endpoint(value: Any) -> Endpoint:
    """'10.0.0.9:80' or '[2001:db8::9]:80'."""
    if not isinstance(value, str):
        raise TypeError(value)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([0-9.]+):(\d+)", value)
    if not match:
        raise ValueError(value)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(value)
    return Endpoint(ipaddress.ip_address(host), port)


def name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(value)
    return value


def interface(value: Any) -> str:
    """A Linux interface name: 1..15 bytes (IFNAMSIZ 16 with the NUL), no '/', ':' or
    whitespace, not "." or ".."."""
    if not isinstance(value, str) or not 1 <= len(value.encode()) <= 15:
        raise ValueError(value)
    if re.search(r"[\s/:\x00]", value) or value in (".", ".."):
        raise ValueError(value)
    return value


def argv(value: Any) -> tuple[str, ...]:
    """A program and its arguments: a non-empty array of strings, no NUL bytes."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    if not value[0]:
        raise ValueError(value)
    if any("\x00" in v for v in value):
        raise ValueError(Hint("an argument contains a NUL byte"))
    return tuple(value)


def netmask(family: int) -> Callable[[Any], int]:
    """A prefix length, or a dotted IPv4 netmask: the prefix length it stands for."""
    bits = 128 if family == 6 else 32

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, int):
            if not 1 <= value <= bits:
                raise ValueError(value)
            return value
        if not isinstance(value, str):
            raise TypeError(value)
        return ipaddress.ip_network(f"0.0.0.0/{value}").prefixlen

    return convert


# --- files a config names ---


class FileProblem(Exception):
    """A file a config names cannot be used; the message says why (no path in it)."""


def read_file(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Never blocks on a FIFO, never
    reads a device or a directory, never reads more than limit + 1 bytes."""
    if "\x00" in path:
        raise FileProblem("the file name contains a NUL byte")
    if not path:
        raise FileProblem("the file name is empty")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise FileProblem(f"cannot read: {os.strerror(errno.EISDIR)}")
        if not stat.S_ISREG(mode):
            raise FileProblem(f"cannot read: not a regular file ({_kind(mode)})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileProblem(f"cannot read: larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise FileProblem(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """read_file, decoded as UTF-8 (FileProblem when it is not)."""
    data = read_file(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"not UTF-8 text: {exc}") from None


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"
