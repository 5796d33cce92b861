"""Structured logs: one logfmt (or JSON) line per event on stderr, quiet (warning) by default.

    ts=2026-11-21T07:40:01.123Z level=info logger=lvsmon.daemon msg="reload applied" ops=3
    {"ts": "2026-11-21T07:40:01.123Z", "level": "info", "logger": "lvsmon.daemon", ...}
Fields come from `extra={"fields": {...}}` so callers never format values themselves.
Under systemd both land in the journal as one entry per line (`lvsmon run --log-format`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\n'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


FORMATS = ("logfmt", "json")


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the event's fields beside ts, level, logger, msg."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        for key, value in fields.items():
            doc.setdefault(key, value if isinstance(value, bool | int | float) else str(value))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str = "warning", fmt: str | None = None) -> None:
    """`fmt` None: $LVSMON_LOG_FORMAT, else logfmt. The choice is put in the environment
    so child processes (the VRRP process) log in the same format."""
    fmt = fmt or os.environ.get("LVSMON_LOG_FORMAT") or "logfmt"
    os.environ["LVSMON_LOG_FORMAT"] = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger("lvsmon")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def fields(**values: object) -> dict[str, Any]:
    """`log.info("msg", extra=fields(key=value))`."""
    return {"fields": values}
