"""Statistics of a run: percentiles of the pooled samples with block-bootstrap 95% intervals, the
rule that refuses a tail percentile resting on too few samples, and Student-t intervals across
replications kept inside the quantity's support.

Why a bootstrap and not a t-interval across replications: a latency percentile is not normal
across two or three replications (its spread is set by a handful of tail samples), and a t-interval
of positive quantities runs below zero (clone-kinds, 2 replications: p99 -4,653 .. 44,035 us). A
percentile-bootstrap interval is made of resampled percentiles, each one a sample value, so it stays
inside the data. Samples within a replication are correlated (a fork that waits behind another makes
the next wait too), so whole blocks are resampled, never single samples: each replication when
there are at least `MIN_BLOCKS`, else `MIN_BLOCKS` contiguous batches (in entry order) split across
the replications (batch means; an assumption: a batch is long against the correlation time).
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
from scipy.special import stdtrit  # Student's t quantile; scipy.stats would cost 50 MB to import

__all__ = [
    "PERCENTILES", "TAIL_PERCENTILES", "MIN_BEYOND", "MIN_BLOCKS", "RESAMPLES",
    "blocks", "bootstrap_ci95", "beyond", "refusal", "t_ci95", "stream",
]

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
# A tail percentile is given only when at least MIN_BEYOND samples lie above it: p99 needs about
# 1,000 samples, p99.9 about 10,000. With fewer, its upper 95% bound is the sample maximum or beyond
# (an order-statistic interval for p99 needs ~369 samples to close inside the data, p99.9 ~3,700),
# and the value moves with every extra tail sample.
TAIL_PERCENTILES = ("p99", "p999")
MIN_BEYOND = 10
MIN_BLOCKS = 20  # resampled blocks: replications, or batches of them when there are fewer
RESAMPLES = 1000  # bootstrap resamples (percentile intervals want ~1,000: Efron & Tibshirani 1993, 19.3)
_TAG = 0x626F6F74  # "boot": the bootstrap's streams never coincide with a replication's


def stream(seed: int | None, name: str, replications: Sequence[int]) -> np.random.Generator:
    """The bootstrap's random stream for one metric: a function of the experiment's seed, the metric's
    name and the replications summarised only, so one seed gives byte-identical summaries."""
    key = [_TAG, zlib.crc32(name.encode()), *[int(r) for r in replications]]
    return np.random.default_rng(np.random.SeedSequence(0 if seed is None else int(seed), spawn_key=key))


def blocks(per_rep: Sequence[np.ndarray], min_blocks: int = MIN_BLOCKS) -> list[np.ndarray]:
    """The resampling blocks: each replication's samples (in entry order), split into contiguous
    batches when there are fewer than `min_blocks` replications; empty ones left out."""
    reps = [np.asarray(a, dtype=float) for a in per_rep if len(a)]
    if not reps:
        return []
    per = max(1, math.ceil(min_blocks / len(reps)))
    return [b for a in reps for b in (np.array_split(a, per) if per > 1 else [a]) if len(b)]


def _weighted_quantiles(sorted_blocks: list[np.ndarray], pooled: np.ndarray, weights: np.ndarray,
                        qs: Sequence[float]) -> np.ndarray:
    """For each resample (a row of block multiplicities) and each q, the smallest pooled value whose
    weighted count of samples at or below it reaches q x the resample's size (inverted CDF), by
    bisection over the pooled order statistics, all resamples at once. The bisection starts from each
    target's bracket on a grid of `_GRID` order statistics (the counts there for every resample in one
    matrix product): half the rounds on a million samples, and the same index (the smallest that
    reaches the target; the counts are whole numbers, exact in any order of summation)."""
    sizes = np.array([len(b) for b in sorted_blocks], dtype=float)
    total = weights @ sizes  # (R,)
    target = np.concatenate([q * total for q in qs])  # (len(qs) * R,)
    w = np.tile(weights, (len(qs), 1))
    lo, hi = _brackets(sorted_blocks, pooled, weights, target)
    while (lo < hi).any():
        mid = (lo + hi) // 2
        t = pooled[mid]
        count = np.zeros(len(target))
        for j, b in enumerate(sorted_blocks):
            count += w[:, j] * np.searchsorted(b, t, side="right")
        ok = count >= target
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid + 1)
    return pooled[lo].reshape(len(qs), -1)


_GRID = 1024  # order statistics _brackets counts at


def _brackets(sorted_blocks: list[np.ndarray], pooled: np.ndarray, weights: np.ndarray,
              target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target (the resamples' rows repeated per quantile), the range of pooled indices [lo, hi] that
    holds the smallest index whose weighted count reaches it (hi = the last index where none does): between
    the grid points on either side of the crossing."""
    last = len(pooled) - 1
    grid = np.unique(np.linspace(0, last, min(_GRID, last + 1)).astype(np.int64))  # ends at `last`
    at = pooled[grid]
    per_block = np.array([np.searchsorted(b, at, side="right") for b in sorted_blocks], dtype=float)  # (B, G)
    counts = weights @ per_block  # (R, G): whole numbers
    reps = len(weights)
    ok = counts[np.arange(len(target)) % reps] >= target[:, None]  # (len(target), G)
    first = ok.argmax(axis=1)  # the first grid point that reaches the target (0 where none does)
    reached = ok[np.arange(len(target)), first]
    hi = np.where(reached, grid[first], last)
    lo = np.where(reached, np.where(first > 0, grid[first - 1] + 1, 0), last)
    return lo.astype(np.int64), hi.astype(np.int64)


