"""The pure parts of the load sources: expressions, expositions, agent answers, templates."""

from __future__ import annotations

import pytest

from lvsmon.weights import expr
from lvsmon.weights.agent import AgentError, parse_reply
from lvsmon.weights.expr import ExprError, NoData, parse
from lvsmon.weights.sources import _vector, parse_exposition
from lvsmon.weights.templates import instances_regex, placeholders, render, values_for

NODE = """\
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 2.5
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 100
node_cpu_seconds_total{cpu="0",mode="user"} 50
node_cpu_seconds_total{cpu="1",mode="idle"} 200
node_cpu_seconds_total{cpu="1",mode="user"} 10
node_load15 9
node_memory_MemFree_bytes 1.5e+09
"""
LATER = NODE.replace('mode="idle"} 100', 'mode="idle"} 100.5').replace(
    'mode="idle"} 200', 'mode="idle"} 200.1'
)


def scrape(text: str, expression: str) -> float:
    e = parse(expression)
    return expr.evaluate(e, parse_exposition(text, expr.names(e)))


def test_load_per_cpu_from_node_exporter() -> None:
    assert scrape(NODE, 'node_load1 / count(node_cpu_seconds_total{mode="idle"})') == 1.25
    assert scrape(NODE, "node_memory_MemFree_bytes / 1e9") == 1.5


def test_arithmetic_and_aggregations() -> None:
    e = 'sum(node_cpu_seconds_total{mode!="idle"}) - -2 * (max(node_cpu_seconds_total) - 190)'
    assert scrape(NODE, e) == 60 + 2 * 10
    assert scrape(NODE, 'avg(node_cpu_seconds_total{mode=~"id.*", cpu!~"1"})') == 100
    assert scrape(NODE, "min(node_cpu_seconds_total)") == 10
    assert scrape(NODE, ".5e1 + 1") == 6


def test_cpu_utilisation_needs_two_scrapes() -> None:
    e = parse('1 - avg(rate(node_cpu_seconds_total{mode="idle"}))')
    assert expr.needs_previous(e)
    first = parse_exposition(NODE, expr.names(e))
    with pytest.raises(NoData):
        expr.evaluate(e, first)
    second = parse_exposition(LATER, expr.names(e))
    assert expr.evaluate(e, second, first, 1.0) == pytest.approx(1 - (0.5 + 0.1) / 2)
    # a counter reset (exporter restart) counts from 0
    assert expr.evaluate(e, first, second, 1000.0) == pytest.approx(1 - (0.1 + 0.2) / 2)


def test_evaluation_errors() -> None:
    with pytest.raises(ExprError, match="matches 4 series"):
        scrape(NODE, "node_cpu_seconds_total")
    with pytest.raises(NoData, match="no series node_load5"):
        scrape(NODE, "node_load5")
    with pytest.raises(NoData):
        scrape(NODE, 'node_load1 / count(node_cpu_seconds_total{mode="steal"})')
    with pytest.raises(ExprError, match="division by zero"):
        scrape(NODE, "node_load1 / (node_load1 - 2.5)")


@pytest.mark.parametrize(
    "text", ["", "node_load1 +", "sum(x", "x{a=1}", 'x{a=~"("}', "x y", "rate(x", "x{a}", "@"]
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(ExprError):
        parse(text)


def test_exposition_keeps_only_what_the_expression_reads() -> None:
    got = parse_exposition(NODE, frozenset({"node_load1"}))
    assert got == {"node_load1": [((), 2.5)]}


def test_prometheus_vector_answers() -> None:
    body = (
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":'
        b'{"instance":"10.0.0.1:9100"},"value":[1700000000.1,"0.25"]}]}}'
    )
    assert _vector(body) == [({"instance": "10.0.0.1:9100"}, 0.25)]
    with pytest.raises(ValueError, match="query failed: parse error"):
        _vector(b'{"status":"error","errorType":"bad_data","error":"parse error"}')
    with pytest.raises(ValueError, match="a scalar, not an instant vector"):
        _vector(b'{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}')
    with pytest.raises(ValueError, match="not JSON"):
        _vector(b"<html>")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("75%\n", (0.75, "")),
        ("up 50%", (0.5, "up")),
        ("drain", (None, "drain")),
        ("ready,maxconn:30, 12.5% # cpu 40%", (0.125, "ready")),
        ("DOWN#maintenance", (None, "down")),
        ("150%", (1.5, "")),
    ],
)
def test_agent_answers(line: str, expected: tuple[float | None, str]) -> None:
    assert parse_reply(line) == expected


@pytest.mark.parametrize("line", ["", "hello", "maxconn:10", "# 75%"])
def test_agent_answers_without_a_weight_or_state(line: str) -> None:
    with pytest.raises(AgentError):
        parse_reply(line)


def test_templates() -> None:
    v6 = values_for("2001:db8::2", 8080, "web")
    assert render("http://${host}:9100/m?rs=${real_server}&vs=${virtual_server}", v6) == (
        "http://[2001:db8::2]:9100/m?rs=[2001:db8::2]:8080&vs=web"
    )
    assert render('x{instance=~"${instances}"}', {}) == 'x{instance=~"${instances}"}'
    assert placeholders("${address}:$port {x} $$") == {"address", "port"}
    assert instances_regex(["10.0.0.1:9100", "10.0.0.1:9100", "[::1]:9100"]) == (
        "10\\\\.0\\\\.0\\\\.1:9100|\\\\[::1\\\\]:9100"
    )
