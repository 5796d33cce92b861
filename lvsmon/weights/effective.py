"""The effective weight: the one place where every per-server factor meets. Pure.

    effective = configured x health x slow_start x adaptive

- operator: a temporary weight set from the status page (lvsmon.statuspage.admin)
  replaces the configured one while it lasts; 0 drains the server (connections
  finish, none are scheduled), like a configured weight of 0.

- health: 1 when the health verdict is up, 0 when down (removed or quiesced:
  lvsmon.desired decides which, by the virtual server's setting).
- slow_start: the ramp of a returning server, a fraction in (0, 1].
- adaptive: the control law's factor (lvsmon.weights.control), 1.0 without
  adaptive weights.

Rounding, once, on the whole product: 0 stays 0 (a configured weight of 0,
a down server, an agent's "drain"); any positive product is rounded half up
and is at least 1, so a slow-starting or adapted server is never quiesced by
rounding; the result is capped at IPVS's 65535.

Slow-start scale: a ramp from weight 1 is no ramp when the weights are small.
Under wlc, A and B at weight 1 holding 300 connections each and a returning
C at weight 1 holding none: C still wins every decision until it holds 300
(the flood the LVS documents warn about). So while any real server of a
virtual server ramps, and its scheduler compares weights only as ratios
(SCALED_SCHEDULERS), every weight of that virtual server is multiplied by
`ramp_scale()` (up to 100, within 65535): the ratios of the servers in full
service are unchanged, and the ramp gets ~100 steps. Hash and limit
schedulers (sh dh mh: bucket counts; ovf: a connection limit; fo, rr, lc:
only the order or zero matters) are never scaled.

Group rule: adaptive weights never empty a virtual server. When every real
server the health checks keep in service has an adaptive factor of 0 (all
agents say "drain", or min_weight = 0 and all saturated), the adaptive
factors of that virtual server are ignored (1.0): taking a whole service out
is for health checks and operators, not for load signals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsmon.model import MAX_WEIGHT, DestKey, ServiceKey, VirtualServer

Key = tuple[ServiceKey, DestKey]

# Schedulers that use weights only as ratios between real servers.
SCALED_SCHEDULERS = frozenset({"wrr", "wlc", "sed", "nq", "lblc", "lblcr", "twos"})
RAMP_STEPS = 100


def ramp_scale(vs: VirtualServer, ramping: bool) -> int:
    """The factor every weight of `vs` is multiplied by while one of its servers ramps."""
    if not ramping or vs.scheduler not in SCALED_SCHEDULERS:
        return 1
    top = max((rs.weight for rs in vs.real_servers), default=0)
    return max(1, min(RAMP_STEPS, MAX_WEIGHT // max(top, 1)))


def effective_weight(
    configured: int, *, up: bool = True, slow_start: float = 1.0, adaptive: float = 1.0
) -> int:
    if configured <= 0 or not up or adaptive <= 0:
        return 0  # judged on the factors: a product of tiny ones may underflow to 0.0
    # slow start never zeroes a weight: a server that has just come back (fraction 0)
    # gets weight 1, so it receives some work to show it copes
    return min(MAX_WEIGHT, max(1, int(configured * slow_start * adaptive + 0.5)))


@dataclass(frozen=True, slots=True)
class WeightParts:
    """One real server's weight, factor by factor: the columns of `lvsmon status`."""

    configured: int
    up: bool = True
    slow_start: float = 1.0
    adaptive: float | None = None  # None: the virtual server has no adaptive weights
    base: int | None = None  # health's weight when it is not `configured`: see weight_parts
    scale: int = 1  # ramp_scale() of the virtual server while one of its servers ramps
    operator: int | None = None  # a temporary weight from the status page (0: drained)

    @property
    def effective(self) -> int:
        adaptive = 1.0 if self.adaptive is None else self.adaptive
        start = self.configured if self.base is None else self.base
        if self.operator is not None:
            start = self.operator
        return effective_weight(
            start * self.scale, up=self.up, slow_start=self.slow_start, adaptive=adaptive
        )

    @property
    def ramp(self) -> float:
        """Health's share of the weight: the slow-start fraction (or base / configured)."""
        if self.base is None or not self.configured:
            return self.slow_start
        return self.slow_start * self.base / self.configured

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "configured": self.configured,
            "health": "up" if self.up else "down",
            "slow_start": self.ramp,
            "adaptive": self.adaptive,
            "effective": self.effective,
        }
        if self.operator is not None:
            out["operator"] = self.operator
        return out

    def columns(self) -> dict[str, str]:
        """Text cells: configured, health, slow-start, adaptive, effective ("-": no effect);
        and "operator" while a temporary weight from the status page holds."""
        ramp = "-" if self.ramp == 1.0 else f"{self.ramp:.0%}"
        adaptive = "-" if self.adaptive is None else f"{self.adaptive:.2f}"
        cells = {
            "configured": str(self.configured),
            "health": "up" if self.up else "down",
            "slow_start": ramp,
            "adaptive": adaptive,
            "effective": str(self.effective),
        }
        if self.operator is not None:
            cells["operator"] = str(self.operator)
        return cells


