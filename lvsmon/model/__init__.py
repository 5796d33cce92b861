"""The ground floor: frozen, validated values every other layer reads.

Nothing here imports anything of lvsmon above it, and nothing here parses:
the config readers (lvsmon.config) build these values, the cores and the I/O
edges consume them. The LVS table and daemon settings are re-exported here;
feature values live in their own modules (health, adaptive, failover, web,
capabilities).
"""

from lvsmon.model.daemon import (
    Config,
    DaemonSettings,
    IpvsSettings,
    IpvsSysctls,
    NftSettings,
    StatusPageSettings,
    SyncDaemon,
    SyncState,
    Timeouts,
)
from lvsmon.model.table import (
    MAX_WEIGHT,
    DestKey,
    Endpoint,
    Forwarding,
    IPAddress,
    Protocol,
    RealServer,
    ServiceKey,
    VirtualServer,
    endpoint_label,
)

__all__ = [
    "MAX_WEIGHT",
    "Config",
    "DaemonSettings",
    "DestKey",
    "Endpoint",
    "Forwarding",
    "IPAddress",
    "IpvsSettings",
    "IpvsSysctls",
    "NftSettings",
    "Protocol",
    "RealServer",
    "ServiceKey",
    "StatusPageSettings",
    "SyncDaemon",
    "SyncState",
    "Timeouts",
    "VirtualServer",
    "endpoint_label",
]
