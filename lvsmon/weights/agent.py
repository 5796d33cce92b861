"""HAProxy-style agent checks: connect to a TCP port on the real server, read one line.

The line holds words separated by spaces, tabs or commas; text after `#` is
a comment. Understood (as HAProxy's agent-check does):

  75%                         the weight, as a percentage of the configured one
  drain down maint stopped fail   out of rotation (weight 0) until "up" or "ready"
  up ready                    back in rotation
  maxconn:N and other words   ignored

`parse_reply` is pure; `ask` does the I/O.
"""

from __future__ import annotations

import asyncio
import re

from lvsmon.model.adaptive import OFF, ON
from lvsmon.weights.http import describe

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
MAX_LINE = 1024


class AgentError(Exception):
    """No usable answer; the message says why."""


def parse_reply(line: str) -> tuple[float | None, str]:
    """-> (weight fraction or None, command or ""). Raises AgentError if nothing is usable."""
    words = re.split(r"[\s,]+", line.split("#", 1)[0].strip().lower())
    weight: float | None = None
    command = ""
    for word in words:
        if m := _PERCENT.fullmatch(word):
            weight = float(m.group(1)) / 100
        elif word in OFF or word in ON:
            command = word
    if weight is None and not command:
        raise AgentError(f"no weight or state in {line.strip()[:60]!r}")
    return weight, command


async def ask(address: str, port: int, send: bytes, timeout: float) -> str:
    """One agent exchange: the first line of the answer (or all of it before EOF)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                if send:
                    writer.write(send)
                data = bytearray()
                while b"\n" not in data and len(data) < MAX_LINE:
                    chunk = await reader.read(MAX_LINE)
                    if not chunk:
                        break
                    data += chunk
            finally:
                writer.transport.abort()
    except TimeoutError:
        raise AgentError(f"no answer within {timeout:g}s") from None
    except OSError as exc:
        raise AgentError(describe(exc)) from None
    if not data:
        raise AgentError("closed without an answer")
    return data.split(b"\n", 1)[0].decode("ascii", "replace")
