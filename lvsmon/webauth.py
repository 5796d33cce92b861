"""HTTP basic auth against bcrypt hashes (the web config's `basic_auth_users`).

bcrypt is slow by design (~70 ms at cost 10), so, like exporter-toolkit, a verified
(user, hash, password) is remembered: Prometheus scraping every second pays bcrypt
once. The cache holds an HMAC of it under a per-process random key (no password is
kept) and is compared with `hmac.compare_digest`. Uncached checks run one at a time on
a thread of their own, off the event loop that also serves traffic and health checks,
and a flood of guesses is turned away once MAX_PENDING different ones wait. Requests
with the same credentials share one check in flight (many scrapers starting at once
on a cold cache all get in: tests/integration/test_http_hostile.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import bcrypt

REALM = "lvsmon"
MAX_PENDING = 16
# Checked for an unknown user so that its answer takes as long as a known user's (no
# user enumeration by timing); a bcrypt hash of "fakepassword" at cost 10.
_DUMMY_HASH = b"$2b$10$/COiRt4I2beGK9cJaqBDy.lPzwY8h5jUNq4nHVwVqY82DsH3eNsXy"
_executor: ThreadPoolExecutor | None = None


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """`Authorization: Basic base64(user:password)` -> (user, password bytes)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
        user, sep, password = raw.partition(b":")
        return (user.decode(), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


class BasicAuth:
    def __init__(self, users: Iterable[tuple[str, str]]):
        self.users = {name: hashed.encode() for name, hashed in users}
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # user -> digest of its last verified password
        self._checking: dict[bytes, asyncio.Future[bool]] = {}  # digest -> its check in flight

    def _digest(self, user: str, password: bytes) -> bytes:
        hashed = self.users.get(user, _DUMMY_HASH)
        msg = b"\0".join((user.encode(), hashed, password))
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def cached(self, user: str, password: bytes) -> bool:
        remembered = self._verified.get(user)
        return remembered is not None and hmac.compare_digest(
            remembered, self._digest(user, password)
        )

    def verify(self, user: str, password: bytes) -> bool:
        """bcrypt (blocking, slow); a success is remembered."""
        known = user in self.users
        try:
            ok = bcrypt.checkpw(password, self.users.get(user, _DUMMY_HASH))
        except ValueError:  # longer than bcrypt's 72 bytes: never a valid password
            ok = False
        if ok and known:
            self._verified[user] = self._digest(user, password)
        return ok and known

    async def allows(self, authorization: str | None) -> bool:
        credentials = parse_basic(authorization)
        if credentials is None:
            return False
        if self.cached(*credentials):
            return True
        digest = self._digest(*credentials)
        check = self._checking.get(digest)
        if check is None:
            if len(self._checking) >= MAX_PENDING:
                return False
            loop = asyncio.get_running_loop()
            check = loop.run_in_executor(_bcrypt_thread(), self.verify, *credentials)
            self._checking[digest] = check
            check.add_done_callback(lambda _: self._checking.pop(digest, None))
        return await asyncio.shield(check)  # one waiter going away must not cancel it


def _bcrypt_thread() -> ThreadPoolExecutor:
    # one worker: bcrypt is CPU-bound, and the loop's shared pool stays free for others
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lvsmon-bcrypt")
    return _executor
