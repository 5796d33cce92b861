"""lvsmon: an observability-first LVS director."""

__version__ = "0.1.0"
