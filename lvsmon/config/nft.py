"""`[daemon.nft]`: the nftables data plane's settings (lvsmon/dataplane/nft.py)."""

from __future__ import annotations

import re
from typing import Any

from lvsmon import configkit as ck
from lvsmon.model import IPAddress, NftSettings


def read(sec: ck.Section) -> NftSettings:
    """Read whatever the data plane; only `dataplane = "nft"` uses it."""
    d = NftSettings()
    table = sec.get("table", _table_name, d.table, "an nftables table name (letters, digits, _)")
    flush = sec.get("flush_on_stop", ck.boolean, d.flush_on_stop, "true or false")
    state_file = sec.get("state_file", ck.text, d.state_file, "a file path")
    masquerade = sec.get("masquerade", ck.boolean, d.masquerade, "true or false")
    snat = sec.get(
        "snat_address", _snat_addresses, d.snat_address, "an array of addresses, one per family"
    )
    seed = sec.get("hash_seed", ck.int_in(0, 2**32 - 1), d.hash_seed, "an integer 0..4294967295")
    size = sec.get(
        "persistence_size", ck.int_in(1, 2**24), d.persistence_size, "an integer 1..16777216"
    )
    limit = sec.get(
        "conntrack_limit", ck.int_in(1, 2**31 - 1), d.conntrack_limit, "an integer >= 1"
    )
    forward = sec.get("ip_forward", ck.boolean, d.ip_forward, "true or false")
    sec.check_unknown()
    return NftSettings(table, flush, state_file, masquerade, snat, seed, size, limit, forward)


def _table_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", value):
        raise ValueError(value)
    return value


def _snat_addresses(value: Any) -> tuple[IPAddress, ...]:
    addresses = ck.addresses(value)
    if len({a.version for a in addresses}) != len(addresses):
        raise ValueError(ck.Hint("at most one address per family"))
    return addresses
