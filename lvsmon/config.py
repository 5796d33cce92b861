"""TOML -> validated `Config`. Every problem in a file is reported at once.

Each error names the file, the key path (`virtual_server[web].real_server[2].weight`),
the bad value and what was expected. Unknown keys are errors (typo protection)
with a "did you mean" when a known key is close. Real servers are numbered
from 1 in the order of their `[[virtual_server.real_server]]` blocks; virtual
servers are named by their `name` (or numbered when the name is missing).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lvsmon import schedulers, webconfig
from lvsmon.dataplane.capabilities import Capabilities, for_dataplane
from lvsmon.health import config as health_config
from lvsmon.health.check import HealthCheck
from lvsmon.model import (
    MAX_WEIGHT,
    Config,
    DaemonSettings,
    Endpoint,
    Forwarding,
    IPAddress,
    IpvsSettings,
    IpvsSysctls,
    Protocol,
    RealServer,
    SyncDaemon,
    SyncState,
    Timeouts,
    VirtualServer,
)
from lvsmon.weights import config as weights_config  # a cycle: looked up at call time
from lvsmon.weights.spec import AdaptiveSpec

if TYPE_CHECKING:
    import tomllib
else:  # tomli is tomllib's upstream (newer TOML fixes first); the stdlib copy is the fallback
    try:
        import tomli as tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomllib

T = TypeVar("T")

DATAPLANES = ("proxy", "ipvs")
LOG_LEVELS = ("debug", "info", "warning", "error")
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


def _show(value: object) -> str:
    """A value as it would appear in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class Hint(str):
    """A converter's suggestion, appended to the error (e.g. 'did you mean "wlc"?')."""


