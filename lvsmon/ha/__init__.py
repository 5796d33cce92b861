"""Active/backup director failover ("the pulse"): VRRP version 3 (RFC 5798).

Pure core: `codec` (adverts on the wire) and `machine` (the state machine). I/O: `netio`
(raw sockets), `links` (rtnetlink addresses), `announce` (ARP/NA), `hooks`; `group` and
`engine` run them in the VRRP process (`child`), which the daemon drives through
`process.HAProcess`. lvsmon.config.failover reads `[[failover_group]]` (values in
lvsmon.model.failover), `metrics` exports lvsmon_ha_*; `python -m lvsmon.ha` runs
failover on its own.
"""
