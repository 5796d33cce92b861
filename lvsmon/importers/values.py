"""Reading one directive's arguments, reporting what does not fit (shared by the importers)."""

from __future__ import annotations

import ipaddress
import shlex

from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import Source

BOOLS = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}
FORWARDING = {
    "nat": "nat",
    "masq": "nat",
    "dr": "dr",
    "direct": "dr",
    "tun": "tunnel",
    "tunnel": "tunnel",
}


class Reader:
    """Converters that report a bad value as an error at `origin` and return None."""

    def __init__(self, report: Report):
        self.report = report

    def integer(
        self, origin: Origin, directive: str, text: str | None, low: int, high: int
    ) -> int | None:
        try:
            value = int(text or "", 0)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            self.report.error(
                origin, directive, f'"{text}" is not an integer {low}..{high}: not translated'
            )
            return None
        return value

    def timer(self, origin: Origin, directive: str, text: str | None) -> float | None:
        try:
            value = float(text or "")
        except ValueError:
            value = -1.0
        if not 0 <= value < 1e9:
            self.report.error(origin, directive, f'"{text}" is not a time in seconds')
            return None
        return value

    def address(self, origin: Origin, directive: str, text: str | None) -> str | None:
        try:
            return str(ipaddress.ip_address(text or ""))
        except ValueError:
            self.report.error(
                origin,
                directive,
                f'"{text}" is not an IP address (lvsmon takes addresses, not host names)',
            )
            return None

    def boolean(self, origin: Origin, directive: str, args: list[str]) -> bool:
        if not args:
            return True
        value = BOOLS.get(args[0].lower())
        if value is None:
            self.report.error(origin, directive, f'"{args[0]}" is not on/off/true/false/yes/no')
            return False
        return value


def number(text: str) -> int | str:
    """`text` as an integer when it is one written in ASCII digits (str.isdigit also takes
    "²" and "٣", which int() refuses or reads), else as written, for the checker to judge."""
    if text.isascii() and text.isdigit() and len(text) <= 20:
        return int(text)
    return text


def split_command(text: str) -> list[str]:
    """A script line as keepalived splits it: white space, 'single quotes' group."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def hex_payload(text: str) -> str:
    """keepalived's free-form hex ("Ab12f 3 456" = AB 12 0F 03 45 06) as plain hex."""
    out: list[str] = []
    for group in text.split():
        digits = group.lower()
        pairs = [digits[i : i + 2] for i in range(0, len(digits), 2)]
        out.extend(p if len(p) == 2 else "0" + p for p in pairs)
    return "".join(out)


def read_main(path: str, source: Source, report: Report) -> str | None:
    """The file being imported; None (and an error) when it cannot be read."""
    try:
        return source.read(path)
    except OSError as exc:
        report.error(Origin(path, 0), "file", f"cannot read: {exc.strerror}")
        return None
