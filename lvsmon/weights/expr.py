"""A PromQL-like scalar expression over one exporter scrape: the `scrape` source's signal.

    expression = 'node_load1 / count(node_cpu_seconds_total{mode="idle"})'
    expression = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}))'

Grammar (a small PromQL subset; every expression is a number):

    expr     := term (("+" | "-") term)*
    term     := unary (("*" | "/") unary)*
    unary    := "-" unary | atom
    atom     := NUMBER | "(" expr ")" | AGG "(" vector ")" | vector
    AGG      := sum | avg | min | max | count
    vector   := "rate" "(" selector ")" | selector
    selector := NAME ("{" LABEL ("=" | "!=" | "=~" | "!~") STRING ("," ...)* "}")?

NAME is a sample name as exposed (`node_cpu_seconds_total`, not the family).
A vector used as a number must hold exactly one series. `rate` is per series
between this scrape and the previous one of the same real server (a counter
reset counts from 0, as in Prometheus); on the first scrape it has no data.
Regular expressions are fully anchored, as in PromQL.
"""

from __future__ import annotations

import re

from lvsmon.model.adaptive import (
    Aggregate,
    Binary,
    Expr,
    Matcher,
    Negate,
    Node,
    Number,
    Samples,
    Selector,
)

AGGREGATIONS = ("sum", "avg", "min", "max", "count")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<op>=~|!~|!=|[-+*/(){},=]))"
)


class ExprError(ValueError):
    """Not a valid expression (config time), or not evaluable on this scrape."""


class NoData(Exception):
    """Nothing to compute from yet (no matching series, first scrape for rate)."""


def names(expr: Expr) -> frozenset[str]:
    """The sample names the expression reads (a scrape keeps only these)."""
    return frozenset(_names(expr.root))


def needs_previous(expr: Expr) -> bool:
    """A `rate` needs the previous scrape of the same real server."""
    return any(_selectors(expr.root, rate_only=True))


def evaluate(expr: Expr, now: Samples, before: Samples | None = None, dt: float = 0.0) -> float:
    """Raises NoData, or ExprError (division by zero, several series where one was due)."""
    return _eval(expr.root, now, before, dt)


def parse(text: str) -> Expr:
    tokens = _tokenize(text)
    parser = _Parser(tokens)
    root = parser.expr()
    if parser.pos != len(tokens):
        raise ExprError(f"unexpected {tokens[parser.pos][1]!r}")
    return Expr(text, root)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            raise ExprError(f"cannot read {text[pos:].strip()[:20]!r}")
        tokens.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    if not tokens:
        raise ExprError("empty")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else ("end", "")

    def take(self, text: str | None = None, kind: str | None = None) -> str:
        k, t = self.peek()
        if (text is not None and t != text) or (kind is not None and k != kind):
            want = repr(text) if text is not None else f"a {kind}"
            got = repr(t) if k != "end" else "the end"
            raise ExprError(f"expected {want}, found {got}")
        self.pos += 1
        return t

    def expr(self) -> Node:
        node = self.term()
        while self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            op = self.take()
            node = Binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek()[1] in ("*", "/") and self.peek()[0] == "op":
            op = self.take()
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek() == ("op", "-"):
            self.take()
            return Negate(self.unary())
        return self.atom()

    def atom(self) -> Node:
        kind, text = self.peek()
        if kind == "num":
            self.take()
            return Number(float(text))
        if (kind, text) == ("op", "("):
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if kind == "name" and text in AGGREGATIONS and self.peek(1) == ("op", "("):
            self.take()
            self.take("(")
            vector = self.vector()
            self.take(")")
            return Aggregate(text, vector)
        return self.vector()

    def vector(self) -> Selector:
        if self.peek() == ("name", "rate") and self.peek(1) == ("op", "("):
            self.take()
            self.take("(")
            sel = self.selector()
            self.take(")")
            return Selector(sel.name, sel.matchers, rate=True)
        return self.selector()

    def selector(self) -> Selector:
        name = self.take(kind="name")
        matchers: list[Matcher] = []
        if self.peek() == ("op", "{"):
            self.take()
            while self.peek() != ("op", "}"):
                label = self.take(kind="name")
                op = self.take(kind="op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise ExprError(f"expected a label matcher (= != =~ !~), found {op!r}")
                value = _unquote(self.take(kind="str"))
                regex = None
                if op in ("=~", "!~"):
                    try:
                        regex = re.compile(value)
                    except re.error as exc:
                        raise ExprError(f"bad regular expression {value!r}: {exc}") from None
                matchers.append(Matcher(label, op, value, regex))
                if self.peek() == ("op", ","):
                    self.take()
                elif self.peek() != ("op", "}"):
                    self.take("}")
            self.take("}")
        return Selector(name, tuple(matchers))


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _names(node: Node) -> list[str]:
    return [s.name for s in _selectors(node)]


def _selectors(node: Node, rate_only: bool = False) -> list[Selector]:
    match node:
        case Selector():
            return [node] if node.rate or not rate_only else []
        case Aggregate():
            return _selectors(node.vector, rate_only)
        case Binary():
            return _selectors(node.left, rate_only) + _selectors(node.right, rate_only)
        case Negate():
            return _selectors(node.operand, rate_only)
    return []


def _vector(sel: Selector, now: Samples, before: Samples | None, dt: float) -> list[float]:
    current = sel.select(now)
    if not sel.rate:
        return list(current.values())
    if before is None or dt <= 0:
        raise NoData(f"rate({sel.name}) needs a previous scrape")
    previous = sel.select(before)
    out = []
    for labels, value in current.items():
        if labels in previous:
            old = previous[labels]
            out.append((value - old if value >= old else value) / dt)  # reset: from 0
    return out


def _eval(node: Node, now: Samples, before: Samples | None, dt: float) -> float:
    match node:
        case Number():
            return node.value
        case Negate():
            return -_eval(node.operand, now, before, dt)
        case Selector():
            values = _vector(node, now, before, dt)
            if not values:
                raise NoData(f"no series {node.name}")
            if len(values) > 1:
                raise ExprError(
                    f"{node.name} matches {len(values)} series where one was "
                    "expected: aggregate it with sum(), avg(), ..."
                )
            return values[0]
        case Aggregate():
            values = _vector(node.vector, now, before, dt)
            if not values:  # PromQL: an aggregation of nothing is nothing, even count()
                raise NoData(f"no series {node.vector.name}")
            if node.op == "count":
                return float(len(values))
            if node.op == "sum":
                return sum(values)
            if node.op == "avg":
                return sum(values) / len(values)
            return min(values) if node.op == "min" else max(values)
        case Binary():
            a = _eval(node.left, now, before, dt)
            b = _eval(node.right, now, before, dt)
            if node.op == "+":
                return a + b
            if node.op == "-":
                return a - b
            if node.op == "*":
                return a * b
            if b == 0:
                raise ExprError("division by zero")
            return a / b
    raise AssertionError(node)  # pragma: no cover
