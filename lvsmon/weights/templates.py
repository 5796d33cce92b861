"""`${name}` placeholders in adaptive-weight templates (URLs, queries, agent addresses).

The placeholders are listed in lvsmon.model.adaptive's docstring.
"""

from __future__ import annotations

import re
import string


def render(template: str, values: dict[str, str]) -> str:
    """Fill `${name}` placeholders; unknown names are left as they are."""
    return string.Template(template).safe_substitute(values)


def placeholders(template: str) -> set[str]:
    return {
        m.group("braced") or m.group("named") or ""
        for m in string.Template.pattern.finditer(template)
        if m.group("braced") or m.group("named")
    }


def values_for(address: str, port: int, virtual_server: str) -> dict[str, str]:
    host = f"[{address}]" if ":" in address else address
    return {
        "address": address,
        "host": host,
        "port": str(port),
        "real_server": f"{host}:{port}",
        "virtual_server": virtual_server,
    }


def instances_regex(values: list[str]) -> str:
    """A PromQL (RE2, fully anchored) alternation of literal values, ready for a "..." string."""
    escaped = (re.escape(v) for v in sorted(set(values)))
    return "|".join(escaped).replace("\\", "\\\\")
