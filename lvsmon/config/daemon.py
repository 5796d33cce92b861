"""`[daemon]`: data plane, metrics listener and its web config, timeouts, `[daemon.ipvs]`,
`[daemon.nft]` (lvsmon.config.nft)."""

from __future__ import annotations

import pwd
from typing import Any

from lvsmon import configkit as ck
from lvsmon import scriptsec
from lvsmon.config import nft, status_page, web
from lvsmon.config.readout import Readout
from lvsmon.dataplane import registry
from lvsmon.model import (
    DaemonSettings,
    IpvsSettings,
    IpvsSysctls,
    SyncDaemon,
    SyncState,
    Timeouts,
)
from lvsmon.model.web import WebConfig

LOG_LEVELS = ("debug", "info", "warning", "error")


def read(root: ck.Section, readout: Readout) -> DaemonSettings:
    sec = root.child("daemon")
    planes = registry.NAMES
    dataplane = sec.get(
        "dataplane", ck.choice(planes), "proxy", "one of " + ", ".join(f'"{n}"' for n in planes)
    )
    listen = sec.get(
        "metrics_listen",
        ck.endpoint,
        DaemonSettings().metrics_listen,
        'an address:port such as "127.0.0.1:9108" or "[::1]:9108"',
    )
    pid_file = sec.get("pid_file", _path, "", "a file path")
    grace = sec.get("shutdown_grace", ck.duration, 10.0, ck.DURATION)
    level = sec.get(
        "log_level", ck.choice(LOG_LEVELS), "warning", "one of " + ", ".join(LOG_LEVELS)
    )
    web_file = sec.get("web_config_file", _path, "", "a file path (an exporter-toolkit web config)")
    web_config = _read_web_config(sec, web_file)
    user = sec.get("user", _account, "", "the name of a user on this machine")
    script_user = sec.get("script_user", _account, "", "the name of a user on this machine")
    script_security = sec.get("script_security", ck.boolean, True, "true or false")
    if user and dataplane == "ipvs":
        sec.error("user", f'"{user}": the ipvs data plane writes sysctls as root: leave it unset')
    tsec = sec.child("timeouts")
    defaults = Timeouts()
    timeouts = Timeouts(
        tcp=tsec.get("tcp", ck.duration, defaults.tcp, ck.DURATION),
        tcp_fin=tsec.get("tcp_fin", ck.duration, defaults.tcp_fin, ck.DURATION),
        udp=tsec.get("udp", ck.duration, defaults.udp, ck.DURATION),
    )
    tsec.check_unknown()
    ipvs = _read_ipvs(sec.child("ipvs"))
    page = status_page.read(sec, web_config, web_failed=bool(web_file) and web_config is None)
    nft_settings = nft.read(sec.child("nft"))
    sec.check_unknown()
    return DaemonSettings(
        dataplane=dataplane,
        metrics_listen=listen,
        pid_file=pid_file,
        shutdown_grace=grace,
        log_level=level,
        timeouts=timeouts,
        ipvs=ipvs,
        nft=nft_settings,
        web_config_file=web_file,
        web=web_config,
        status_page=page,
        user=user,
        script_user=script_user,
        script_security=script_security,
    )


def _account(value: Any) -> str:
    name = ck.text(value)
    if not name:
        return name  # "": none
    try:
        pwd.getpwnam(name)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        raise ValueError(ck.Hint("no such user")) from None
    return name


def check_script_security(readout: Readout) -> None:
    """daemon.script_security: refuse exec checks and notify hooks others could change."""
    if not readout.get("daemon", DaemonSettings).script_security:
        return
    found = scriptsec.problems(readout.virtual_servers(), readout.failover_groups())
    readout.problems.extend(ck.Problem(key, message) for key, message in found)


def _path(value: Any) -> str:
    path = ck.text(value)
    if "\x00" in path:
        raise ValueError(value)
    return path


def _read_web_config(sec: ck.Section, path: str) -> WebConfig | None:
    """daemon.web_config_file: TLS and basic auth for metrics_listen (lvsmon.config.web)."""
    if not path:
        return None
    try:
        return web.load(path)
    except web.WebConfigError as exc:
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


