"""Health checking of real servers (the nanny): checks, rise/fall, verdicts, metrics.

Modules: `check` (the frozen check definitions), `config` (TOML -> check),
`state` (the pure rise/fall state machine), `slowstart` (the pure weight ramp),
`probes/` (one module per check type, and the shared socket poller: the only
I/O), `ticker` (one timer for all probes, the in-flight limit), `monitor`
(scheduling, dedupe, verdicts as desired-table overrides), `targets` (config
-> monitor targets), `metrics` (the scrape-time collector), `dnswire`. See
README.md beside this file.

Nothing is imported here on purpose: `lvsmon.model` imports `lvsmon.health.check`,
and an eager import of the monitor would make that a cycle.
"""
