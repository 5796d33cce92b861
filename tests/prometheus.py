"""The Debian `prometheus` server for the tests: its config and command line (which the
netns tier runs inside a namespace), the process itself on a free loopback port, and the
HTTP API queries the tests share."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dashboards import render
from tests.integration.harness import wait_for
from tests.ports import free_port

Job = dict[str, Any]  # one entry of scrape_configs


def job(name: str, targets: Sequence[str], **settings: Any) -> Job:
    """A scrape job of static `targets`; `settings` are more of its keys (scheme, ...)."""
    return {"job_name": name, **settings, "static_configs": [{"targets": list(targets)}]}


def command(
    tmp: Path,
    listen: str,
    jobs: Sequence[Job],
    *,
    interval: float = 1.0,
    rule_files: Sequence[Path] = (),
    scrape_timeout: str | None = None,
) -> list[str]:
    """Write tmp/prometheus.yml (scrape and evaluate every `interval` seconds); the argv
    of a prometheus on `listen` (host:port) with its TSDB in tmp/tsdb."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus not installed: run scripts/install-test-deps"
    settings = {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s"}
    if scrape_timeout is not None:
        settings["scrape_timeout"] = scrape_timeout
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "global": settings,
                "rule_files": [str(r) for r in rule_files],
                "scrape_configs": jobs,
            },
            indent=1,
        )
        + "\n"
    )
    return [
        exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={listen}",
        "--log.level=warn",
    ]


class API:
    """Queries over a Prometheus HTTP API; subclasses say how to reach it (`api`)."""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        raise NotImplementedError

    def query(self, expr: str) -> dict[str, Any]:
        """The whole /api/v1/query answer (status, error or data)."""
        return self.api("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list[dict[str, Any]]:
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def wait(self, expr: str, timeout: float, what: str) -> list[dict[str, Any]]:
        """The vector of `expr` once it is not empty."""
        result: list[dict[str, Any]] = wait_for(lambda: self.vector(expr), timeout, what)
        return result

    def alerts(self, name: str, state: str) -> list[dict[str, Any]]:
        body = self.api("/api/v1/alerts")
        return [
            a
            for a in body["data"]["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        ]


class Prometheus(API):
    """`prometheus` on 127.0.0.1 (`port`, or a free one), scraping `jobs`; its stderr in
    tmp/prometheus.log. Stop it with `stop()`, or use it as a context manager."""

    def __init__(
        self,
        tmp: Path,
        jobs: Sequence[Job],
        *,
        port: int | None = None,
        interval: float = 1.0,
        rule_files: Sequence[Path] = (),
        scrape_timeout: str | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = command(
            tmp,
            f"127.0.0.1:{self.port}",
            jobs,
            interval=interval,
            rule_files=rule_files,
            scrape_timeout=scrape_timeout,
        )
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        return render.api(self.url, path, params)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