def _read_ipvs(sec: ck.Section) -> IpvsSettings:
    """[daemon.ipvs]: read whatever the data plane; only `dataplane = "ipvs"` uses it."""
    defaults = IpvsSettings()
    flush = sec.get("flush_on_stop", ck.boolean, False, "true or false")
    no: bool | frozenset[str] = False
    adopt = sec.get(
        "adopt", _adopt, no, "true, false or an array of virtual server names"
    )  # names are checked against the virtual servers (check_adopted_names)
    state_file = sec.get("state_file", _path, defaults.state_file, "a file path")
    ksec = sec.child("sysctl")
    kd = IpvsSysctls()
    sysctl = IpvsSysctls(
        expire_nodest_conn=ksec.get(
            "expire_nodest_conn", ck.boolean, kd.expire_nodest_conn, "true or false"
        ),
        expire_quiescent_template=ksec.get(
            "expire_quiescent_template", ck.boolean, kd.expire_quiescent_template, "true or false"
        ),
        conntrack=ksec.get("conntrack", ck.boolean, kd.conntrack, "true or false"),
        conn_reuse_mode=ksec.get(
            "conn_reuse_mode", ck.int_in(0, 3), kd.conn_reuse_mode, "an integer 0..3 (a bitmap)"
        ),
        sloppy_tcp=ksec.get("sloppy_tcp", ck.boolean, kd.sloppy_tcp, "true or false"),
        sloppy_sctp=ksec.get("sloppy_sctp", ck.boolean, kd.sloppy_sctp, "true or false"),
    )
    ksec.check_unknown()
    ssec = sec.child("sync_daemon")
    state = ssec.get("state", SyncState, SyncState.NONE, 'one of "none", "master", "backup"')
    interface = ssec.get("interface", _interface_or_none, "", "a network interface name")
    syncid = ssec.get("syncid", ck.int_in(0, 255), 0, "an integer 0..255")
    follow = ssec.get("follow", ck.text, "", "the name of a failover_group")
    if follow and "state" in ssec.data:
        ssec.error(
            "state",
            f'"{state}" conflicts with follow = "{follow}": the role of that '
            "failover group decides master or backup; remove one",
        )
    rejected = ssec.data.get("interface", "") != ""  # given but invalid: already reported
    if (follow or state is not SyncState.NONE) and not interface and not rejected:
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


def _interface_or_none(value: Any) -> str:
    """An interface name, or "" (none: an error later when the sync daemon needs one)."""
    return "" if value == "" else ck.interface(value)


def check_adopted_names(readout: Readout) -> None:
    """daemon.ipvs.adopt names virtual servers that exist."""
    daemon = readout.get("daemon", DaemonSettings)
    names = {vs.name for vs in readout.virtual_servers()}
    for name in sorted(daemon.ipvs.adopt_names - names):
        readout.problems.append(
            ck.Problem("daemon.ipvs.adopt", f'"{name}" names no virtual server')
        )


HANDOVER_ELSEWHERE = {
    "ipvs": "the IPVS sync daemon carries connections across ([daemon.ipvs.sync_daemon])",
    "nft": "conntrack state does not move between directors (conntrackd would)",
}


def check_handover_forward(readout: Readout) -> None:
    """failover_group.handover_forward keeps a proxy's sockets reachable: proxy plane only."""
    plane = readout.get("daemon", DaemonSettings).dataplane
    if plane == "proxy":
        return
    for g in readout.failover_groups():
        if g.handover_forward > 0:
            readout.problems.append(
                ck.Problem(
                    f"failover_group[{g.name}].handover_forward",
                    f'"{ck.format_duration(g.handover_forward)}" is for dataplane = "proxy" '
                    f'(with "{plane}", {HANDOVER_ELSEWHERE.get(plane, "it has no effect")}); '
                    "remove it",
                )
            )


def check_sync_follow(readout: Readout) -> None:
    """daemon.ipvs.sync_daemon.follow names a failover group that exists."""
    follow = readout.get("daemon", DaemonSettings).ipvs.sync_daemon.follow
    groups = [g.name for g in readout.failover_groups()]
    if follow and follow not in groups:
        known = ", ".join(f'"{g}"' for g in groups) or "none is configured"
        readout.problems.append(
            ck.Problem(
                "daemon.ipvs.sync_daemon.follow", f'"{follow}" names no failover_group ({known})'
            )
        )