def weight_parts(
    services: Iterable[VirtualServer],
    *,
    down: Iterable[Key] = (),
    slow_start: Mapping[Key, float] | None = None,
    adaptive: Mapping[Key, float] | None = None,
    adaptive_services: Iterable[ServiceKey] = (),
    base: Mapping[Key, int] | None = None,
    operator: Mapping[Key, int] | None = None,
) -> dict[Key, WeightParts]:
    """Every configured real server's parts, with the group rule applied.

    `down`: out of service by the health verdict. `slow_start`: ramp fractions.
    `base`: a weight that replaces the configured one before the factors (an exec
    check's dynamic weight). `adaptive_services`:
    virtual servers with adaptive weights (their servers without a factor yet
    show 1.00 rather than "-"). `operator`: temporary weights from the status page."""
    down_set, ramps, factors = set(down), slow_start or {}, adaptive or {}
    bases, manual = base or {}, operator or {}
    with_adaptive = set(adaptive_services) | {svc for svc, _ in factors}
    out: dict[Key, WeightParts] = {}
    for vs in services:
        keys = [(vs.key, rs.key) for rs in vs.real_servers]
        in_service = [k for k in keys if k not in down_set]
        ignore = bool(in_service) and all(factors.get(k, 1.0) <= 0 for k in in_service)
        scale = ramp_scale(vs, any(ramps.get(k, 1.0) < 1.0 for k in in_service))
        for rs, key in zip(vs.real_servers, keys, strict=True):
            adapt: float | None = None
            if vs.key in with_adaptive:
                adapt = 1.0 if ignore else factors.get(key, 1.0)
            out[key] = WeightParts(
                rs.weight,
                key not in down_set,
                ramps.get(key, 1.0),
                adapt,
                bases.get(key),
                scale,
                manual.get(key),
            )
    return out


def from_verdicts(
    services: Iterable[VirtualServer],
    *,
    down: Iterable[Key] = (),
    ramps: Mapping[Key, float] | None = None,
    dynamic: Mapping[Key, int] | None = None,
    adaptive: Mapping[Key, float] | None = None,
    adaptive_services: Iterable[ServiceKey] = (),
    operator: Mapping[Key, int] | None = None,
) -> dict[Key, WeightParts]:
    """The daemon's one composition of the health verdicts (HealthMonitor.down() and
    .weights(): out of service, slow-start fractions, exec checks' dynamic weights) and
    the adaptive factors, and the operator's drains and temporary weights (the status
    page, lvsmon.statuspage.admin) into weight parts. Everything that programs a weight
    goes through here, then `table_weights()`."""
    return weight_parts(
        services,
        down=down,
        slow_start=ramps,
        base=dynamic,
        adaptive=adaptive,
        adaptive_services=adaptive_services,
        operator=operator,
    )


def table_weights(parts: Mapping[Key, WeightParts]) -> dict[Key, int | None]:
    """For lvsmon.desired.desired_table: None = out of service, or the weight to program
    where it differs from the configured one."""
    out: dict[Key, int | None] = {}
    for key, p in parts.items():
        if not p.up:
            out[key] = None
        elif p.effective != p.configured:
            out[key] = p.effective
    return out
