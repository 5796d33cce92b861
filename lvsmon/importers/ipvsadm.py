"""`ipvsadm -S -n` (ipvsadm-save) rules -> lvsmon; also hand-written `ipvsadm ...` scripts.

    -A -t 192.0.2.10:80 -s wlc -p 300 -M 255.255.255.0
    -a -t 192.0.2.10:80 -r 10.0.0.2:8080 -m -w 3 -x 1000 -y 800

The kernel keeps real servers newest first and `ipvsadm -S` lists them so;
they are written here in the order they were added (the listing reversed),
so lvsmon, adding them in config order, rebuilds the same list and
`ipvsadm -S -n` reads the same before and after. (A hand-written script is read
the same way: as a listing. Only tie-breaks of some schedulers see the order.)
"""

from __future__ import annotations

import shlex

from lvsmon.importers.draft import (
    Draft,
    RealServerDraft,
    SyncDaemonDraft,
    VirtualServerDraft,
    service_name,
)
from lvsmon.importers.report import Origin, Report
from lvsmon.importers.source import Source
from lvsmon.importers.values import Reader, number, read_main
from lvsmon.schedulers import IPVS_SCHEDULERS

SERVICE_KINDS = {
    "-t": "tcp",
    "--tcp-service": "tcp",
    "-u": "udp",
    "--udp-service": "udp",
    "--sctp-service": "sctp",
    "-f": "fwmark",
    "--fwmark-service": "fwmark",
}
COMMANDS = {
    "-A": "add-service",
    "--add-service": "add-service",
    "-E": "edit-service",
    "--edit-service": "edit-service",
    "-D": "delete-service",
    "--delete-service": "delete-service",
    "-a": "add-server",
    "--add-server": "add-server",
    "-e": "edit-server",
    "--edit-server": "edit-server",
    "-d": "delete-server",
    "--delete-server": "delete-server",
    "-C": "clear",
    "--clear": "clear",
    "--set": "set",
    "--start-daemon": "start-daemon",
}
FORWARD = {
    "-g": "dr",
    "--gatewaying": "dr",
    "-m": "nat",
    "--masquerading": "nat",
    "-i": "tunnel",
    "--ipip": "tunnel",
}
WITH_VALUE = {
    "-s",
    "--scheduler",
    "-M",
    "--netmask",
    "-b",
    "--sched-flags",
    "-r",
    "--real-server",
    "-w",
    "--weight",
    "-x",
    "--u-threshold",
    "-y",
    "--l-threshold",
    "--pe",
    "--tun-type",
    "--tun-port",
    "--tun-nocsum",
    "--mcast-interface",
    "--syncid",
}
THRESHOLDS = {
    "-x": "upper_threshold",
    "--u-threshold": "upper_threshold",
    "-y": "lower_threshold",
    "--l-threshold": "lower_threshold",
}
FLAG_NAMES = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}


