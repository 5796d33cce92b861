"""keepalived's checkers (TCP_CHECK, HTTP_GET, SSL_GET, SMTP_CHECK, DNS_CHECK, UDP_CHECK,
MISC_CHECK) as lvsmon health checks.

Timing, as keepalived's checkers behave: `delay_loop` is the interval,
`connect_timeout` the timeout, a server goes down after `retry` + 1 failed
checks (fall) and comes back after one success (rise = 1). The settings
cascade from the virtual server to its real servers to the checker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lvsmon.health.dnswire import TYPES as DNS_TYPES
from lvsmon.health.dnswire import encode_name
from lvsmon.importers.draft import Check, seconds
from lvsmon.importers.kaparse import Node
from lvsmon.importers.report import Report
from lvsmon.importers.source import Source
from lvsmon.importers.values import Reader, hex_payload, number, split_command

NO_EFFECT = "no effect in lvsmon"


@dataclass
class Settings:
    """What cascades from a virtual server to its real servers and checkers."""

    delay_loop: float = 60.0
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    virtualhost: str = ""
    alpha: bool = False
    inhibit: bool | None = None
    warmup: float | None = None


class Checkers:
    def __init__(self, report: Report, read: Reader, source: Source, ssl: dict[str, str]):
        self.report, self.read, self.source, self.ssl = report, read, source, ssl

    def cascading(self, c: Node, s: Settings) -> bool:
        """Settings that a virtual server, real server or checker may carry."""
        k, first, o = c.keyword, c.args[0] if c.args else None, c.origin
        if k == "delay_loop":
            s.delay_loop = self.read.timer(o, k, first) or s.delay_loop
        elif k == "connect_timeout":
            s.connect_timeout = self.read.timer(o, k, first)
        elif k in ("retry", "nb_get_retry"):
            s.retry = self.read.integer(o, k, first, 0, 999)
        elif k == "delay_before_retry":
            s.delay_before_retry = self.read.timer(o, k, first)
        elif k == "virtualhost":
            s.virtualhost = first or ""
        elif k == "alpha":
            s.alpha = self.read.boolean(o, k, c.args)
        elif k == "inhibit_on_failure":
            s.inhibit = self.read.boolean(o, k, c.args)
        elif k == "warmup":
            s.warmup = self.read.timer(o, k, first)
            self.report.note(
                o, k, "lvsmon always starts checks at a random point of the first interval"
            )
        elif k in ("log_all_failures", "smtp_alert", "snmp_name"):
            self.report.note(o, k, NO_EFFECT)
        else:
            return False
        return True

    def checks(self, rs: Node, checkers: list[Node], s: Settings, address: str) -> Check | None:
        chosen: Check | None = None
        for c in checkers:
            check = self._check(c, replace(s), address)
            if check is None:
                continue
            if chosen is None:
                chosen = check
            else:
                self.report.warning(
                    c.origin,
                    c.keyword,
                    "not translated: lvsmon runs one check per real server (the first one here)",
                )
        return chosen

    def _check(self, c: Node, s: Settings, address: str) -> Check | None:
        kind = c.keyword
        if kind in ("PING_CHECK", "FILE_CHECK", "BFD_CHECK"):
            self.report.warning(
                c.origin,
                kind,
                "not translated: lvsmon has no such check; the real server is not checked by it",
            )
            return None
        keys: dict[str, object] = {}
        extra: dict[str, object] = {}
        urls: list[Node] = []
        hosts: list[Node] = []
        misc: dict[str, object] = {}
        for o in c.children or []:
            k, first = o.keyword, o.args[0] if o.args else None
            if self.cascading(o, s):
                continue
            if k == "connect_ip":
                if (a := self.read.address(o.origin, k, first)) is not None:
                    keys["connect_address"] = a
            elif k == "connect_port":
                if (p := self.read.integer(o.origin, k, first, 1, 65535)) is not None:
                    keys["connect_port"] = p
            elif k in ("bindto", "bind_port", "bind_if", "fwmark", "source_ip"):
                self.report.warning(
                    o.origin, k, "not translated: lvsmon's checks use the default source"
                )
            elif k == "url":
                urls.append(o)
            elif k == "host":
                hosts.append(o)
            elif k in ("misc_path", "misc_timeout", "misc_dynamic", "user"):
                misc[k] = o
            elif k in (
                "type",
                "name",
                "payload",
                "require_reply",
                "helo_name",
                "enable_sni",
                "http_protocol",
                "fast_recovery",
                "min_reply_length",
                "max_reply_length",
            ):
                extra[k] = o
            else:
                self.report.warning(o.origin, k, f"unknown {kind} directive: not translated")
        if hosts:  # old SMTP_CHECK syntax: host { connect_ip ... }
            for o in hosts[0].children or []:
                if o.keyword == "connect_ip" and o.args:
                    keys["connect_address"] = o.args[0]
                elif o.keyword == "connect_port" and o.args:
                    keys["connect_port"] = number(o.args[0])
            if len(hosts) > 1:
                self.report.warning(
                    hosts[1].origin, "host", "lvsmon checks one host per real server: the first"
                )
        spec = self._spec(c, kind, s, urls, extra, misc)
        if spec is None:
            return None
        retry_default = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
        retry = retry_default if s.retry is None else s.retry
        interval = s.delay_loop
        timeout = s.connect_timeout if s.connect_timeout is not None else 5.0
        if kind == "MISC_CHECK":
            mt = misc.get("misc_timeout")
            given = number(mt.args[0]) if isinstance(mt, Node) and mt.args else None
            timeout = float(given) if isinstance(given, int) else interval
        if timeout >= interval:
            new = round(interval / 2, 3)
            if kind != "MISC_CHECK" or "misc_timeout" in misc:
                self.report.warning(
                    c.origin,
                    kind,
                    f"timeout {timeout:g}s is not shorter than delay_loop {interval:g}s: "
                    f"written as {new:g}s",
                )
            timeout = new
        if retry and s.delay_before_retry is not None and s.delay_before_retry != interval:
            self.report.warning(
                c.origin,
                kind,
                f"retries {s.delay_before_retry:g}s apart (delay_before_retry) become checks "
                f"every {interval:g}s (delay_loop): a failing server goes out after {retry + 1} "
                "failed checks",
            )
        out: dict[str, object] = dict(spec)
        out.update(
            {
                "interval": seconds(interval),
                "timeout": seconds(timeout),
                "rise": 1,
                "fall": retry + 1,
            }
        )
        out.update(keys)
        enabled = out.pop("enabled", True)
        if enabled is False:
            out = {
                "type": out["type"],
                "enabled": False,
                **{k: v for k, v in out.items() if k != "type"},
            }
        return Check(out, c.origin)  # type: ignore[arg-type]

    def _spec(
        self,
        c: Node,
        kind: str,
        s: Settings,
        urls: list[Node],
        extra: dict[str, object],
        misc: dict[str, object],
    ) -> dict[str, object] | None:
        def arg(name: str) -> str | None:
            node = extra.get(name)
            return node.args[0] if isinstance(node, Node) and node.args else None

        if kind == "TCP_CHECK":
            return {"type": "tcp"}
        if kind in ("HTTP_GET", "SSL_GET"):
            return self._http(c, kind, s, urls, extra)
        if kind == "SMTP_CHECK":
            helo = arg("helo_name")
            self.report.warning(
                c.origin,
                kind,
                "checked as a send_expect banner check (expects 220)"
                + (f"; HELO {helo} is not sent" if helo else "; no HELO is sent"),
            )
            return {"type": "send_expect", "protocol": "tcp", "expect": "^220"}
        if kind == "DNS_CHECK":
            return self._dns(c, arg("name") or ".", (arg("type") or "SOA").upper())
        if kind == "UDP_CHECK":
            return self._udp(c, extra)
        if kind == "MISC_CHECK":
            return self._misc(c, misc)
        self.report.warning(c.origin, kind, "unknown checker: not translated")
        return None

    def _http(
        self, c: Node, kind: str, s: Settings, urls: list[Node], extra: dict[str, object]
    ) -> dict[str, object]:
        spec: dict[str, object] = {"type": "https" if kind == "SSL_GET" else "http"}
        url = urls[0] if urls else None
        path, status, regex, host = "/", "", "", s.virtualhost
        for u in (url.children or []) if url else []:
            first = u.args[0] if u.args else ""
            if u.keyword == "path":
                path = first if first.startswith("/") else "/" + first
            elif u.keyword == "status_code":
                status = " ".join(u.args)
            elif u.keyword == "digest":
                self.report.warning(
                    u.origin,
                    "digest",
                    "not translated: lvsmon does not hash the body; the status is checked",
                )
            elif u.keyword == "virtualhost":
                host = first
            elif u.keyword == "regex":
                regex = first
            elif u.keyword == "regex_no_match":
                self.report.warning(
                    u.origin,
                    u.keyword,
                    "not translated: lvsmon's expect_body must match; the regex is dropped",
                )
                regex = "\x00dropped"
            else:
                self.report.warning(u.origin, u.keyword, "not translated")
        if len(urls) > 1:
            self.report.warning(
                urls[1].origin, "url", f"lvsmon checks one path per real server: {path}"
            )
        spec["path"] = path
        if host:
            spec["host"] = host
        if status:
            codes = [
                p if "-" in p else int(p)
                for p in status.split()
                if isinstance(number(p.replace("-", "")), int)
            ]
            spec["expect_status"] = codes
        if regex and regex != "\x00dropped":
            try:
                re.compile(regex.encode())
                spec["expect_body"] = regex
            except re.error as exc:
                self.report.warning(
                    c.origin, "regex", f"{regex!r}: not a Python regex ({exc}): dropped"
                )
        if kind == "SSL_GET":
            spec["tls_verify"] = False
            if host and "enable_sni" not in extra:
                self.report.note(
                    c.origin, kind, f"lvsmon sends SNI {host} (keepalived: only with enable_sni)"
                )
            for ka, lv in (("certificate", "client_cert"), ("key", "client_key")):
                file = self.ssl.get(ka)
                if file and self.source.readable(file):
                    spec[lv] = file
                elif file:
                    self.report.warning(
                        c.origin, f"SSL {ka}", f'"{file}" is not readable here: not used'
                    )
        for name in ("http_protocol", "fast_recovery"):
            if name in extra:
                node = extra[name]
                assert isinstance(node, Node)
                self.report.note(node.origin, name, NO_EFFECT)
        return spec

    def _dns(self, c: Node, name: str, qtype: str) -> dict[str, object] | None:
        try:
            encode_name(name)
        except ValueError:
            self.report.error(c.origin, "name", f'"{name}" is not a domain name')
            return None
        if qtype not in DNS_TYPES:
            self.report.error(c.origin, "type", f'"{qtype}" is not a query type lvsmon sends')
            return None
        return {"type": "dns", "query_name": name, "query_type": qtype}

    def _udp(self, c: Node, extra: dict[str, object]) -> dict[str, object]:
        spec: dict[str, object] = {"type": "send_expect", "protocol": "udp"}
        payload = extra.get("payload")
        if isinstance(payload, Node) and payload.args:
            spec["send_hex"] = hex_payload(" ".join(payload.args))
        reply = extra.get("require_reply")
        if isinstance(reply, Node) and reply.args and "x" not in " ".join(reply.args).lower():
            spec["expect_hex"] = hex_payload(" ".join(reply.args))
        else:
            spec["expect"] = "*"
            if not isinstance(reply, Node):
                self.report.warning(
                    c.origin,
                    "UDP_CHECK",
                    "without require_reply keepalived only notices ICMP errors; "
                    "lvsmon needs an answer (any)",
                )
            elif reply.args:
                self.report.warning(
                    reply.origin, "require_reply", "wildcard nibbles: any answer is accepted"
                )
        for name in ("min_reply_length", "max_reply_length"):
            node = extra.get(name)
            if isinstance(node, Node):
                self.report.warning(node.origin, name, "not translated")
        return spec

    def _misc(self, c: Node, misc: dict[str, object]) -> dict[str, object] | None:
        path = misc.get("misc_path")
        if not isinstance(path, Node) or not path.args:
            self.report.error(c.origin, "MISC_CHECK", "has no misc_path")
            return None
        argv = split_command(" ".join(path.args))
        spec: dict[str, object] = {"type": "exec", "program": argv[0]}
        if len(argv) > 1:
            spec["args"] = argv[1:]
        if "misc_dynamic" in misc:
            spec["dynamic_weight"] = True
        user = misc.get("user")
        if isinstance(user, Node):
            self.report.warning(
                user.origin, "user", f"{' '.join(user.args)}: lvsmon runs the program as itself"
            )
        if self.source.executable(argv[0]):
            self.report.warning(
                path.origin,
                "misc_path",
                f"review {argv[0]}: lvsmon runs {argv} without a shell; exit 0 = up, 1 = down"
                + (", 2..255 = weight exit-2" if "misc_dynamic" in misc else ""),
            )
        else:
            spec["enabled"] = False
            self.report.warning(
                path.origin,
                "misc_path",
                f"{argv[0]} is not an executable file on this machine: the check is written "
                "with enabled = false (the real server is not checked); install the script, "
                "then remove that line",
            )
        return spec
