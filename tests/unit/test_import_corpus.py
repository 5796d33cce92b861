"""The import corpus (tests/data/import): every file translated, checked by the real
checker, and compared with its expectation (virtual servers, real servers, weights,
schedulers, forwarding, VIPs). Also every sample config the keepalived Debian package
documents (/usr/share/doc/keepalived/samples): none may crash the importer, and each
whose report has no error must pass the checker."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from lvsmon import config
from lvsmon.importers import translate
from lvsmon.importers.report import Severity
from lvsmon.importers.source import FileSource
from lvsmon.model import Config

DATA = Path(__file__).resolve().parents[1] / "data" / "import"
SAMPLES = Path("/usr/share/doc/keepalived/samples")
CORPUS = [
    *(("keepalived", p) for p in sorted((DATA / "keepalived").glob("*.conf"))),
    *(("lvs.cf", p) for p in sorted((DATA / "lvs.cf").glob("*.cf"))),
]


def expectation(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.with_suffix(".expect.toml").read_text())


def vips(cfg: Config) -> list[str]:
    return sorted(f"{a.address}/{a.prefixlen}" for g in cfg.failover_groups for a in g.addresses)


def test_the_corpus_is_large_enough() -> None:
    kinds = [fmt for fmt, _ in CORPUS]
    assert kinds.count("keepalived") >= 15 and kinds.count("lvs.cf") >= 3


@pytest.mark.parametrize(("fmt", "path"), CORPUS, ids=lambda v: getattr(v, "name", v))
def test_translation_checks_clean_and_matches_its_expectation(fmt: str, path: Path) -> None:
    want = expectation(path)
    result = translate(fmt, str(path), FileSource(), config_id=want.get("config_id", ""))
    report = result.report
    assert report.count(Severity.ERROR) == want.get("errors", 0), report.render()
    for finding in report.findings:  # every finding points at a line of a real file
        assert finding.origin.line >= 0 and Path(finding.origin.file).exists(), finding
    cfg = config.loads(result.toml, f"{path.name} (imported)")  # the real checker
    got = {vs.name: vs for vs in cfg.virtual_servers}
    assert sorted(got) == sorted(want.get("virtual_server", {})), result.toml
    for name, w in want.get("virtual_server", {}).items():
        vs = got[name]
        assert str(vs.key) == w["service"]
        assert vs.scheduler == w["scheduler"]
        assert {rs.label: rs.weight for rs in vs.real_servers} == w["real_servers"]
        assert str(vs.real_servers[0].forwarding) == w["forwarding"]  # the virtual server's
        assert sorted(vs.scheduler_flags) == sorted(w.get("scheduler_flags", []))
        assert vs.quiesce == w.get("quiesce", False)
        assert str(vs.sorry_server or "") == w.get("sorry_server", "")
    assert vips(cfg) == sorted(want["vips"])
    for group, priority in want.get("priorities", {}).items():
        assert {g.name: g.priority for g in cfg.failover_groups}[group] == priority
    if "sync_daemon" in want:
        sd = cfg.daemon.ipvs.sync_daemon
        assert (sd.follow, sd.interface, sd.syncid) == tuple(want["sync_daemon"].values())
    assert cfg.daemon.dataplane == "ipvs"


def test_real_server_forwarding_overrides_the_virtual_servers() -> None:
    path = DATA / "keepalived" / "schedulers-tunnel.conf"
    cfg = config.loads(translate("keepalived", str(path), FileSource()).toml)
    mh = next(vs for vs in cfg.virtual_servers if vs.scheduler == "mh")
    assert [str(rs.forwarding) for rs in mh.real_servers] == ["tunnel", "dr"]


def test_checks_keep_their_kind_and_timing() -> None:
    """delay_loop = interval, connect_timeout = timeout, retry + 1 = fall, rise = 1."""
    expected = {
        "basic-nat.conf": ("http", 6.0, 3.0, 4),
        "dr-tcp-check.conf": ("tcp", 10.0, 4.0, 3),
        "dns-check.conf": ("dns", 5.0, 2.0, 3),
        "smtp-check.conf": ("send_expect", 15.0, 10.0, 3),
        "ssl-get.conf": ("https", 15.0, 5.0, 2),
        "udp-check.conf": ("send_expect", 10.0, 4.0, 2),
        "misc-check.conf": ("exec", 10.0, 5.0, 1),
    }
    for name, (kind, interval, timeout, fall) in expected.items():
        path = DATA / "keepalived" / name
        cfg = config.loads(translate("keepalived", str(path), FileSource()).toml)
        check = cfg.virtual_servers[0].real_servers[0].health_check
        assert check is not None, name
        got = (check.type.value, check.interval, check.timeout, check.fall, check.rise)
        assert got == (kind, interval, timeout, fall, 1), name


def test_a_missing_misc_script_is_written_disabled_and_reported() -> None:
    path = DATA / "keepalived" / "misc-check.conf"
    result = translate("keepalived", str(path), FileSource())
    cfg = config.loads(result.toml)
    postgres = next(vs for vs in cfg.virtual_servers if vs.port == 5432)
    assert postgres.real_servers[0].health_check is None  # enabled = false
    assert "enabled = false" in result.toml
    assert any(
        f.directive == "misc_path" and "check-postgres" in f.message and f.origin.line == 36
        for f in result.report.findings
    ), result.report.render()


def test_piranha_send_expect_and_timing() -> None:
    path = DATA / "lvs.cf" / "nat-web.cf"
    cfg = config.loads(translate("lvs.cf", str(path), FileSource()).toml)
    http = cfg.virtual_servers[0].real_servers[0].health_check
    assert http is not None and http.type.value == "send_expect"
    assert (http.interval, http.fall, http.rise) == (6.0, 1, 3)  # timeout 6, reentry 15
    ftp = cfg.virtual_servers[1]
    assert ftp.persistence_timeout == 300 and ftp.persistence_netmask == 24
    (group,) = cfg.failover_groups
    assert group.advert_interval == 2.0 and group.interfaces == ("eth0", "eth1")


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="keepalived's samples (Debian package keepalived)")
@pytest.mark.parametrize(
    "path",
    sorted(SAMPLES.glob("keepalived.conf.*")) if SAMPLES.is_dir() else [],
    ids=lambda p: p.name,
)
def test_keepalived_documented_samples(path: Path) -> None:
    result = translate("keepalived", str(path), FileSource())
    if not result.report.has_errors:
        config.loads(result.toml, path.name)  # raises ConfigError when it does not check
