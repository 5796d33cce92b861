"""Health checking of real servers (the nanny): checks, rise/fall, verdicts, metrics.

Modules: `check` (the frozen check definitions), `config` (TOML -> check),
`state` (the pure rise/fall state machine), `slowstart` (the pure weight ramp),
`probes/` (one module per check type, and the coroutine checkers' socket
poller), `probe` (targets, probes and their counters), `ticker` (the FIFO
timelines of starts and deadlines), `engine` (runs the probes: one epoll set,
one loop timer, the in-flight limit), `monitor` (dedupe, reload, verdicts as
desired-table overrides), `targets` (config -> monitor targets), `metrics`
(the scrape-time collector), `dnswire`. See README.md beside this file.

Nothing is imported here on purpose: `lvsmon.model` imports `lvsmon.health.check`,
and an eager import of the monitor would make that a cycle.
"""
