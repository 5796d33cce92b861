"""/status.json from the pure builder: valid against its shipped schema, with rates,
health failures, drains and reloads; the BGP section only when the view has one; and
[daemon.status_page] errors in lvsmon check's words."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lvsmon import config
from lvsmon.dataplane.base import Counters, DestStats, ServiceStats, Snapshot
from lvsmon.health.state import HealthDetail
from lvsmon.model import StatusPageSettings
from lvsmon.status import DirectorView, build_view
from lvsmon.statuspage.admin import Override
from lvsmon.statuspage.document import AdminAccess, ReloadRecord, build_document
from lvsmon.statuspage.history import RateHistory
from lvsmon.weights.effective import weight_parts
from tests.unit.test_statuspage_admin import CFG, WEB, A, B

ROOT = Path(__file__).resolve().parents[2]
# web: 10.0.0.2 (A) and 10.0.0.3 (B)


def schema() -> dict[str, Any]:
    text = resources.files("lvsmon.statuspage").joinpath("status.schema.json").read_text()
    return dict(json.loads(text))


def snapshot(connections: int) -> Snapshot:
    dests = (
        DestStats(A[1], 3, 2, 1, 0, Counters(connections, 1000, 5000)),
        DestStats(B[1], 0, 0, 0, 0, Counters(4, 10, 20)),
    )
    return Snapshot((ServiceStats(WEB, Counters(connections + 4, 1010, 5020), dests),))


def document(view: DirectorView, history: RateHistory | None = None) -> dict[str, Any]:
    health = {
        A: HealthDetail("tcp", True, 100.0, "", "", None, 0),
        B: HealthDetail("tcp", False, 200.0, "refused", "connection refused", 199.0, 3),
    }
    drained = Override("drain", 0, "alice", 150.0, None)
    return build_document(
        view,
        now=300.0,
        settings=StatusPageSettings(),
        history=history or RateHistory(3),
        health=health,
        overrides=lambda key: drained if key == A else None,
        reloads=[
            ReloadRecord(1.0, True, "start", "config loaded"),
            ReloadRecord(2.0, False, "signal", "rejected: x"),
        ],
        admin=AdminAccess(False, False, "admin actions are off"),
    )


def test_the_document_is_valid_against_its_schema_and_says_what_the_page_shows() -> None:
    history = RateHistory(3)
    for t, n in ((0.0, 10), (5.0, 40)):
        history.record(t, {A: (n, 0), WEB.key: (n, 0)})
    view = build_view(
        CFG, snapshot(40), frozenset({B}), weight_parts=weight_parts(CFG.virtual_servers, down=[B])
    )
    doc = document(view, history)
    jsonschema.validate(doc, schema())
    assert doc["schema_version"] == 1
    (vs,) = doc["virtual_servers"]
    assert vs["rate"]["connections_per_second"] == 6.0
    a, b = vs["real_servers"]
    assert a["state"] == "drained" and a["admin"]["by"] == "alice"
    assert a["history"] == [6.0]
    assert b["state"] == "down"
    assert b["health"]["last_failure"] == {
        "reason": "refused",
        "detail": "connection refused",
        "at": 199.0,
    }
    assert [r["trigger"] for r in doc["reload"]["history"]] == ["signal", "start"]  # newest first
    assert "bgp" not in doc


def test_failover_groups_show_their_role_and_peer() -> None:
    from lvsmon.ha.status import GroupStatus

    group = GroupStatus(
        "vip", 51, "eth0", "backup", 100, 100, "10.1.0.2", "10.1.0.1", "10.1.0.1", 150, 99.0, 90.0
    )
    plain = build_view(CFG, snapshot(1), failover_groups=[group.to_json()])
    doc = document(plain)
    jsonschema.validate(doc, schema())
    (shown,) = doc["failover_groups"]
    assert shown["state"] == "backup" and shown["peer"] == "10.1.0.1"
    assert shown["peer_priority"] == 150 and shown["master"] == "10.1.0.1"


def test_the_schema_rejects_a_document_that_breaks_it() -> None:
    doc = document(build_view(CFG, snapshot(1)))
    doc["virtual_servers"][0]["real_servers"][0]["state"] = "sideways"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema())
    jsonschema.Draft202012Validator.check_schema(schema())


def test_bgp_announcements_appear_only_when_the_view_has_them() -> None:
    plain = build_view(CFG, snapshot(1))
    assert "bgp" not in document(plain)  # no [bgp]: no key, no section
    route = {"prefix": "192.0.2.10/32", "state": "announced", "peers": [{"address": "10.1.1.1"}]}
    doc = document(build_view(CFG, snapshot(1), bgp=[route]))
    jsonschema.validate(doc, schema())
    assert doc["bgp"] == [route]


def test_the_schema_file_in_the_package_is_the_one_documented() -> None:
    doc = (ROOT / "docs" / "status-json.md").read_text()
    assert "schema_version" in doc and "status.schema.json" in doc
    for name in schema()["$defs"]["real_server"]["required"]:
        assert f"`{name}`" in doc, f"docs/status-json.md does not explain {name}"


def daemon_errors(toml: str, web: str = "") -> list[str]:
    text = f"[daemon]\n{web}\n[daemon.status_page]\n{toml}\n"
    with pytest.raises(config.ConfigError) as info:
        config.loads(text, "t.toml")
    return [p.render("t.toml") for p in info.value.problems]


def test_status_page_settings_and_their_errors(tmp_path: Path) -> None:
    ok = config.loads('[daemon.status_page]\nrefresh = "500ms"\nhistory = "1m"\n', "t.toml")
    assert ok.daemon.status_page == StatusPageSettings(refresh=0.5, history=60.0)
    assert ok.daemon.status_page.samples == 13
    assert daemon_errors('refresh = "0s"') == [
        't.toml: daemon.status_page.refresh: "0s" is not valid: expected a duration such as '
        '"100ms", "2s", "5m" or "1h30m" from 200ms to 1h'
    ]
    (too_long,) = daemon_errors('history = "24h"\nsample_interval = "1s"')
    assert too_long.startswith("t.toml: daemon.status_page.history:") and "at most 720" in too_long
    (typo,) = daemon_errors("admn = true")
    assert 'did you mean "admin"' in typo
    (plain,) = daemon_errors("admin = true")
    assert plain.startswith("t.toml: daemon.status_page.admin: true needs tls_server_config")
    assert "basic_auth_users" in plain
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: $2b$04$" + "a" * 53 + "\n")
    (no_tls,) = daemon_errors("admin = true", f'web_config_file = "{web}"')
    assert "tls_server_config" in no_tls and "basic_auth_users" not in no_tls