def bootstrap_ci95(per_rep: Sequence[np.ndarray], percentiles: dict[str, float], rng: np.random.Generator,
                   resamples: int = RESAMPLES) -> dict[str, list[float] | None]:
    """95% percentile-bootstrap intervals of the pooled mean ("mean") and the pooled percentiles,
    resampling whole blocks (see `blocks`). None everywhere with fewer than two blocks."""
    bl = blocks(per_rep)
    names = ["mean", *percentiles]
    if len(bl) < 2:
        return {k: None for k in names}
    weights = rng.multinomial(len(bl), np.full(len(bl), 1.0 / len(bl)), size=resamples).astype(float)
    sizes = np.array([len(b) for b in bl], dtype=float)
    sums = np.array([b.sum() for b in bl])
    out: dict[str, list[float] | None] = {}
    means = (weights @ sums) / (weights @ sizes)
    out["mean"] = [float(x) for x in np.percentile(means, [2.5, 97.5])]
    sorted_blocks = [np.sort(b) for b in bl]
    pooled = np.sort(np.concatenate(bl))
    qs = _weighted_quantiles(sorted_blocks, pooled, weights, [p / 100.0 for p in percentiles.values()])
    for name, row in zip(percentiles, qs):
        out[name] = [float(x) for x in np.percentile(row, [2.5, 97.5])]
    return out


def beyond(pooled: np.ndarray, value: float) -> int:
    """How many samples lie above `value` (the samples a tail percentile rests on)."""
    return int((pooled > value).sum())


def refusal(name: str, n: int, n_beyond: int) -> str | None:
    """Why a tail percentile is not given (None when it is)."""
    if name not in TAIL_PERCENTILES or n_beyond >= MIN_BEYOND:
        return None
    label = {"p99": "p99", "p999": "p99.9"}[name]
    return (f"{label} not given: {n_beyond} of {n:,} samples lie beyond it, fewer than {MIN_BEYOND} "
            f"(it needs about {round(MIN_BEYOND / (1 - PERCENTILES[name] / 100)):,} samples; "
            f"run longer or more replications)")


def t_ci95(values: Sequence[float], lower: float | None = None, upper: float | None = None) -> list[float] | None:
    """Student-t 95% interval of the mean across replications (None with fewer than two), cut to the
    quantity's support [lower, upper]: the true value lies inside it, so the cut keeps the coverage."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return None
    mean = float(v.mean())
    half = float(stdtrit(len(v) - 1, 0.975) * v.std(ddof=1) / math.sqrt(len(v)))
    lo, hi = mean - half, mean + half
    if lower is not None:
        lo = max(lo, lower)
    if upper is not None:
        hi = min(hi, upper)
    return [lo, hi]
