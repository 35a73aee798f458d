"""Answers at a stated precision: replications are added until every watched metric's 95% interval is
narrow enough, and the warm-up is chosen by a stated rule.

The stopping rule is JMT's: a measure is done when its 95% confidence interval's half-width is at
most the requested fraction of its estimate (relative precision); the run stops when every watched
measure is done, or when the replication cap is reached, and says which. Replications are added in
batches of a fixed size (run in parallel where there are workers), so the answer does not depend on
how many workers ran it: batch k always holds the same replication indices and seeds.

The warm-up rule is MSER-5 (White 1997; White, Cobb & Spratt 2000): batch the output series in
means of 5, and truncate the prefix d that minimises the squared standard error of the remaining
mean, sum((Y_i - mean(Y[d:]))^2) / (m - d)^2, with d searched over the first half only (beyond it
the statistic is unreliable). It is applied to the fork() latency series of a pilot replication run
without warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DEFAULT_METRICS", "Precision", "MetricPrecision", "Stopping", "parse_precision", "relative_half_width",
           "mser5", "run_to_precision", "warmup_check"]

# What --precision watches unless told otherwise: the creation rate and the tail users plan for.
DEFAULT_METRICS = ("throughput_per_s.mean", "fork_latency_us.p99")
DEFAULT_MAX_REPLICATIONS = 200


def parse_precision(value: str | float) -> float:
    """'5%' or 0.05 -> 0.05; refuses what is not a fraction in (0, 1)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            frac = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"precision {value!r}: give a relative half-width such as \"5%\" or 0.05") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        frac = float(value)
    else:
        raise ValueError(f"precision {value!r}: give a relative half-width such as \"5%\" or 0.05")
    if not (0.0 < frac < 1.0) or math.isnan(frac):
        raise ValueError(f"precision {value!r}: must lie strictly between 0% and 100% (e.g. \"5%\")")
    return frac


def _metric(summary: dict[str, Any], path: str) -> tuple[float | None, list[float] | None]:
    """The estimate and its 95% interval at a dotted path: `throughput_per_s.mean` (a rate:
    {mean, ci95}) or `fork_latency_us.p99` (a latency: {p99, ci95: {p99: [lo, hi]}})."""
    head, _, stat = path.rpartition(".")
    if not head:  # a top-level figure (cpu_utilization): its interval sits beside it
        return summary.get(stat), summary.get(f"{stat}_ci95")
    node: Any = summary
    for part in head.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None, None
    ci = node.get("ci95")
    if isinstance(ci, dict):
        ci = ci.get(stat)
    return node.get(stat), ci


def relative_half_width(summary: dict[str, Any], path: str) -> float | None:
    """Half the 95% interval's width over the estimate, or None when either is missing (a tail
    percentile refused on too few samples, a single replication's rate)."""
    est, ci = _metric(summary, path)
    if est is None or not ci or ci[0] is None or ci[1] is None or not math.isfinite(est) or est == 0:
        return None
    return (float(ci[1]) - float(ci[0])) / 2.0 / abs(float(est))


@dataclass(frozen=True)
class Precision:
    """The request: every metric's relative half-width at most `target`, within `max_replications`."""

    target: float
    metrics: tuple[str, ...] = DEFAULT_METRICS
    max_replications: int = DEFAULT_MAX_REPLICATIONS
    min_replications: int = 2  # a t-interval across replications needs two
    batch: int = 4  # replications added per step (fixed, so the stopping point never depends on workers)
    # A decision that ends the run before the precision does (plan: the SLO metric's interval lies
    # wholly on one side of the bound): a sequential test, stopping as soon as the answer is known.
    decided: Callable[[dict[str, Any]], bool] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"precision target {self.target} must lie in (0, 1)")
        if self.max_replications < self.min_replications:
            raise ValueError(f"max_replications {self.max_replications} is below {self.min_replications}")


@dataclass
class MetricPrecision:
    metric: str
    reached: float | None  # the relative half-width reached (None: no interval yet)
    done: bool


