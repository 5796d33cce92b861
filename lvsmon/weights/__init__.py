"""Adaptive weights: real-server weights that follow scraped load (issue 8).

Modules: `control` (the pure control law, formula in its docstring),
`effective` (configured x health x slow start x adaptive, pure), `spec` and
`config` (`[virtual_server.adaptive_weights]`), `expr` (the scrape source's
expression language), `http` and `agent` (the only I/O), `sources` (prometheus,
scrape, agent), `controller` (polling, state, reload), `metrics` (the
scrape-time collector). README.md beside this file has the keys and the wiring.

Nothing is imported here on purpose: lvsmon.model may import `spec`, and an
eager import of the controller would make that a cycle.
"""
