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

from lvsmon import config as configmod
from lvsmon.importers import FORMATS, translate
from lvsmon.importers.report import Origin
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
        source = MemorySource({path: sys.stdin.read()})  # type: ignore[assignment]
    config_id = args.config_id
    if config_id is None:
        config_id = socket.gethostname().split(".")[0]
    result = translate(args.format, path, source, config_id=config_id)
    report = result.report
    if not report.has_errors:
        try:
            configmod.loads(result.toml, "<import>")
        except configmod.ConfigError as exc:
            for problem in exc.problems:
                where = result.origin_of(problem.path, Origin(path, 0))
                report.error(where, problem.path or "lvsmon check", problem.message)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(result.toml)
    else:
        sys.stdout.write(result.toml)
    sys.stderr.write(report.render())
    return 1 if report.has_errors else 0
