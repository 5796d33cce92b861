"""lvsmon(8), generated from the command line's argparse definitions.

python -m lvsmon.manpage > docs/lvsmon.8      (make man; a test keeps it in sync)
"""

from __future__ import annotations

import argparse
import sys

from lvsmon import __version__
from lvsmon.client import PASSWORD_ENV

DATE = "2026"
SECTIONS = {
    "SIGNALS": [
        ("SIGHUP", "reload: the new file is validated in full, then applied as a diff"),
        ("SIGTERM, SIGINT", "stop: hand VRRP over, let connections drain for shutdown_grace"),
    ],
    "ENVIRONMENT": [
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "systemd's notify socket and watchdog period: "
            "lvsmon run sends READY, RELOADING, STOPPING and WATCHDOG (install-unit)",
        ),
        ("LVSMON_LOG_FORMAT", "logfmt or json, when --log-format is not given"),
        (PASSWORD_ENV, "basic auth password for status and save"),
    ],
    "FILES": [
        ("/etc/lvsmon/lvsmon.toml", "the default configuration file"),
        ("/etc/systemd/system/lvsmon.service", "the unit written by lvsmon install-unit"),
        ("/run/lvsmon/ipvs-owned.json", "the IPVS virtual servers lvsmon created"),
    ],
    "EXIT STATUS": [
        ("0", "success; for import: the report has no error"),
        ("1", "an invalid configuration, a daemon that cannot start, an import with errors"),
    ],
}


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line[:1] in ".'" else line) for line in text.split("\n"))


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            flags = ", ".join(f"\\fB{_esc(s)}\\fR" for s in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or (action.dest.upper())
                if action.choices:
                    metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
                flags += f" \\fI{_esc(str(metavar))}\\fR"
        else:
            name = action.metavar or action.dest
            if action.choices:
                name = "{" + ",".join(str(c) for c in action.choices) + "}"
            flags = f"\\fI{_esc(str(name))}\\fR"
        help_text = (action.help or "").replace("%(default)s", str(action.default))
        out += [".TP", flags, _esc(help_text)]
    return out


def render(parser: argparse.ArgumentParser) -> str:
    lines = [
        f'.TH LVSMON 8 "{DATE}" "lvsmon {__version__}" "System Administration"',
        ".SH NAME",
        f"lvsmon \\- {_esc(parser.description or '')}",
        ".SH SYNOPSIS",
        ".B lvsmon",
        "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _esc(
            "lvsmon programs a layer-4 load balancer (the kernel's IPVS table, or an embedded "
            "userspace data plane), health-checks real servers, fails over between directors "
            "with VRRPv3, and exports everything as Prometheus metrics. It is configured by a "
            "TOML file and reloads on SIGHUP."
        ),
        ".SH OPTIONS",
        *_options(parser),
        ".SH COMMANDS",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        usage = command.format_usage().removeprefix("usage: ").strip()
        lines += [
            f".SS {_esc(name)}",
            ".nf",
            _esc(" ".join(usage.split())),
            ".fi",
            _esc(command.description or ""),
            *_options(command),
        ]
    for title, items in SECTIONS.items():
        lines.append(f".SH {title}")
        for term, text in items:
            lines += [".TP", f"\\fB{_esc(term)}\\fR", _esc(text)]
    lines += [
        ".SH SEE ALSO",
        "\\fBipvsadm\\fR(8), \\fBkeepalived.conf\\fR(5), \\fBsystemd.service\\fR(5), "
        "\\fBsd_notify\\fR(3)",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from lvsmon.cli import _parser

    sys.stdout.write(render(_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
