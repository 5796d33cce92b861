"""`[daemon.status_page]`: the live page at / and /status.json (lvsmon.statuspage)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lvsmon import configkit as ck
from lvsmon.model import StatusPageSettings
from lvsmon.model.web import WebConfig

MAX_SAMPLES = 720  # per real server: 4,000 servers x 720 samples stay a few tens of MiB


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        seconds = ck.duration(value)
        if not low <= seconds <= high:
            raise ValueError(value)
        return seconds

    return convert


def read(daemon: ck.Section, web: WebConfig | None, web_failed: bool) -> StatusPageSettings:
    """`web`: daemon.web_config_file as read (`web_failed`: it had errors, already said)."""
    sec = daemon.child("status_page")
    d = StatusPageSettings()
    refresh = sec.get("refresh", _seconds(0.2, 3600), d.refresh, ck.DURATION + " from 200ms to 1h")
    sample = sec.get(
        "sample_interval", _seconds(1, 3600), d.sample_interval, ck.DURATION + " from 1s to 1h"
    )
    history = sec.get("history", _seconds(0, 86400), d.history, ck.DURATION + " up to 24h")
    admin = sec.get("admin", ck.boolean, False, "true or false")
    sec.check_unknown()
    settings = StatusPageSettings(refresh, sample, history, admin)
    if history < sample:
        sec.error(
            "history",
            f'"{ck.format_duration(history)}" is shorter than sample_interval '
            f'"{ck.format_duration(sample)}": no rate could be shown',
        )
    elif settings.samples > MAX_SAMPLES:
        sec.error(
            "history",
            f'"{ck.format_duration(history)}" keeps {settings.samples} samples at '
            f'sample_interval "{ck.format_duration(sample)}": at most {MAX_SAMPLES} '
            "(raise sample_interval or shorten history)",
        )
    missing = admin_prerequisites(web)
    if admin and missing and not web_failed:
        sec.error("admin", f"true needs {missing} in daemon.web_config_file")
    return settings


def admin_prerequisites(web: WebConfig | None) -> str:
    """What the web config lacks for admin actions ("" = nothing): they change the table,
    so only an authenticated user over TLS may ask."""
    lacks = []
    if web is None or web.tls is None:
        lacks.append("tls_server_config (admin actions only over TLS)")
    if web is None or not web.users:
        lacks.append("basic_auth_users (admin actions only by an authenticated user)")
    return " and ".join(lacks)
