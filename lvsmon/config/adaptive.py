"""`[virtual_server.adaptive_weights]` -> AdaptiveSpec, with lvsmon.configkit's error style.

    read_adaptive(data, path, problems) -> AdaptiveSpec | None
    check_real_servers(spec, path, weights, problems)

Keys (lvsmon/weights/README.md explains each):

  every source   source, mode, interval, timeout, concurrency, capacity,
                 stale_after, expire_after
  balance        smoothing | half_life, deadband, max_change, min_weight,
                 max_weight, load_low, gain
  proportional   the same, with load_high instead of gain
  piranha        max_weight (nanny's --scale)
  prometheus     url, query, match_label, match_value       + HTTP keys
  scrape         url, expression                            + HTTP keys
  agent          port, address, send
  HTTP keys      tls_verify, ca_file, authorization, authorization_file,
                 max_response_bytes

A key that belongs to another source or mode is an error that says so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lvsmon import configkit as ck
from lvsmon.model.adaptive import (
    BALANCE,
    MODES,
    PIRANHA,
    PLACEHOLDERS,
    PROPORTIONAL,
    SOURCES,
    AdaptiveSpec,
    AgentSpec,
    HttpOptions,
    Params,
    PrometheusSpec,
    ScrapeSpec,
    defaults,
)
from lvsmon.weights.effective import effective_weight
from lvsmon.weights.expr import ExprError, parse
from lvsmon.weights.templates import placeholders

HTTP_KEYS = ("tls_verify", "ca_file", "authorization", "authorization_file", "max_response_bytes")
SOURCE_KEYS = {
    "prometheus": ("url", "query", "match_label", "match_value", *HTTP_KEYS),
    "scrape": ("url", "expression", *HTTP_KEYS),
    "agent": ("port", "address", "send"),
}
LAW_KEYS = ("smoothing", "half_life", "deadband", "max_change", "min_weight", "load_low")
MODE_KEYS = {BALANCE: ("gain",), PROPORTIONAL: ("load_high",), PIRANHA: ()}
DURATION = 'a duration such as "500ms", "5s" or "1m"'
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _number(low: float, high: float, *, above: bool = False) -> Callable[[Any], float]:
    """A number in [low, high] (or (low, high] with `above`)."""

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        if not (low < value if above else low <= value) or value > high:
            raise ValueError(value)
        return float(value)

    return convert


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
        raise ValueError(value)
    return value


def _one_of(options: Sequence[str]) -> str:
    return "one of " + ", ".join(f'"{o}"' for o in options)


def read_adaptive(
    data: dict[str, Any], path: str, problems: list[ck.Problem]
) -> AdaptiveSpec | None:
    """One `adaptive_weights` table at `path`; None when too broken to use (see problems)."""
    before = len(problems)
    sec = ck.Section(data, path, problems)
    source = sec.require("source", ck.choice(SOURCES), _one_of(SOURCES))
    mode = sec.get("mode", ck.choice(MODES), BALANCE, _one_of(MODES))
    if source is None or ("source" in data and data["source"] not in SOURCES):
        sec.known.update(data)  # without a source its other keys cannot be judged
        return None
    interval = sec.get("interval", ck.positive_duration, 5.0, DURATION + " above 0")
    timeout = sec.get(
        "timeout", ck.positive_duration, min(2.0, interval / 2), DURATION + " above 0"
    )
    if timeout >= interval:
        shown, limit = ck.show(data.get("timeout", timeout)), ck.format_duration(interval)
        sec.error(
            "timeout",
            f'{shown} is not valid: expected a duration shorter than interval ("{limit}")',
        )
    concurrency = sec.get("concurrency", ck.int_in(1, 4096), 16, "an integer 1..4096")
    capacity = sec.get("capacity", _number(0, 1e12, above=True), 1.0, "a number above 0")
    params = _read_params(sec, mode, interval)
    http_opts = _read_http(sec) if source != "agent" else HttpOptions()
    spec = AdaptiveSpec(
        source=source,
        interval=interval,
        timeout=timeout,
        concurrency=concurrency,
        capacity=capacity,
        params=params,
        http=http_opts,
    )
    if source == "prometheus":
        spec = _with_prometheus(sec, spec)
    elif source == "scrape":
        spec = _with_scrape(sec, spec)
    else:
        spec = _with_agent(sec, spec)
        if mode == PIRANHA:
            sec.error(
                "mode",
                '"piranha" needs a load (source "prometheus" or "scrape"); '
                "an agent answers weights",
            )
    _check_foreign_keys(sec, source, mode)
    sec.check_unknown()
    return spec if len(problems) == before else None


def _read_params(sec: ck.Section, mode: str, interval: float) -> Params:
    stale = sec.get("stale_after", ck.positive_duration, 3 * interval, DURATION + " above 0")
    expire = sec.get(
        "expire_after", ck.positive_duration, max(120.0, 2 * stale), DURATION + " above 0"
    )
    if expire < stale:
        sec.error(
            "expire_after",
            f"{ck.show(sec.data.get('expire_after'))} is not valid: "
            f'expected at least stale_after ("{ck.format_duration(stale)}")',
        )
    d = dataclasses.replace(defaults(mode), stale_after=stale, expire_after=expire)
    if mode == PIRANHA:
        scale = sec.get(
            "max_weight", _number(1, 1000), d.max_weight, "a number 1..1000 (nanny's --scale)"
        )
        return dataclasses.replace(d, max_weight=scale)
    smoothing = sec.get(
        "smoothing",
        _number(0, 1, above=True),
        d.smoothing,
        "a number above 0, at most 1 (1 = no smoothing)",
    )
    half_life = sec.get("half_life", ck.positive_duration, 0.0, DURATION + " above 0")
    if "smoothing" in sec.data and "half_life" in sec.data:
        sec.error("half_life", "set either smoothing or half_life, not both")
    fraction = "a fraction of the configured weight"
    params = dataclasses.replace(
        d,
        smoothing=smoothing,
        half_life=half_life,
        deadband=sec.get("deadband", _number(0, 1), d.deadband, "a number 0..1"),
        max_change=sec.get(
            "max_change",
            _number(0, 100, above=True),
            d.max_change,
            "a number above 0 (the largest change per update)",
        ),
        min_weight=sec.get("min_weight", _number(0, 1), d.min_weight, f"{fraction}, 0..1"),
        max_weight=sec.get("max_weight", _number(1, 1000), d.max_weight, f"{fraction}, 1..1000"),
        load_low=sec.get("load_low", _number(0, 1e12), d.load_low, "a load >= 0"),
    )
    if mode == BALANCE:
        gain = sec.get("gain", _number(0, 10, above=True), d.gain, "a number above 0, at most 10")
        return dataclasses.replace(params, gain=gain)
    high = sec.get("load_high", _number(0, 1e12), d.load_high, "a load >= 0")
    if high <= params.load_low and "load_high" in sec.data:
        sec.error(
            "load_high",
            f"{ck.show(sec.data['load_high'])} is not valid: expected a "
            f"load above load_low ({params.load_low:g})",
        )
    elif high <= params.load_low:
        sec.error(
            "load_low",
            f"{ck.show(sec.data.get('load_low'))} is not valid: expected a "
            f"load below load_high ({high:g})",
        )
    return dataclasses.replace(params, load_high=high)


def _read_http(sec: ck.Section) -> HttpOptions:
    d = HttpOptions()
    verify = sec.get("tls_verify", ck.boolean, True, "true or false")
    ca_file = sec.get("ca_file", ck.text, "", "a file path")
    if ca_file and not Path(ca_file).is_file():
        sec.error("ca_file", f'"{ca_file}": no such file')
    auth = sec.get(
        "authorization", _header_value, "", 'an Authorization header value such as "Bearer <token>"'
    )
    auth_file = sec.get("authorization_file", ck.text, "", "a file path")
    if auth and auth_file:
        sec.error("authorization_file", "set either authorization or authorization_file, not both")
    elif auth_file:
        try:
            auth = _header_value(ck.read_text(auth_file, 64 * 1024).strip())
        except ck.FileProblem as exc:
            sec.error("authorization_file", f'"{auth_file}": {exc}')
        except ValueError:
            sec.error(
                "authorization_file",
                f'"{auth_file}": not a valid header value (one line of printable text)',
            )
    cap = sec.get(
        "max_response_bytes",
        ck.int_in(1024, 1 << 30),
        d.max_response_bytes,
        "an integer 1024..1073741824",
    )
    return HttpOptions(
        tls_verify=verify, ca_file=ca_file, authorization=auth, max_response_bytes=cap
    )


def _header_value(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[\x20-\x7e]+", value):
        raise ValueError(value)
    return value


def _template(allowed: Sequence[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise TypeError(value)
        unknown = sorted(placeholders(value) - set(allowed))
        if unknown:
            known = ", ".join("${" + a + "}" for a in allowed) or "none"
            raise ValueError(ck.Hint(f"unknown placeholder ${{{unknown[0]}}}; known: {known}"))
        return value

    return convert


def _with_prometheus(sec: ck.Section, spec: AdaptiveSpec) -> AdaptiveSpec:
    url = sec.require(
        "url",
        _both(_url, _template(["virtual_server"])),
        'the Prometheus server\'s URL, such as "http://127.0.0.1:9090"',
    )
    query = sec.require(
        "query",
        _template(["virtual_server", "instances"]),
        "a PromQL instant query returning a vector",
    )
    d = PrometheusSpec("", "")
    label = sec.get("match_label", _label, d.match_label, "a Prometheus label name")
    value = sec.get(
        "match_value",
        _template(PLACEHOLDERS),
        d.match_value,
        'a template such as "${address}:9100"',
    )
    if url is None or query is None:
        return spec
    return _replace(spec, prometheus=PrometheusSpec(url, query, label, value))


def _with_scrape(sec: ck.Section, spec: AdaptiveSpec) -> AdaptiveSpec:
    url = sec.require(
        "url",
        _both(_url, _template(PLACEHOLDERS)),
        'a URL template such as "http://${host}:9100/metrics"',
    )
    expression = sec.require(
        "expression",
        _expression,
        "an expression such as 'node_load1 / count(node_cpu_seconds_total{mode=\"idle\"})'",
    )
    if url is None or expression is None:
        return spec
    return _replace(spec, scrape=ScrapeSpec(url, expression))


def _with_agent(sec: ck.Section, spec: AdaptiveSpec) -> AdaptiveSpec:
    port = sec.require("port", ck.int_in(1, 65535), "the agent's TCP port 1..65535")
    address = sec.get(
        "address",
        _template(PLACEHOLDERS),
        "${address}",
        'an address or a template such as "${address}"',
    )
    send = sec.get("send", ck.text, "", "a string sent after connecting")
    if port is None:
        return spec
    return _replace(spec, agent=AgentSpec(port, address, send.encode("utf-8")))


def _expression(value: Any) -> Any:
    if not isinstance(value, str):
        raise TypeError(value)
    try:
        return parse(value)
    except ExprError as exc:
        raise ValueError(ck.Hint(str(exc))) from None


def _label(value: Any) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ValueError(value)
    return value


def _both(first: Callable[[Any], str], second: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: second(first(value))


def _replace(spec: AdaptiveSpec, **changes: Any) -> AdaptiveSpec:
    return dataclasses.replace(spec, **changes)


def _check_foreign_keys(sec: ck.Section, source: str, mode: str) -> None:
    """Keys of another source or mode: errors that name the owner, not 'unknown key'."""
    for other, keys in SOURCE_KEYS.items():
        if other == source:
            continue
        for key in keys:
            if key in sec.data and key not in SOURCE_KEYS[source] and key not in sec.known:
                sec.known.add(key)
                sec.error(key, f'not used by source "{source}" (a key of source "{other}")')
    foreign = [(k, m) for m, keys in MODE_KEYS.items() if m != mode for k in keys]
    if mode == PIRANHA:
        foreign += [(k, "") for k in LAW_KEYS]
    for key, owner in foreign:
        if key in sec.data and key not in sec.known:
            sec.known.add(key)
            why = f'a key of mode "{owner}"' if owner else "nanny's rule has fixed constants"
            sec.error(key, f'not used by mode "{mode}" ({why})')


def check_real_servers(
    spec: AdaptiveSpec, path: str, weights: Sequence[int], problems: list[ck.Problem]
) -> None:
    """Weights too small to adapt (weight 1 with factors <= 1 always rounds to 1) are
    errors: adaptive weights would silently do nothing. `path` is the virtual server's,
    `weights` the configured weights of its real servers in order."""
    lo, hi = spec.params.min_weight, spec.params.max_weight
    for i, w in enumerate(weights, start=1):
        if w > 0 and effective_weight(w, adaptive=lo) == effective_weight(w, adaptive=hi):
            least = next(
                (
                    n
                    for n in range(1, 65536)
                    if effective_weight(n, adaptive=lo) != effective_weight(n, adaptive=hi)
                ),
                None,
            )
            if least is None:  # min_weight == max_weight: no weight moves (reported once)
                problems.append(
                    ck.Problem(
                        f"{path}.adaptive_weights.max_weight",
                        f"{hi:g} equals min_weight: adaptive weights could never change a "
                        "weight; set max_weight above min_weight",
                    )
                )
                return
            problems.append(
                ck.Problem(
                    f"{path}.real_server[{i}].weight",
                    f"{w} leaves adaptive weights no room (with min_weight {lo:g} and max_weight "
                    f"{hi:g} it stays {w}): use a weight of at least {least}, e.g. 100",
                )
            )
