"""`lvsmon import FORMAT FILE`: the translation on stdout, the report on stderr.

The one place the import touches the world: it reads the files (FileSource)
and then runs the real checker on the translation, so a report without
errors always means `lvsmon check` accepts the output on this machine (a
problem the checker still finds is added to the report as an error).
"""

from __future__ import annotations

import argparse
import socket
import sys

from lvsmon.configkit import MAX_FILE_BYTES
from lvsmon.importers import FORMATS, translate, verify
from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import FileSource


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    text = "translate a keepalived.conf, Piranha lvs.cf or `ipvsadm -S -n` file into lvsmon TOML"
    p = sub.add_parser("import", help=text, description=text)
    p.add_argument("format", choices=FORMATS, help="the file's format")
    p.add_argument("file", help='the file to translate ("-" = standard input)')
    p.add_argument(
        "--config-id",
        default=None,
        help="keepalived's config id for @ID conditional lines (default: the host name up to "
        "the first dot, as keepalived -i)",
    )
    p.add_argument("-o", "--output", help="write the TOML here instead of standard output")


def run(args: argparse.Namespace) -> int:
    source = FileSource()
    path = args.file
    if path == "-":
        from lvsmon.importers.source import MemorySource

        path = "<stdin>"
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)  # never more than the cap, as a file
        if len(data) > MAX_FILE_BYTES:
            report = Report()
            report.error(
                Origin(path, 0), "file", f"cannot read: larger than {MAX_FILE_BYTES} bytes"
            )
            sys.stderr.write(report.render())
            return 1
        text = data.decode("utf-8", errors="replace")
        source = MemorySource({path: text})  # type: ignore[assignment]
    config_id = args.config_id
    if config_id is None:
        config_id = socket.gethostname().split(".")[0]
    result = translate(args.format, path, source, config_id=config_id)
    verify(result, path)
    report = result.report
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(result.toml)
        except OSError as exc:
            report.error(Origin(args.output, 0), "--output", f"cannot write: {exc.strerror}")
    else:
        sys.stdout.write(result.toml)
    sys.stderr.write(report.render())
    return 1 if report.has_errors else 0
