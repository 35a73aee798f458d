"""A service-level objective on a summary.json figure: `metric op bound`, the metric named by its path
in summary.json (`fork_latency_us.p99<=2000`, `throughput_per_s.mean>=5000`, `request_latency_us.p999<5ms`,
`lock_wait_us.tasklist_lock.p99<=10`, `cpu_utilization<=0.8`). The paths an SLO may name come from
summary.json's schema (forksim.summary); the bound may carry the metric's unit (`<=2ms` for a *_us
metric, `>=5000/s` for a *_per_s metric). Errors name the `slo` argument (the CLI shows `--slo`).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError
from .summary import metric_fields, slo_fields
from .units import UnitError, format_rate, format_time_us, parse_rate, parse_time_us

__all__ = ["SLO", "parse_slo"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
_SLO_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*(.+?)\s*$")
# The fields an SLO may name, and their numeric fields, come from summary.json's schema (forksim.summary).
_KNOWN = metric_fields()


@dataclass(frozen=True)
class SLO:
    """`metric op bound`, e.g. fork_latency_us.p99 <= 2000."""

    metric: str
    op: str
    bound: float

    def __str__(self) -> str:
        top = self.metric.split(".")[0]
        if top.endswith("_us"):
            return f"{self.metric}{self.op}{format_time_us(self.bound)}"
        if top.endswith("_per_s"):
            return f"{self.metric}{self.op}{format_rate(self.bound)}"
        return f"{self.metric}{self.op}{self.bound:g}"

    @property
    def upper(self) -> bool:
        """True for an upper bound (smaller is better)."""
        return self.op in ("<=", "<")

    def holds(self, value: float | None) -> bool:
        return value is not None and math.isfinite(value) and _OPS[self.op](value, self.bound)

    def value(self, summary: dict[str, Any]) -> tuple[float | None, list[float] | None]:
        """The metric and its 95% CI (None where the summary has none) from a summary."""
        parts = self.metric.split(".")
        node: Any = summary
        parent: Any = None
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                here = ".".join(parts[:i]) or "summary.json"
                fields = sorted(k for k, v in node.items() if k != "ci95") if isinstance(node, dict) else []
                raise ConfigError(f"no field {part!r} in {here} (fields: {', '.join(fields)})", source="slo")
            parent, node = node, node[part]
        if node is None:
            return None, None
        if not isinstance(node, (int, float)) or isinstance(node, bool):
            fields = sorted(k for k in node if k != "ci95") if isinstance(node, dict) else []
            hint = f"; name one of its fields: {', '.join(f'{self.metric}.{f}' for f in fields)}" if fields else ""
            raise ConfigError(f"{self.metric!r} is not a number{hint}", source="slo")
        ci = None
        last = parts[-1]
        if isinstance(parent, dict):
            c = parent.get("ci95")
            if isinstance(c, dict):
                ci = c.get(last)
            elif isinstance(c, list) and last == "mean":
                ci = c
            if ci is None and len(parts) == 1:
                ci = summary.get(f"{last}_ci95")
        return float(node), (list(ci) if ci else None)


def parse_slo(text: str) -> SLO:
    """'fork_latency_us.p99<=2000' -> SLO. The bound may carry a unit matching the metric
    (`<=2ms` for a *_us metric, `>=5000/s` for a *_per_s metric)."""
    m = _SLO_RE.match(text or "")
    if not m:
        raise ConfigError(
            f"an SLO looks like METRIC OP NUMBER, e.g. 'fork_latency_us.p99<=2000' or "
            f"'throughput_per_s.mean>=5000' (OP one of <=, >=, <, >), got {text!r}", source="slo")
    metric, op, raw = m.groups()
    top = metric.split(".")[0]
    if top not in _KNOWN:
        raise ConfigError(f"unknown metric {top!r} (summary fields: {', '.join(_KNOWN)})", source="slo")
    parts = metric.split(".")
    fields = slo_fields(top)
    if fields == ():
        if len(parts) != 1:
            raise ConfigError(f"{top!r} is a number with no fields (use '{top}{op}...')", source="slo")
    elif fields is not None and (len(parts) != 2 or parts[1] not in fields):
        raise ConfigError(f"{metric!r} is not a summary number; name one of: "
                          f"{', '.join(f'{top}.{f}' for f in fields)}", source="slo")
    try:
        bound = float(raw)
    except ValueError:
        try:
            if metric.split(".")[0].endswith("_us"):
                bound = parse_time_us(raw)
            elif metric.split(".")[0].endswith("_per_s"):
                bound = parse_rate(raw)
            else:
                raise UnitError(f"{raw!r} is not a number")
        except UnitError as exc:
            raise ConfigError(f"bad bound in {text!r}: {exc}", source="slo") from None
    if not math.isfinite(bound):
        raise ConfigError(f"the bound must be a finite number, got {raw!r}", source="slo")
    return SLO(metric, op, bound)
