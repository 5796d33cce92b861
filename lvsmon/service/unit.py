"""The systemd unit, with the capabilities the chosen data plane needs and no more.

`Type=notify`: lvsmon says READY=1 once the table is programmed, RELOADING=1 /
READY=1 around a SIGHUP reload, STOPPING=1, and WATCHDOG=1 from its main loop
(lvsmon/sdnotify.py), so `WatchdogSec` restarts a daemon whose loop hangs.

Capabilities (lvsmon runs as root inside a bounding set):
  ipvs      CAP_NET_ADMIN     IPVS netlink, net.ipv4.vs.* sysctls, the sync daemon
  proxy     CAP_NET_BIND_SERVICE  virtual servers on ports below 1024
  failover  CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE   move addresses; VRRP and ARP
            raw sockets; the VRRP process's real-time priority
The ipvs plane writes /proc/sys/net/ipv4/vs, so it cannot have ProtectKernelTunables.
"""

from __future__ import annotations

from dataclasses import dataclass

UNIT_PATH = "/etc/systemd/system/lvsmon.service"
DEFAULT_CONFIG = "/etc/lvsmon/lvsmon.toml"
DEFAULT_BINARY = "/usr/local/bin/lvsmon"


@dataclass(frozen=True, slots=True)
class UnitSpec:
    dataplane: str = "ipvs"
    failover: bool = True
    binary: str = DEFAULT_BINARY
    config: str = DEFAULT_CONFIG
    log_format: str = "logfmt"
    watchdog: str = "30s"

    def capabilities(self) -> list[str]:
        caps = {"CAP_NET_ADMIN"} if self.dataplane == "ipvs" else {"CAP_NET_BIND_SERVICE"}
        if self.failover:
            caps |= {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_NICE"}
        return sorted(caps)


def render(spec: UnitSpec) -> str:
    caps = " ".join(spec.capabilities())
    kernel = (
        "# the ipvs data plane writes net.ipv4.vs.* sysctls: no ProtectKernelTunables\n"
        if spec.dataplane == "ipvs"
        else "ProtectKernelTunables=yes\nProtectKernelModules=yes\n"
    )
    what = f"dataplane {spec.dataplane}{', failover' if spec.failover else ''}"
    return f"""\
# lvsmon as a systemd service ({what}): written by `lvsmon install-unit`.
# `systemctl reload lvsmon` re-reads the config (SIGHUP); `lvsmon check` runs first.
[Unit]
Description=lvsmon LVS director (load balancing, health checks, failover, metrics)
Documentation=man:lvsmon(8)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStartPre={spec.binary} check -c {spec.config}
ExecStart={spec.binary} run -c {spec.config} --log-format {spec.log_format}
ExecReload={spec.binary} check -c {spec.config}
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec={spec.watchdog}
Restart=on-failure
RestartSec=2s
# SIGTERM to lvsmon only: it drains and hands VRRP over before its children stop
KillMode=mixed
TimeoutStopSec=90s
# /run/lvsmon: the IPVS ownership file lives as long as the kernel table (until reboot)
RuntimeDirectory=lvsmon
RuntimeDirectoryPreserve=yes
LimitNOFILE=65536

# Hardening: root, but only with the capabilities this data plane needs
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/run
ProtectHome=yes
PrivateTmp=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
{kernel}RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET

[Install]
WantedBy=multi-user.target
"""
