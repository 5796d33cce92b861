"""Health checking of real servers (the nanny): checks, rise/fall, verdicts, metrics.

Modules: `state` (the pure rise/fall state machine), `slowstart` (the pure weight
ramp), `probes/` (one module per check type, and the coroutine checkers' socket
poller), `probe` (targets, probes and their counters), `ticker` (the FIFO
timelines of starts and deadlines), `engine` (runs the probes: one epoll set,
one loop timer, the in-flight limit), `monitor` (dedupe, reload, verdicts),
`targets` (config -> monitor targets), `metrics` (the scrape-time collector),
`dnswire`. The check definitions are values in `lvsmon.model.health`, read from
TOML by `lvsmon.config.health`. See README.md beside this file.
"""