class _Section:
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
        except (TypeError, ValueError) as exc:
            hint = f" ({exc.args[0]})" if exc.args and isinstance(exc.args[0], Hint) else ""
            self.error(key, f"{_show(value)} is not valid: expected {expected}{hint}")
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
            self.error(key, f"{_show(value)} is not valid: expected {expected}")
            return []
        return value

    def table(self, key: str) -> dict[str, Any]:
        self.known.add(key)
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.error(key, f"{_show(value)} is not valid: expected a [{self.key_path(key)}] table")
            return {}
        return value

    def check_unknown(self) -> None:
        for key in self.data:
            if key in self.known:
                continue
            close = difflib.get_close_matches(key, sorted(self.known), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            known = ", ".join(sorted(self.known))
            self.error(key, f"unknown key{hint}; known keys here: {known}")


# --- value converters: raise ValueError/TypeError, the caller words the error ---


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(value)
        return value

    return convert


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _choice(options: Iterable[str]) -> Callable[[Any], str]:
    allowed = tuple(options)

    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(value)
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
            raise ValueError(Hint(f'did you mean "{close[0]}"?') if close else value)
        return value

    return convert


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(value)
        return float(value)
    if not isinstance(value, str):
        raise TypeError(value)
    return parse_duration(value.strip())


def _address(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise TypeError(value)
    return ipaddress.ip_address(value)


def _endpoint(value: Any) -> Endpoint:
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


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(value)
    return value


def _flags(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    return frozenset(value)


PORT = "an integer port 1..65535"
WEIGHT = f"an integer weight 0..{MAX_WEIGHT}"
DURATION = 'a duration such as "100ms", "2s", "5m" or "1h30m"'


# --- sections ---


def _read_daemon(root: _Section) -> DaemonSettings:
    sec = _Section(root.table("daemon"), "daemon", root.problems)
    dataplane = sec.get("dataplane", _choice(DATAPLANES), "proxy", 'one of "proxy", "ipvs"')
    listen = sec.get(
        "metrics_listen",
        _endpoint,
        DaemonSettings().metrics_listen,
        'an address:port such as "127.0.0.1:9108" or "[::1]:9108"',
    )
    pid_file = sec.get("pid_file", _text, "", "a file path")
    grace = sec.get("shutdown_grace", _duration, 10.0, DURATION)
    level = sec.get("log_level", _choice(LOG_LEVELS), "warning", "one of " + ", ".join(LOG_LEVELS))
    web_file = sec.get("web_config_file", _text, "", "a file path (an exporter-toolkit web config)")
    web = _read_web_config(sec, web_file)
    tsec = _Section(sec.table("timeouts"), "daemon.timeouts", root.problems)
    defaults = Timeouts()
    timeouts = Timeouts(
        tcp=tsec.get("tcp", _duration, defaults.tcp, DURATION),
        tcp_fin=tsec.get("tcp_fin", _duration, defaults.tcp_fin, DURATION),
        udp=tsec.get("udp", _duration, defaults.udp, DURATION),
    )
    tsec.check_unknown()
    ipvs = _read_ipvs(_Section(sec.table("ipvs"), "daemon.ipvs", root.problems))
    sec.check_unknown()
    return DaemonSettings(
        dataplane=dataplane,
        metrics_listen=listen,
        pid_file=pid_file,
        shutdown_grace=grace,
        log_level=level,
        timeouts=timeouts,
        ipvs=ipvs,
        web_config_file=web_file,
        web=web,
    )


def _read_web_config(sec: _Section, path: str) -> webconfig.WebConfig | None:
    """daemon.web_config_file: TLS and basic auth for metrics_listen (lvsmon.webconfig)."""
    if not path:
        return None
    try:
        return webconfig.load(path)
    except webconfig.WebConfigError as exc:
        for key, message in exc.problems:
            sec.error(
                "web_config_file", f'"{path}": {key}: {message}' if key else f'"{path}": {message}'
            )
        return None


def _adopt(value: Any) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise TypeError(value)


def _read_ipvs(sec: _Section) -> IpvsSettings:
    """[daemon.ipvs]: read whatever the data plane; only `dataplane = "ipvs"` uses it."""
    defaults = IpvsSettings()
    flush = sec.get("flush_on_stop", _bool, False, "true or false")
    no: bool | frozenset[str] = False
    adopt = sec.get(
        "adopt", _adopt, no, "true, false or an array of virtual server names"
    )  # names are checked against the virtual servers in build()
    state_file = sec.get("state_file", _text, defaults.state_file, "a file path")
    ksec = _Section(sec.table("sysctl"), "daemon.ipvs.sysctl", sec.problems)
    kd = IpvsSysctls()
    sysctl = IpvsSysctls(
        expire_nodest_conn=ksec.get(
            "expire_nodest_conn", _bool, kd.expire_nodest_conn, "true or false"
        ),
        expire_quiescent_template=ksec.get(
            "expire_quiescent_template", _bool, kd.expire_quiescent_template, "true or false"
        ),
        conntrack=ksec.get("conntrack", _bool, kd.conntrack, "true or false"),
        conn_reuse_mode=ksec.get(
            "conn_reuse_mode", _int_in(0, 3), kd.conn_reuse_mode, "an integer 0..3 (a bitmap)"
        ),
    )
    ksec.check_unknown()
    ssec = _Section(sec.table("sync_daemon"), "daemon.ipvs.sync_daemon", sec.problems)
    state = ssec.get("state", SyncState, SyncState.NONE, 'one of "none", "master", "backup"')
    interface = ssec.get("interface", _interface, "", "a network interface name")
    syncid = ssec.get("syncid", _int_in(0, 255), 0, "an integer 0..255")
    follow = ssec.get("follow", _text, "", "the name of a failover_group")
    if follow and "state" in ssec.data:
        ssec.error(
            "state",
            f'"{state}" conflicts with follow = "{follow}": the role of that '
            "failover group decides master or backup; remove one",
        )
    if (follow or state is not SyncState.NONE) and not interface:
        why = f'follow = "{follow}"' if follow else f'state is "{state}"'
        ssec.error("interface", f"missing: the sync daemon needs an interface when {why}")
    ssec.check_unknown()
    sec.check_unknown()
    return IpvsSettings(
        flush_on_stop=flush,
        adopt=adopt is True,
        adopt_names=adopt if isinstance(adopt, frozenset) else frozenset(),
        state_file=state_file,
        sysctl=sysctl,
        sync_daemon=SyncDaemon(state=state, interface=interface, syncid=syncid, follow=follow),
    )


def _interface(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[^\s/:]{0,15}", value):
        raise ValueError(value)
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _read_real_server(
    sec: _Section,
    vs_port: int,
    family: int | None,
    forwarding: Forwarding,
    check: HealthCheck | None = None,
) -> RealServer | None:
    address = sec.require("address", _address, "an IPv4 or IPv6 address")
    # real servers of a fwmark service may be port-less (0: the packet's own port)
    low = 0 if vs_port == 0 else 1
    port = sec.get("port", _int_in(low, 65535), vs_port, f"an integer port {low}..65535")
    weight = sec.get("weight", _int_in(0, MAX_WEIGHT), 1, WEIGHT)
    fwd = sec.get("forwarding", Forwarding, forwarding, 'one of "nat", "dr", "tunnel"')
    upper = sec.get("upper_threshold", _int_in(0, 2**31 - 1), 0, "an integer >= 0 (0 = no limit)")
    lower = sec.get("lower_threshold", _int_in(0, 2**31 - 1), 0, "an integer >= 0")
    check = health_config.health_check_of(sec, base=check, port=port)
    sec.check_unknown()
    if address is None:
        return None
    if family is not None and address.version != family:
        sec.error(
            "address",
            f'"{address}" is IPv{address.version} but the virtual server is '
            f"IPv{family}: IPVS cannot mix address families",
        )
    if upper and lower > upper:
        sec.error("lower_threshold", f"{lower} is above upper_threshold {upper}")
    return RealServer(address, port, weight, fwd, upper, lower, check)


def _read_virtual_server(
    data: dict[str, Any], index: int, problems: list[Problem], caps: Capabilities
) -> VirtualServer | None:
    raw_name = data.get("name")
    label = raw_name if isinstance(raw_name, str) and raw_name else str(index)
    sec = _Section(data, f"virtual_server[{label}]", problems)
    name = sec.require("name", _name, "a name of letters, digits, '_', '.', '-' (1-64 chars)")
    fwmark = sec.get("fwmark", _int_in(0, 2**32 - 1), 0, "an integer firewall mark 1..4294967295")
    if fwmark:
        sec.known.add("address")
        sec.known.add("port")
        address = sec.get("address", _address, None, "an IPv4 or IPv6 address")
        port = 0
    else:
        address = sec.require("address", _address, "an IPv4 or IPv6 address (or set fwmark)")
        port = sec.require("port", _int_in(1, 65535), PORT) or 0
    protocol = sec.get("protocol", Protocol, Protocol.TCP, 'one of "tcp", "udp", "sctp"')
    scheduler = sec.get(
        "scheduler",
        _choice(schedulers.IPVS_SCHEDULERS),
        "wlc",
        "one of " + ", ".join(schedulers.IPVS_SCHEDULERS),
    )
    flags: frozenset[str] = sec.get("scheduler_flags", _flags, frozenset(), "an array of flags")
    timeout = sec.get("persistence_timeout", _duration, 0.0, DURATION + " (0 = off)")
    family = address.version if address is not None else None
    netmask = sec.get(
        "persistence_netmask",
        _netmask(family or 4),
        128 if family == 6 else 32,
        'a netmask such as "255.255.255.0" or a prefix length',
    )
    forwarding = sec.get("forwarding", Forwarding, Forwarding.NAT, 'one of "nat", "dr", "tunnel"')
    on_failure = sec.get(
        "on_failure", _choice(("remove", "quiesce")), "remove", 'one of "remove", "quiesce"'
    )
    slow_start = sec.get("slow_start", _duration, 0.0, DURATION + " (0 = off)")
    check = health_config.health_check_of(sec)
    sorry = sec.get("sorry_server", _endpoint, None, 'an address:port such as "10.0.0.9:80"')
    reals: list[RealServer] = []
    seen: dict[object, int] = {}
    for i, rdata in enumerate(sec.tables("real_server"), start=1):
        rsec = _Section(rdata, f"{sec.path}.real_server[{i}]", problems)
        rs = _read_real_server(rsec, port, family, forwarding, check)
        if rs is None:
            continue
        if rs.key in seen:
            rsec.error("", f"duplicate real server {rs.label} (also real_server[{seen[rs.key]}])")
            continue
        seen[rs.key] = i
        reals.append(rs)
    adaptive = _read_adaptive(sec, reals)
    sec.check_unknown()
    if name is None or (address is None and not fwmark):
        return None
    vs = VirtualServer(
        name=name,
        address=address,
        port=port,
        protocol=protocol,
        fwmark=fwmark,
        scheduler=scheduler,
        scheduler_flags=flags,
        persistence_timeout=timeout,
        persistence_netmask=netmask,
        quiesce=on_failure == "quiesce",
        slow_start=slow_start,
        sorry_server=sorry,
        real_servers=tuple(reals),
        adaptive_weights=adaptive,
    )
    _check_semantics(sec, vs, forwarding, caps)
    return vs


def _read_adaptive(sec: _Section, reals: list[RealServer]) -> AdaptiveSpec | None:
    """[virtual_server.adaptive_weights] (lvsmon.weights.config has the keys)."""
    sec.known.add("adaptive_weights")
    if "adaptive_weights" not in sec.data:
        return None
    path = sec.key_path("adaptive_weights")
    spec = weights_config.read_adaptive(sec.table("adaptive_weights"), path, sec.problems)
    if spec is not None:
        weights_config.check_real_servers(spec, sec.path, [rs.weight for rs in reals], sec.problems)
    return spec


def _netmask(family: int) -> Callable[[Any], int]:
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


def _check_semantics(
    sec: _Section, vs: VirtualServer, forwarding: Forwarding, caps: Capabilities
) -> None:
    """What the types allow but the scheduler or the data plane cannot do."""
    allowed = schedulers.SCHEDULER_FLAGS.get(vs.scheduler, set())
    for flag in sorted(vs.scheduler_flags - allowed):
        what = ", ".join(f'"{f}"' for f in sorted(allowed)) or "none"
        sec.error(
            "scheduler_flags",
            f'"{flag}" is not a flag of scheduler "{vs.scheduler}" (its flags: {what})',
        )
    if vs.sorry_server and vs.address and vs.sorry_server.address.version != vs.address.version:
        sec.error(
            "sorry_server", f'"{vs.sorry_server}" is not in the virtual server\'s address family'
        )
    where = f'data plane "{caps.name}"'
    if vs.scheduler not in caps.schedulers:
        sec.error(
            "scheduler",
            f'"{vs.scheduler}" is not available on {where}: {caps.why}; '
            "available: " + ", ".join(sorted(caps.schedulers)),
        )
    if vs.protocol.value not in caps.protocols:
        sec.error("protocol", f'"{vs.protocol}" is not supported on {where}: {caps.why}')
    if vs.fwmark and not caps.fwmark:
        sec.error(
            "fwmark",
            f"{vs.fwmark}: fwmark virtual servers are not supported on {where}: {caps.why}",
        )
    if forwarding.value not in caps.forwarding:
        sec.error("forwarding", f'"{forwarding}" is not supported on {where}: {caps.why}')
    for i, rs in enumerate(vs.real_servers, start=1):
        if rs.forwarding != forwarding and rs.forwarding.value not in caps.forwarding:
            key = f"real_server[{i}].forwarding"
            sec.error(key, f'"{rs.forwarding}" is not supported on {where}: {caps.why}')


def build(
    doc: dict[str, Any], source: str = "<memory>", caps: Capabilities | None = None
) -> Config:
    """Validate a parsed TOML document. Raises ConfigError listing every problem."""
    problems: list[Problem] = []
    root = _Section(doc, "", problems)
    daemon = _read_daemon(root)
    caps = caps or for_dataplane(daemon.dataplane)
    services: list[VirtualServer] = []
    names: dict[str, int] = {}
    keys: dict[object, str] = {}
    for i, data in enumerate(root.tables("virtual_server"), start=1):
        vs = _read_virtual_server(data, i, problems, caps)
        if vs is None:
            continue
        path = f"virtual_server[{vs.name}]"
        if vs.name in names:
            problems.append(
                Problem(
                    f"{path}.name",
                    f'"{vs.name}" is used by two virtual servers (#{names[vs.name]} and #{i})',
                )
            )
            continue
        # IPVS names a fwmark service by mark and address family, not by protocol
        ident = ("fwmark", vs.family, vs.fwmark) if vs.fwmark else vs.key
        if ident in keys:
            problems.append(
                Problem(
                    path, f"duplicate virtual server {vs.key} (also virtual_server[{keys[ident]}])"
                )
            )
            continue
        names[vs.name] = i
        keys[ident] = vs.name
        services.append(vs)
    for name in sorted(daemon.ipvs.adopt_names - names.keys()):
        problems.append(Problem("daemon.ipvs.adopt", f'"{name}" names no virtual server'))
    from lvsmon.ha.config import read_failover_groups  # imports this module: load late

    groups = read_failover_groups(doc, problems)
    follow = daemon.ipvs.sync_daemon.follow
    if follow and follow not in {g.name for g in groups}:
        known = ", ".join(f'"{g.name}"' for g in groups) or "none is configured"
        problems.append(
            Problem(
                "daemon.ipvs.sync_daemon.follow", f'"{follow}" names no failover_group ({known})'
            )
        )
    root.known.add("failover_group")
    root.check_unknown()
    if problems:
        raise ConfigError(source, problems)
    return Config(
        daemon=daemon, virtual_servers=tuple(services), source=source, failover_groups=groups
    )


def loads(text: str, source: str = "<memory>", caps: Capabilities | None = None) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not valid TOML: {exc}")]) from None
    return build(doc, source, caps)


def load(path: str | Path, caps: Capabilities | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem("", f"not UTF-8 text: {exc}")]) from None
    return loads(text, str(path), caps)
