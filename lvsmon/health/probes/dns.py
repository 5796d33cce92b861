"""`dns`: one query over UDP; judge the rcode and, optionally, the answers.

A datagram that is not the answer to our query (another id, garbage) is
ignored and the wait goes on (a spoofed or stale answer never counts);
ICMP port unreachable is `refused`.
"""

from __future__ import annotations

import random
import socket

from lvsmon.health import dnswire
from lvsmon.health.probes import base
from lvsmon.model.health import OK, DnsSpec, Reason, Result, fail


class DnsChecker:
    def __init__(self, spec: DnsSpec, address: str, port: int):
        self.spec = spec
        self.address = address
        self.port = port
        self.phase = "send"
        self.want_rcode = dnswire.RCODES[spec.expect_rcode]
        self.want = {dnswire.normalize(a, spec.query_type) for a in spec.expect_answer}
        self.ids = random.Random()

    async def __call__(self) -> Result:
        qid = self.ids.randrange(0x10000)
        spec = self.spec
        query = dnswire.build_query(qid, spec.query_name, spec.query_type, spec.recursion_desired)
        sock = await base.connect(self.address, self.port, socket.SOCK_DGRAM)
        try:
            self.phase = "send the query"
            await base.send(sock, query)
            self.phase = "wait for the answer"
            while True:
                try:
                    response = dnswire.parse_response(await base.recv(sock, 4096), qid)
                except ValueError:
                    continue
                return self._judge(response)
        finally:
            base.close(sock)

    def _judge(self, response: dnswire.Response) -> Result:
        if response.rcode != self.want_rcode:
            return fail(
                Reason.BAD_ANSWER, f"rcode {response.rcode_name}, expected {self.spec.expect_rcode}"
            )
        missing = self.want - set(response.answers)
        if missing:
            got = ", ".join(sorted(response.answers)) or "no answers"
            return fail(Reason.BAD_ANSWER, f"missing {', '.join(sorted(missing))} (got {got})")
        return OK
