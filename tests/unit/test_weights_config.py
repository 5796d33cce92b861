"""`[virtual_server.adaptive_weights]`: keys, defaults, and the exact errors an operator sees."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from lvsmon.config.adaptive import check_real_servers, read_adaptive
from lvsmon.configkit import Problem
from lvsmon.model.adaptive import PIRANHA, AdaptiveSpec
from lvsmon.weights import expr

ROOT = Path(__file__).resolve().parents[2]
PATH = "virtual_server[web].adaptive_weights"


def read(text: str) -> tuple[AdaptiveSpec | None, list[str]]:
    problems: list[Problem] = []
    spec = read_adaptive(tomllib.loads(text), PATH, problems)
    return spec, [p.render("lvsmon.toml") for p in problems]


def ok(text: str) -> AdaptiveSpec:
    spec, errors = read(text)
    assert not errors
    assert spec is not None
    return spec


def test_prometheus_source_and_defaults() -> None:
    spec = ok('source = "prometheus"\nurl = "http://prom:9090"\nquery = "node_load1"\n')
    assert spec.prometheus is not None and spec.scrape is None and spec.agent is None
    assert spec.prometheus.match_label == "instance"
    assert spec.prometheus.match_value == "${address}:9100"
    assert (spec.interval, spec.timeout, spec.concurrency, spec.capacity) == (5.0, 2.0, 16, 1.0)
    p = spec.params
    assert (p.mode, p.min_weight, p.max_weight, p.deadband, p.max_change, p.gain) == (
        "balance",
        0.1,
        1.0,
        0.1,
        0.25,
        0.4,
    )
    assert (p.stale_after, p.expire_after) == (15.0, 120.0)
    assert spec.http.tls_verify and not spec.http.authorization


def test_scrape_source_parses_its_expression() -> None:
    spec = ok(
        'source = "scrape"\nurl = "http://${host}:9100/metrics"\n'
        "expression = 'node_load1 / count(node_cpu_seconds_total{mode=\"idle\"})'\n"
        'interval = "1s"\nhalf_life = "10s"\n'
    )
    assert spec.scrape is not None
    assert expr.names(spec.scrape.expression) == {"node_load1", "node_cpu_seconds_total"}
    assert spec.timeout == 0.5  # default: half a short interval
    assert spec.params.half_life == 10.0 and spec.params.stale_after == 3.0


def test_agent_source() -> None:
    spec = ok('source = "agent"\nport = 9777\nsend = "hello\\n"\n')
    assert spec.agent is not None
    agent = spec.agent
    assert (agent.port, agent.address, agent.send) == (9777, "${address}", b"hello\n")


def test_proportional_mode_defaults() -> None:
    spec = ok('source = "agent"\nport = 1\nmode = "proportional"\n')
    p = spec.params
    assert (p.deadband, p.load_low, p.load_high, p.min_weight) == (0.05, 0.5, 0.9, 0.1)


def test_piranha_mode() -> None:
    spec = ok(
        'source = "prometheus"\nurl = "http://p:9090"\nquery = "node_load1"\n'
        'mode = "piranha"\nmax_weight = 5\n'
    )
    assert spec.params.mode == PIRANHA
    assert (spec.params.min_weight, spec.params.max_weight) == (1.0, 5.0)


def test_authorization_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("Bearer s3cret\n")
    spec = ok(
        f'source = "scrape"\nurl = "https://${{host}}/m"\nexpression = "x"\n'
        f'authorization_file = "{tmp_path / "token"}"\ntls_verify = false\n'
    )
    assert spec.http.authorization == "Bearer s3cret" and not spec.http.tls_verify


MISTAKES: dict[str, tuple[str, list[str]]] = {
    "no source": (
        "interval = 5",
        [
            f'lvsmon.toml: {PATH}.source: missing: expected one of "prometheus", "scrape", "agent"',
        ],
    ),
    "typo in the source": (
        'source = "promethus"',
        [
            f'lvsmon.toml: {PATH}.source: "promethus" is not valid: expected one of "prometheus", '
            '"scrape", "agent" (did you mean "prometheus"?)',
        ],
    ),
    "missing url and query": (
        'source = "prometheus"',
        [
            f"lvsmon.toml: {PATH}.url: missing: expected the Prometheus server's URL, such as "
            '"http://127.0.0.1:9090"',
            f"lvsmon.toml: {PATH}.query: missing: expected a PromQL instant query "
            "returning a vector",
        ],
    ),
    "timeout not below interval": (
        'source = "agent"\nport = 1\ninterval = "2s"\ntimeout = "2s"',
        [
            f'lvsmon.toml: {PATH}.timeout: "2s" is not valid: expected a duration shorter than '
            'interval ("2s")',
        ],
    ),
    "a key of another source": (
        'source = "agent"\nport = 1\nurl = "http://x"',
        [
            f'lvsmon.toml: {PATH}.url: not used by source "agent" (a key of source "prometheus")',
        ],
    ),
    "a key of another mode": (
        'source = "agent"\nport = 1\nload_high = 0.9',
        [
            f'lvsmon.toml: {PATH}.load_high: not used by mode "balance" (a key of '
            'mode "proportional")',
        ],
    ),
    "a law key in piranha mode": (
        'source = "scrape"\nurl = "http://x/"\nexpression = "x"\nmode = "piranha"\ndeadband = 0.1',
        [
            f'lvsmon.toml: {PATH}.deadband: not used by mode "piranha" (nanny\'s rule has fixed '
            "constants)"
        ],
    ),
    "piranha with an agent": (
        'source = "agent"\nport = 1\nmode = "piranha"',
        [
            f'lvsmon.toml: {PATH}.mode: "piranha" needs a load (source "prometheus" or "scrape"); '
            "an agent answers weights",
        ],
    ),
    "unknown placeholder": (
        'source = "scrape"\nurl = "http://${addr}:9100/"\nexpression = "x"',
        [
            f'lvsmon.toml: {PATH}.url: "http://${{addr}}:9100/" is not valid: '
            "expected a URL template "
            'such as "http://${host}:9100/metrics" (unknown placeholder ${addr}; '
            "known: ${address}, "
            "${host}, ${port}, ${real_server}, ${virtual_server})",
        ],
    ),
    "bad expression": (
        'source = "scrape"\nurl = "http://x/"\nexpression = "sum(node_load1"',
        [
            f'lvsmon.toml: {PATH}.expression: "sum(node_load1" is not valid: '
            "expected an expression "
            "such as 'node_load1 / count(node_cpu_seconds_total{mode=\"idle\"})' (expected ')', "
            "found the end)",
        ],
    ),
    "bounds outside the configured weight": (
        'source = "agent"\nport = 1\nmin_weight = 1.5\nmax_weight = 0.5',
        [
            f"lvsmon.toml: {PATH}.min_weight: 1.5 is not valid: expected a fraction of the "
            "configured weight, 0..1",
            f"lvsmon.toml: {PATH}.max_weight: 0.5 is not valid: expected a fraction of the "
            "configured weight, 1..1000",
        ],
    ),
    "both smoothing keys": (
        'source = "agent"\nport = 1\nsmoothing = 0.3\nhalf_life = "5s"',
        [
            f"lvsmon.toml: {PATH}.half_life: set either smoothing or half_life, not both",
        ],
    ),
    "loads in the wrong order": (
        'source = "agent"\nport = 1\nmode = "proportional"\nload_low = 0.9\nload_high = 0.5',
        [
            f"lvsmon.toml: {PATH}.load_high: 0.5 is not valid: expected a load "
            "above load_low (0.9)",
        ],
    ),
    "expiry before staleness": (
        'source = "agent"\nport = 1\nstale_after = "1m"\nexpire_after = "30s"',
        [
            f'lvsmon.toml: {PATH}.expire_after: "30s" is not valid: expected at least '
            'stale_after ("1m")',
        ],
    ),
    "typo in a key": (
        'source = "agent"\nport = 1\ndeadbnd = 0.1',
        [
            f'lvsmon.toml: {PATH}.deadbnd: unknown key (did you mean "deadband"?); '
            "known keys here: "
            "address, capacity, concurrency, deadband, expire_after, gain, half_life, interval, "
            "load_low, max_change, max_weight, min_weight, mode, port, send, smoothing, source, "
            "stale_after, timeout",
        ],
    ),
}


@pytest.mark.parametrize("case", list(MISTAKES), ids=list(MISTAKES))
def test_mistakes_read_like_every_other_config_error(case: str) -> None:
    text, expected = MISTAKES[case]
    spec, errors = read(text)
    assert errors == expected
    assert spec is None


def test_weights_without_room_to_adapt_are_errors() -> None:
    spec = ok('source = "agent"\nport = 1\n')
    problems: list[Problem] = []
    check_real_servers(spec, "virtual_server[web]", [100, 1, 0, 2], problems)
    assert [p.render("f") for p in problems] == [
        "f: virtual_server[web].real_server[2].weight: 1 leaves adaptive weights no room (with "
        "min_weight 0.1 and max_weight 1 it stays 1): use a weight of at least 2, e.g. 100",
    ]
    piranha = ok('source = "scrape"\nurl = "http://x/"\nexpression = "x"\nmode = "piranha"\n')
    problems.clear()
    check_real_servers(piranha, "virtual_server[web]", [1], problems)
    assert not problems  # nanny's weights only grow: weight 1 has room


@pytest.mark.parametrize(
    "path", sorted((ROOT / "config").glob("adaptive-*.toml")), ids=lambda p: p.name
)
def test_shipped_adaptive_configs_are_valid(path: Path) -> None:
    doc: dict[str, Any] = tomllib.loads(path.read_text())
    seen = 0
    for vs in doc["virtual_server"]:
        problems: list[Problem] = []
        where = f"virtual_server[{vs['name']}]"
        spec = read_adaptive(vs["adaptive_weights"], f"{where}.adaptive_weights", problems)
        assert spec is not None, [p.render(path.name) for p in problems]
        check_real_servers(spec, where, [rs["weight"] for rs in vs["real_server"]], problems)
        assert not problems, [p.render(path.name) for p in problems]
        seen += 1
    assert seen