@dataclass
class Stopping:
    """Why and where the run stopped: the summary.json `precision` section."""

    target: float
    replications: int
    metrics: list[MetricPrecision] = field(default_factory=list)
    reason: str = ""

    def check(self, summary: dict[str, Any], names: Sequence[str]) -> bool:
        self.metrics = []
        for name in names:
            hw = relative_half_width(summary, name)
            self.metrics.append(MetricPrecision(name, hw, hw is not None and hw <= self.target))
        return all(m.done for m in self.metrics)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "replications": self.replications, "stopped": self.reason,
                "reached": {m.metric: (None if m.reached is None else round(m.reached, 6)) for m in self.metrics},
                "done": {m.metric: m.done for m in self.metrics}}


def run_to_precision(precision: Precision, run_batch: Callable[[int, int], list[Any]],
                     summarize: Callable[[list[Any]], dict[str, Any]]) -> tuple[list[Any], dict[str, Any], Stopping]:
    """Run replications [0, n) in batches of `precision.batch` (`run_batch(start, stop)` returns their
    results, in index order) until `precision` holds or its cap; returns the results, the last summary
    and the stopping record."""
    batch = max(1, int(precision.batch))
    results: list[Any] = []
    stop = Stopping(precision.target, 0)
    summary: dict[str, Any] = {}
    while True:
        want = max(precision.min_replications, len(results) + batch)
        want = min(want, precision.max_replications)
        results.extend(run_batch(len(results), want))
        stop.replications = len(results)
        summary = summarize(results)
        if stop.check(summary, precision.metrics):
            stop.reason = f"reached: every metric within {precision.target:.1%} after {len(results)} replications"
            break
        if precision.decided is not None and precision.decided(summary):
            stop.reason = f"decided: the question is answered after {len(results)} replications"
            break
        if len(results) >= precision.max_replications:
            missing = ", ".join(m.metric for m in stop.metrics if not m.done)
            stop.reason = (f"cap: {precision.max_replications} replications reached without {missing} "
                           f"within {precision.target:.1%} (raise experiment.max_replications or run longer)")
            break
    return results, summary, stop


def mser5(series: Sequence[float] | np.ndarray, batch: int = 5) -> int:
    """MSER-5's truncation point: how many leading observations to discard (a multiple of `batch`).
    0 when the series is too short to judge (fewer than 4 batches)."""
    x = np.asarray(series, dtype=float)
    m = len(x) // batch
    if m < 4:
        return 0
    y = x[: m * batch].reshape(m, batch).mean(axis=1)
    # Suffix sums give every candidate d's mean and sum of squares in one pass.
    s1 = np.cumsum(y[::-1])[::-1]
    s2 = np.cumsum((y * y)[::-1])[::-1]
    d = np.arange(m // 2 + 1)
    n = m - d
    sse = s2[d] - s1[d] ** 2 / n
    return int(np.argmin(sse / n.astype(float) ** 2)) * batch


def warmup_check(records, warmup_us: float) -> dict[str, Any]:
    """MSER-5 on each replication's fork() latency series (in entry order, warm-up creations
    included): where the rule would end the warm-up, against the configured `warmup_us`."""
    cuts: list[float] = []
    for _, rep in records.groupby("replication", sort=True):
        rep = rep.sort_values("start_us")
        lat = rep["fork_latency_us"].to_numpy(dtype=float)
        ok = np.isfinite(lat)
        cut = mser5(lat[ok])
        starts = rep["start_us"].to_numpy(dtype=float)[ok]
        cuts.append(float(starts[cut]) if 0 < cut < len(starts) else 0.0)
    median = float(np.median(cuts)) if cuts else None
    return {"rule": "MSER-5 on each replication's fork() latency series (White 1997)",
            "configured_us": warmup_us,
            "mser5_us_median": None if median is None else round(median, 3),
            "mser5_us_max": round(max(cuts), 3) if cuts else None,
            "enough": None if median is None else median <= warmup_us}