class Translator:
    def __init__(self, path: str, report: Report):
        self.path, self.report = path, report
        self.read = Reader(report)
        self.draft = Draft("ipvsadm", path)
        self.services: dict[tuple[str, str, int, int], VirtualServerDraft] = {}

    def run(self, text: str) -> Draft:
        for n, raw in enumerate(text.splitlines(), start=1):
            if self.report.overlong(Origin(self.path, n), raw):
                continue
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if words and words[0].endswith("ipvsadm"):
                words = words[1:]
            if words:
                self._command(words, Origin(self.path, n))
        for vs in self.services.values():
            vs.real_servers.reverse()  # listed newest first: added oldest first
            self.draft.virtual_servers.append(vs)
        return self.draft

    def _command(self, words: list[str], origin: Origin) -> None:
        command = COMMANDS.get(words[0])
        if command is None:
            self.report.error(origin, words[0], "not an ipvsadm command this import reads")
            return
        opts, service = self._options(words[1:], origin)
        if opts is None:
            return
        if command == "clear":
            self.report.note(origin, words[0], "lvsmon manages only its own virtual servers")
            return
        if command == "set":
            self._timeouts(words[1:], origin)
            return
        if command == "start-daemon":
            self._sync(words[1:], opts, origin)
            return
        if service is None:
            self.report.error(
                origin, words[0], "names no virtual service (-t, -u, --sctp-service, -f)"
            )
            return
        if command in ("add-service", "edit-service"):
            self._service(service, opts, origin, words[0])
        elif command == "delete-service":
            self.services.pop(service, None)
        else:
            vs = self.services.get(service)
            if vs is None:
                self.report.error(origin, words[0], "its virtual service was not added before")
                return
            self._server(vs, command, opts, origin, words[0])

    def _options(
        self, words: list[str], origin: Origin
    ) -> tuple[dict[str, str] | None, tuple[str, str, int, int] | None]:
        opts: dict[str, str] = {}
        service: tuple[str, str, int, int] | None = None
        i = 0
        while i < len(words):
            w = words[i]
            if w in SERVICE_KINDS and i + 1 < len(words):
                service = self._service_key(SERVICE_KINDS[w], words[i + 1], origin)
                if service is None:
                    return None, None
                i += 2
                continue
            if w in ("-p", "--persistent"):
                given = i + 1 < len(words) and isinstance(number(words[i + 1]), int)
                opts["-p"] = words[i + 1] if given else "300"
                i += 2 if given else 1
                continue
            if w in WITH_VALUE and i + 1 < len(words):
                opts[w] = words[i + 1]
                i += 2
                continue
            if w == "-6" and service is not None and service[0] == "fwmark":
                service = ("fwmark", "v6", 0, service[3])
            opts[w] = ""
            i += 1
        return opts, service

    def _service_key(
        self, kind: str, text: str, origin: Origin
    ) -> tuple[str, str, int, int] | None:
        if kind == "fwmark":
            mark = self.read.integer(origin, "-f", text, 1, 2**32 - 1)
            return None if mark is None else ("fwmark", "", 0, mark)
        host, port = _split_endpoint(text)
        address = self.read.address(origin, f"-{kind[0]}", host)
        if address is None:
            return None
        number = self.read.integer(origin, f"-{kind[0]}", port, 0, 65535) if port else 0
        if not number:
            self.report.error(
                origin,
                f"-{kind[0]} {text}",
                "a port-less service: lvsmon needs a port (or a fwmark)",
            )
            return None
        return (kind, address, number, 0)

    def _service(
        self, key: tuple[str, str, int, int], opts: dict[str, str], origin: Origin, cmd: str
    ) -> None:
        kind, address, port, mark = key
        if mark:
            name = f"fwmark-{mark}" + ("-v6" if address == "v6" else "")
            vs = VirtualServerDraft(name=name, origin=origin, fwmark=mark, protocol="tcp")
        else:
            vs = VirtualServerDraft(
                name=service_name(kind, address, port),
                origin=origin,
                address=address,
                port=port,
                protocol=kind,
            )
        vs.name = self.draft.unique_name(vs.name)
        old = self.services.get(key)
        if old is not None:
            vs.real_servers = old.real_servers
        scheduler = opts.get("-s", opts.get("--scheduler", "wlc"))
        if scheduler not in IPVS_SCHEDULERS:
            self.report.error(origin, "-s", f'"{scheduler}" is not an IPVS scheduler lvsmon knows')
            return
        vs.scheduler = scheduler
        if "-p" in opts:
            vs.persistence_timeout = self.read.timer(origin, "-p", opts["-p"]) or 0.0
        mask = opts.get("-M", opts.get("--netmask"))
        if mask:
            vs.persistence_netmask = number(mask)
        flags = opts.get("-b", opts.get("--sched-flags", ""))
        for flag in filter(None, flags.split(",")):
            names = FLAG_NAMES.get(scheduler, ())
            if flag in ("flag-1", "flag-2") and names:
                flag = names[int(flag[-1]) - 1]
            if flag not in names:
                self.report.warning(origin, "-b", f"{flag}: not a flag of {scheduler}: dropped")
            else:
                vs.scheduler_flags.append(flag)
        if "-o" in opts or "--ops" in opts:
            self.report.warning(origin, "-o", "not translated: lvsmon has no one-packet scheduling")
        if "--pe" in opts:
            self.report.error(origin, "--pe", f"{opts['--pe']}: lvsmon has no persistence engines")
        self.services[key] = vs

    def _server(
        self, vs: VirtualServerDraft, command: str, opts: dict[str, str], origin: Origin, cmd: str
    ) -> None:
        target = opts.get("-r", opts.get("--real-server"))
        if not target:
            self.report.error(origin, cmd, "names no real server (-r)")
            return
        host, port_text = _split_endpoint(target)
        address = self.read.address(origin, "-r", host)
        if address is None:
            return
        port = self.read.integer(origin, "-r", port_text, 0, 65535) if port_text else vs.port
        if port is None:
            return
        existing = [rs for rs in vs.real_servers if (rs.address, rs.port) == (address, port)]
        if command == "delete-server":
            vs.real_servers = [rs for rs in vs.real_servers if rs not in existing]
            return
        rs = (
            existing[0]
            if existing
            else RealServerDraft(address=address, port=port, origin=origin, forwarding="dr")
        )
        for flag, fwd in FORWARD.items():
            if flag in opts:
                rs.forwarding = fwd
        for flag in ("-w", "--weight"):
            if flag in opts:
                rs.weight = self.read.integer(origin, flag, opts[flag], 0, 65535) or 0
        for flag, attr in THRESHOLDS.items():
            if flag in opts:
                setattr(rs, attr, self.read.integer(origin, flag, opts[flag], 0, 2**31 - 1) or 0)
        if opts.get("--tun-type", "ipip") != "ipip":
            self.report.error(
                origin, "--tun-type", f"{opts['--tun-type']}: lvsmon tunnels with IP-in-IP only"
            )
        if not existing:
            vs.real_servers.append(rs)  # listing order: the kernel's, newest first
        if len({r.forwarding for r in vs.real_servers}) == 1:
            vs.forwarding = rs.forwarding

    def _timeouts(self, words: list[str], origin: Origin) -> None:
        values = [w for w in words if not w.startswith("-")][:3]
        for name, value in zip(("tcp", "tcp_fin", "udp"), values, strict=False):
            seconds = self.read.timer(origin, "--set", value)
            if seconds:  # 0 leaves the kernel's value unchanged
                self.draft.timeouts[name] = seconds

    def _sync(self, words: list[str], opts: dict[str, str], origin: Origin) -> None:
        state = next((w for w in words if w in ("master", "backup")), "")
        interface = opts.get("--mcast-interface", "")
        syncid = self.read.integer(origin, "--syncid", opts.get("--syncid", "0"), 0, 255) or 0
        if not state or not interface:
            self.report.error(origin, "--start-daemon", "needs master|backup and --mcast-interface")
            return
        self.draft.sync_daemon = SyncDaemonDraft(interface, syncid, state=state)


def _split_endpoint(text: str) -> tuple[str, str]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":")
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, ""


def translate(path: str, source: Source) -> tuple[Draft, Report]:
    report = Report()
    text = read_main(path, source, report)
    if text is None:
        return Draft("ipvsadm", path), report
    draft = Translator(path, report).run(text)
    for vs in draft.virtual_servers:
        fwds = {rs.forwarding for rs in vs.real_servers}
        vs.forwarding = fwds.pop() if len(fwds) == 1 else "dr"  # ipvsadm's default: -g
        if vs.fwmark and vs.address == "v6":
            vs.address = "::"  # an IPv6 fwmark service: lvsmon takes the family from the address
    return draft, report
