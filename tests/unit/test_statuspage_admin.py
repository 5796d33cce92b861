"""Admin actions from the status page (lvsmon.statuspage.admin): parsing, CSRF tokens,
expiry, and that a drain or temporary weight reaches the table only through the one
effective-weight path (from_verdicts -> table_weights -> desired_table)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lvsmon import config, daemon
from lvsmon.dataplane.proxy import ProxyDataPlane
from lvsmon.desired import desired_table
from lvsmon.httpmsg import Request
from lvsmon.model import DestKey, StatusPageSettings
from lvsmon.statuspage.admin import (
    CSRF_COOKIE,
    Action,
    AdminState,
    Override,
    Refusal,
    csrf_refusal,
    csrf_token,
    override_for,
    parse_action,
)
from lvsmon.weights.effective import from_verdicts, table_weights

CFG = config.loads(
    """
[[virtual_server]]
name = "web"
address = "192.0.2.10"
port = 80
scheduler = "wlc"

[[virtual_server.real_server]]
address = "10.0.0.2"
weight = 3

[[virtual_server.real_server]]
address = "10.0.0.3"
weight = 5
""",
    "test.toml",
)
WEB = CFG.virtual_servers[0]
A = (WEB.key, DestKey("10.0.0.2", 80))
B = (WEB.key, DestKey("10.0.0.3", 80))


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "the request body is not JSON"),
        (b"[]", "must be a JSON object"),
        (body(action="explode"), 'action "explode" is not valid'),
        (body(action="drain"), "drain needs virtual_server"),
        (body(action="weight", virtual_server="web", real_server="x:1", weight=70000), "70000"),
        (body(action="weight", virtual_server="web", real_server="x:1", weight=True), "true"),
        (body(action="drain", virtual_server="web", real_server="x:1", seconds=-1), "seconds -1"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(raw: bytes, reason: str) -> None:
    parsed = parse_action(raw)
    assert isinstance(parsed, Refusal)
    assert parsed.reason == "bad_request"
    assert parsed.status.startswith("400")
    assert reason in parsed.message


def test_good_requests_parse() -> None:
    assert parse_action(body(action="reload")) == Action("reload")
    drain = parse_action(body(action="drain", virtual_server="web", real_server="10.0.0.2:80"))
    assert drain == Action("drain", "web", "10.0.0.2:80")
    weight = parse_action(
        body(action="weight", virtual_server="web", real_server="10.0.0.2:80", weight=9, seconds=60)
    )
    assert weight == Action("weight", "web", "10.0.0.2:80", 9, 60.0)


def test_csrf_token_is_bound_to_the_user_and_must_be_echoed() -> None:
    key = b"k" * 32
    token = csrf_token(key, "alice")
    assert csrf_refusal(key, "alice", token, token) is None
    for cookie, header, words in (
        (None, token, "missing"),
        (token, None, "missing"),
        (token, token + "x", "does not match"),
    ):
        refusal = csrf_refusal(key, "alice", cookie, header)
        assert refusal is not None and refusal.reason == "csrf" and words in refusal.message
    stolen = csrf_refusal(key, "mallory", token, token)  # alice's token, mallory's session
    assert stolen is not None and "not issued to user 'mallory'" in stolen.message
    other = csrf_refusal(b"x" * 32, "alice", token, token)  # another daemon (restarted)
    assert other is not None and other.reason == "csrf"


def test_overrides_expire_and_follow_the_config() -> None:
    state = AdminState()
    state.set(A, override_for(Action("weight", "web", "10.0.0.2:80", 7, 60.0), "alice", 1000.0))
    state.set(B, override_for(Action("drain", "web", "10.0.0.3:80"), "bob", 1000.0))
    assert state.weights() == {A: 7, B: 0}
    assert state.expire(1059.0) == []
    assert state.expire(1060.0) == [A]  # the temporary weight lapsed; the drain holds
    assert state.weights() == {B: 0}
    assert state.keep_only([A]) == [B]  # B left the config on reload
    assert len(state) == 0


def test_drain_and_temporary_weight_flow_through_the_one_weight_path_to_the_table() -> None:
    parts = from_verdicts(CFG.virtual_servers, operator={A: 0, B: 9})
    assert parts[A].effective == 0 and parts[A].up  # drained: in service at weight 0
    assert parts[B].effective == 9
    assert parts[B].columns()["operator"] == "9"
    table = desired_table(CFG, table_weights(parts))
    weights = {rs.key: rs.weight for rs in table[WEB.key].real_servers}
    assert weights == {A[1]: 0, B[1]: 9}  # a drained server stays programmed (drain, not cut)
    # health still wins: a down server is out whatever the operator set
    down = from_verdicts(CFG.virtual_servers, down=[B], operator={B: 9})
    assert table_weights(down)[B] is None
    # the adaptive factor applies on top of a temporary weight
    adapted = from_verdicts(
        CFG.virtual_servers, adaptive={B: 0.5}, adaptive_services=[WEB.key], operator={B: 8}
    )
    assert adapted[B].effective == 4


def test_the_director_programs_what_the_page_asked_for() -> None:
    director = daemon.Director("x.toml", CFG, ProxyDataPlane(CFG.daemon.timeouts))
    assert director._overrides() == {}
    director.admin.set(A, Override("drain", 0, "alice", 0.0, None))
    assert director._overrides() == {A: 0}


def test_the_page_refuses_admin_actions_when_they_are_off() -> None:
    director = daemon.Director("x.toml", CFG, ProxyDataPlane(CFG.daemon.timeouts))
    request = Request(
        "POST",
        "/admin",
        {"cookie": f"{CSRF_COOKIE}=x"},
        body(action="drain", virtual_server="web", real_server="10.0.0.2:80"),
        tls=True,
        user="alice",
    )
    response = director.page.respond(request)
    assert response.status.startswith("403")
    answer = json.loads(response.body)
    assert answer["reason"] == "disabled"
    assert "daemon.status_page.admin = false" in answer["message"]
    assert director.page.refused[("drain", "disabled")] == 1
    assert len(director.admin) == 0


def test_with_admin_on_the_page_still_refuses_plain_http_and_anonymous_users() -> None:
    daemon_settings = dataclasses.replace(CFG.daemon, status_page=StatusPageSettings(admin=True))
    cfg = dataclasses.replace(CFG, daemon=daemon_settings)  # as if the web config had both
    director = daemon.Director("x.toml", cfg, ProxyDataPlane(cfg.daemon.timeouts))
    drain = body(action="drain", virtual_server="web", real_server="10.0.0.2:80")
    plain = director.page.respond(Request("POST", "/admin", {}, drain, tls=False, user="alice"))
    assert plain.status.startswith("403")
    assert json.loads(plain.body)["reason"] == "tls"
    anonymous = director.page.respond(Request("POST", "/admin", {}, drain, tls=True, user=None))
    assert json.loads(anonymous.body)["reason"] == "auth"
    page = director.page.respond(Request("GET", "/", {}, tls=True, user="alice"))
    cookie = dict(page.headers)["Set-Cookie"]
    token = cookie.split(";")[0].split("=", 1)[1]
    assert "Secure" in cookie and "SameSite=Strict" in cookie
    ok = director.page.respond(
        Request(
            "POST",
            "/admin",
            {"cookie": f"{CSRF_COOKIE}={token}", "x-csrf-token": token},
            drain,
            tls=True,
            user="alice",
        )
    )
    assert ok.status == "200 OK", ok.body
    assert director._overrides() == {A: 0}
    assert director.page.applied["drain"] == 1
