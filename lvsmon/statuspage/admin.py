"""Operator actions from the status page, and the rules that guard them. Pure.

Actions: `drain` (weight 0: established connections finish, no new ones), `weight`
(a temporary weight for `seconds`), `restore` (back to the computed weight), `reload`
(as SIGHUP). Drains and temporary weights are held here and read by the daemon's one
effective-weight path (lvsmon.weights.effective.weight_parts via
Director._weight_parts): health, slow start and the adaptive factor still apply on
top, and a reload that removes the real server drops its override.

Who may act (checked in this order, each refusal says why and is counted):
  admin        daemon.status_page.admin = true (off by default)
  tls          the request came over TLS
  auth         an authenticated user (the web config's basic_auth_users)
  csrf         signed double-submit: the page's cookie, echoed in the X-CSRF-Token
               header, carries an HMAC of (user, nonce) under a per-process key; a
               cross-site form can send neither the header nor a token for this user
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from lvsmon.model import MAX_WEIGHT, DestKey, ServiceKey

Key = tuple[ServiceKey, DestKey]

ACTIONS = ("drain", "weight", "restore", "reload")
# the `reason` label of lvsmon_admin_actions_refused_total: bounded
REFUSALS = ("disabled", "tls", "auth", "csrf", "bad_request", "unknown_target")
CSRF_COOKIE = "lvsmon_csrf"
CSRF_HEADER = "x-csrf-token"
MAX_SECONDS = 86400.0
DEFAULT_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Override:
    """A drain or temporary weight on one real server."""

    action: str  # drain, weight
    weight: int
    by: str  # the user who asked
    at: float  # Unix time
    until: float | None  # Unix time it lapses; None: until restored
    # when it lapses on the monotonic clock: what expire() compares, so a wall clock
    # step neither ends a temporary weight early nor keeps it for hours (until: display)
    lapses: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action,
            "weight": self.weight,
            "by": self.by,
            "at": self.at,
            "until": self.until,
        }


@dataclass(frozen=True, slots=True)
class Action:
    action: str
    virtual_server: str = ""
    real_server: str = ""  # address:port ([v6]:port)
    weight: int = 0
    seconds: float | None = None  # weight: how long; drain: None = until restored


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # one of REFUSALS
    message: str  # for the operator, shown in the page
    status: str = "403 Forbidden"


class AdminState:
    """The overrides in force. Time is passed in (Unix time)."""

    def __init__(self) -> None:
        self._overrides: dict[Key, Override] = {}

    def set(self, key: Key, override: Override) -> None:
        self._overrides[key] = override

    def clear(self, key: Key) -> bool:
        return self._overrides.pop(key, None) is not None

    def expire(self, now: float) -> list[Key]:
        """Drop overrides whose time is up (`now`: the clock override_for was given as
        `clock`, time.monotonic() in the daemon); returns their keys."""
        gone = [k for k, o in self._overrides.items() if _deadline(o) <= now]
        for key in gone:
            del self._overrides[key]
        return gone

    def keep_only(self, keys: Iterable[Key]) -> list[Key]:
        """After a reload: real servers no longer configured lose their override."""
        wanted = set(keys)
        gone = [k for k in self._overrides if k not in wanted]
        for key in gone:
            del self._overrides[key]
        return gone

    def weights(self) -> dict[Key, int]:
        """For weight_parts(operator=...)."""
        return {k: o.weight for k, o in self._overrides.items()}

    def get(self, key: Key) -> Override | None:
        return self._overrides.get(key)

    def __len__(self) -> int:
        return len(self._overrides)


def _deadline(o: Override) -> float:
    if o.lapses is not None:
        return o.lapses
    return o.until if o.until is not None else float("inf")


def override_for(action: Action, user: str, now: float, clock: float | None = None) -> Override:
    """`now`: Unix time (shown); `clock`: the monotonic time expire() will be given
    (default: `now`, for callers on one clock)."""
    mono = now if clock is None else clock
    if action.action == "drain":
        if not action.seconds:
            return Override("drain", 0, user, now, None)
        return Override("drain", 0, user, now, now + action.seconds, mono + action.seconds)
    seconds = DEFAULT_SECONDS if action.seconds is None else action.seconds
    return Override("weight", action.weight, user, now, now + seconds, mono + seconds)


def parse_action(body: bytes) -> Action | Refusal:
    """A JSON request body: {"action", "virtual_server", "real_server", "weight", "seconds"}."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _bad("the request body is not JSON")
    if not isinstance(data, dict):
        return _bad("the request body must be a JSON object")
    action = data.get("action")
    if action not in ACTIONS:
        return _bad(
            f"action {json.dumps(action)} is not valid: expected one of {', '.join(ACTIONS)}"
        )
    if action == "reload":
        return Action("reload")
    vs, rs = data.get("virtual_server"), data.get("real_server")
    if not isinstance(vs, str) or not vs or not isinstance(rs, str) or not rs:
        return _bad(f"{action} needs virtual_server (a name) and real_server (address:port)")
    seconds = data.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 < seconds <= MAX_SECONDS
    ):
        return _bad(f"seconds {json.dumps(seconds)} is not valid: expected 1..{MAX_SECONDS:g}")
    weight = data.get("weight", 0)
    if action == "weight" and (
        isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT
    ):
        return _bad(
            f"weight {json.dumps(weight)} is not valid: expected an integer 0..{MAX_WEIGHT}"
        )
    return Action(
        action, vs, rs, weight if action == "weight" else 0, float(seconds) if seconds else None
    )


def _bad(message: str) -> Refusal:
    return Refusal("bad_request", message, "400 Bad Request")


def csrf_token(key: bytes, user: str, nonce: str | None = None) -> str:
    """`nonce.mac`: a fresh nonce (one per page load) bound to `user` by the MAC."""
    nonce = nonce or secrets.token_urlsafe(16)
    mac = hmac.new(key, f"{user}\0{nonce}".encode(), hashlib.sha256).hexdigest()
    return f"{nonce}.{mac}"


def csrf_refusal(key: bytes, user: str, cookie: str | None, header: str | None) -> Refusal | None:
    """None when the header echoes the cookie and the token belongs to `user`."""
    if not cookie or not header:
        return Refusal(
            "csrf", "the CSRF token is missing: reload the page (cookies must be enabled)"
        )
    if not hmac.compare_digest(cookie.encode(), header.encode()):
        return Refusal("csrf", "the CSRF token does not match the page's cookie: reload the page")
    nonce, _, _mac = cookie.partition(".")
    if not hmac.compare_digest(csrf_token(key, user, nonce).encode(), cookie.encode()):
        return Refusal(
            "csrf",
            f"the CSRF token was not issued to user {user!r} by this daemon: reload the page",
        )
    return None
