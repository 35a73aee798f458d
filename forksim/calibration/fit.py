"""Fit stage costs: a non-negative linear model of the median in the image, plus residuals.

    median_us = fixed + per_vma*vmas + per_anon_vma*anon_vmas + per_pte*ptes + per_pmd*pmds
                (+ per_thread*threads) (+ per_pte_miss*ptes*miss) (+ per_vma_log*vmas*log2(vmas))

(`miss`: the share of the walk of the configuration's image that misses the caches, from the measured
cache curve, profile_terms.CacheCurve; a fit that names the term fits a per-page cost that bends where
the walk outgrows the caches, still linear in its coefficients)

fitted by non-negative least squares (`scipy.optimize.nnls`) on the per-configuration medians,
each row weighted by 1/median so that small images count as much as large ones (relative error).
Residuals: the distribution of sample / median-of-its-configuration pooled over configurations,
as empirical quantiles at the tail-dense PROBABILITIES (every 5% to p95, every 1% to p99, then p99.5,
p99.9 and the maximum: an outlier of n samples keeps about its 1/n of the mass; on an evenly spaced
grid whose top point is read as the maximum, one outlier in 60 was drawn across the whole top 5%) and
as a lognormal sigma. Diagnostics: R^2 (on medians), the relative
error per configuration, and leave-out cross-validation (refit without some configurations,
predict their medians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import nnls

from ..profile import StageCost, vma_log

# where a residual is kept: every 5% up to p95, every 1% to p99, then the tail (a rare stall then comes out
# about as often as it was measured, not smeared over a 5% step)
PROBABILITIES = tuple(round(x, 3) for x in np.linspace(0.0, 0.95, 20)) + (0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)

__all__ = ["TERMS", "WALK_TERMS", "PROBABILITIES", "Config", "LinearFit", "fit_linear", "fit_linear_through", "residual_quantiles", "typical_quantiles", "lognormal_sigma",
           "cross_validate", "stage_cost", "stage_json", "median"]

TERMS = ("fixed_us", "per_vma_us", "per_anon_vma_us", "per_pte_us", "per_pmd_us", "per_thread_us",
         "per_pte_miss_us", "per_vma_log_us")
# terms a StageCost leaves out where they are fitted at 0 (a file keeps the schema a profile without them has)
_OPTIONAL_TERMS = ("per_pte_miss_us", "per_vma_log_us")
# the terms of the image's walk: with the cache curve's miss term when a curve was measured
WALK_TERMS = TERMS[:5] + ("per_pte_miss_us",)


@dataclass
class Config:
    """One measured configuration: its image shape and its raw samples (microseconds)."""

    vmas: float = 0
    anon_vmas: float = 0
    ptes: float = 0
    pmds: float = 0
    threads: float = 1
    samples: Sequence[float] = field(default_factory=list)
    label: str = ""
    miss: float = 0.0  # the share of this image's walk that misses the caches (CacheCurve.walk_miss)
    scatter: float = 0.0  # the image's measured scatter (layout.py; 0 where not measured)
    after_break: tuple[float, ...] = ()  # its measured shares within a window after a break (lab.pagemap; () not read)

    def features(self, terms: Sequence[str]) -> np.ndarray:
        vals = {"fixed_us": 1.0, "per_vma_us": self.vmas, "per_anon_vma_us": self.anon_vmas,
                "per_pte_us": self.ptes, "per_pmd_us": self.pmds, "per_thread_us": self.threads,
                "per_pte_miss_us": self.ptes * self.miss, "per_vma_log_us": vma_log(self.vmas)}
        return np.array([float(vals[t]) for t in terms])

    @property
    def median(self) -> float:
        return float(np.median(np.asarray(self.samples, dtype=float)))


def median(x: Iterable[float]) -> float:
    a = np.asarray(list(x), dtype=float)
    return float(np.median(a)) if a.size else float("nan")


@dataclass
class LinearFit:
    coef: dict[str, float]
    r2: float
    rel_errors: dict[str, float]
    n_configs: int
    n_samples: int

    def predict(self, cfg: Config) -> float:
        return float(sum(self.coef.get(t, 0.0) * v for t, v in zip(TERMS, cfg.features(TERMS))))


def fit_linear(configs: Sequence[Config], terms: Sequence[str] = TERMS[:5], weighted: bool = True) -> LinearFit:
    """NNLS of the configurations' medians on `terms` (unused terms are 0)."""
    cfgs = [c for c in configs if len(c.samples)]
    if not cfgs:
        raise ValueError("no samples to fit")
    X = np.array([c.features(terms) for c in cfgs])
    y = np.array([c.median for c in cfgs])
    w = 1.0 / np.maximum(np.abs(y), 1e-9) if weighted else np.ones_like(y)
    # scale columns so that NNLS is well conditioned whatever the units (ptes ~ 1e6, fixed ~ 1)
    scale = np.maximum(np.abs(X).max(axis=0), 1e-12)
    beta, _ = nnls(X * w[:, None] / scale, y * w)
    beta = beta / scale
    pred = X @ beta
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-12 else 0.0)
    coef = {t: 0.0 for t in TERMS}
    coef.update({t: float(b) for t, b in zip(terms, beta)})
    rel = {(c.label or str(i)): float((p - c.median) / c.median) if c.median else 0.0
           for i, (c, p) in enumerate(zip(cfgs, pred))}
    return LinearFit(coef, r2, rel, len(cfgs), int(sum(len(c.samples) for c in cfgs)))


def fit_linear_through(configs: Sequence[Config], anchor: Config, terms: Sequence[str] = TERMS[:5]) -> LinearFit:
    """NNLS as `fit_linear`, constrained to pass through the anchor configuration's median: the slopes are
    fitted to the other configurations' differences from the anchor (each weighted by 1/its median, as
    there), and the fixed part is what the anchor's median leaves. For a reference image whose cost every
    other fit builds on (the empty image: the families and the fork path's fixed parts), so that a slope
    bent by configurations far from it (thousands of VMAs) cannot move its prediction. Falls back to
    `fit_linear` when the anchor would need a negative fixed part."""
    cfgs = [c for c in configs if len(c.samples)]
    free = [t for t in terms if t != "fixed_us"]
    if "fixed_us" not in terms or not free or not len(anchor.samples) or len(cfgs) < 2:
        return fit_linear(cfgs, terms)
    x0, y0 = anchor.features(free), anchor.median
    others = [c for c in cfgs if c is not anchor]
    X = np.array([c.features(free) for c in others]) - x0
    y = np.array([c.median for c in others]) - y0
    w = 1.0 / np.maximum(np.abs(y + y0), 1e-9)
    scale = np.maximum(np.abs(X).max(axis=0), 1e-12)
    beta, _ = nnls(X * w[:, None] / scale, y * w)
    beta = beta / scale
    fixed = y0 - float(x0 @ beta)
    if fixed < 0:
        return fit_linear(cfgs, terms)
    coef = {t: 0.0 for t in TERMS}
    coef.update({t: float(b) for t, b in zip(free, beta)})
    coef["fixed_us"] = fixed
    Xall = np.array([c.features(TERMS) for c in cfgs])
    yall = np.array([c.median for c in cfgs])
    pred = Xall @ np.array([coef[t] for t in TERMS])
    ss_res, ss_tot = float(np.sum((yall - pred) ** 2)), float(np.sum((yall - yall.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    rel = {(c.label or str(i)): float((p - c.median) / c.median) if c.median else 0.0
           for i, (c, p) in enumerate(zip(cfgs, pred))}
    return LinearFit(coef, r2, rel, len(cfgs), int(sum(len(c.samples) for c in cfgs)))


def residual_quantiles(configs: Sequence[Config], pred: Any = None) -> list[float]:
    """Pooled ratios sample / median of its configuration (or / pred(cfg)) at PROBABILITIES."""
    n = len(PROBABILITIES)
    ratios = []
    for c in configs:
        s = np.asarray(c.samples, dtype=float)
        if not s.size:
            continue
        m = pred(c) if pred else float(np.median(s))
        if m > 0:
            ratios.append(s / m)
    if not ratios:
        return [1.0] * n
    r = np.concatenate(ratios)
    r = r[np.isfinite(r) & (r > 0)]
    if not r.size:
        return [1.0] * n
    q = np.maximum.accumulate(np.maximum(np.quantile(r, PROBABILITIES), 1e-3))
    return [round(float(v), 5) for v in q]


def typical_quantiles(configs: Sequence[Config], min_samples: int = 20) -> list[float] | None:
    """Like residual_quantiles, but per configuration (sample / its median) and then the median over the
    configurations at each probability: the spread of a typical configuration, which one configuration with a
    heavy tail of its own (a host hiccup in its rounds) does not set. None with fewer than two configurations of
    at least min_samples samples."""
    per = []
    for c in configs:
        s = np.asarray(c.samples, dtype=float)
        s = s[np.isfinite(s) & (s > 0)]
        if s.size >= min_samples:
            per.append(np.quantile(s / np.median(s), PROBABILITIES))
    if len(per) < 2:
        return None
    q = np.maximum.accumulate(np.maximum(np.median(np.array(per), axis=0), 1e-3))
    return [round(float(v), 5) for v in q]


def lognormal_sigma(configs: Sequence[Config]) -> float:
    """Robust lognormal sigma of sample/median: the interquartile range of log ratios / 1.349."""
    logs = []
    for c in configs:
        s = np.asarray(c.samples, dtype=float)
        s = s[s > 0]
        if s.size:
            logs.append(np.log(s / np.median(s)))
    if not logs:
        return 0.0
    lr = np.concatenate(logs)
    q1, q3 = np.quantile(lr, [0.25, 0.75])
    return float(min(5.0, max(0.0, (q3 - q1) / 1.349)))


def cross_validate(configs: Sequence[Config], terms: Sequence[str] = TERMS[:5],
                   folds: Sequence[Sequence[int]] | None = None) -> list[dict[str, Any]]:
    """Leave-out validation: for each fold (indices of configs), refit without them and report the
    relative error of the predicted p50. Default: leave one configuration out at a time (configs
    whose removal leaves a term unidentifiable still get a prediction, with NNLS picking zero)."""
    cfgs = [c for c in configs if len(c.samples)]
    folds = folds or [[i] for i in range(len(cfgs))]
    out = []
    for fold in folds:
        train = [c for i, c in enumerate(cfgs) if i not in fold]
        if len(train) < 2:
            continue
        f = fit_linear(train, terms)
        for i in fold:
            c = cfgs[i]
            p = f.predict(c)
            out.append({"config": c.label or str(i), "measured_p50_us": round(c.median, 3),
                        "predicted_p50_us": round(p, 3),
                        "rel_error": round((p - c.median) / c.median, 4) if c.median else None})
    return out


def stage_cost(coef: dict[str, float] | None = None, *, fixed_us: float | None = None,
               quantiles: list[float] | None = None, sigma: float | None = None, source: str,
               cache_curve: dict[str, Any] | None = None) -> StageCost:
    """A profile's StageCost from coefficients and a residual (6 significant digits, negatives to 0);
    the miss term only where it is fitted above 0, with the cache curve it multiplies."""
    d: dict[str, Any] = {t: 0.0 for t in TERMS}
    if coef:
        d.update({t: float(max(0.0, v)) for t, v in coef.items() if t in TERMS})
    if fixed_us is not None:
        d["fixed_us"] = float(max(0.0, fixed_us))
    for t in TERMS:
        v = d[t]
        d[t] = float(f"{v:.6g}") if math.isfinite(v) else 0.0
    if d["per_pte_miss_us"] > 0.0 and cache_curve is not None:
        d["cache_curve"] = cache_curve
    else:
        d["per_pte_miss_us"] = 0.0  # without its curve the term prices nothing
    for t in _OPTIONAL_TERMS:
        if not d[t]:
            del d[t]
    if quantiles and quantiles[-1] > quantiles[0]:
        if len(quantiles) != len(PROBABILITIES):
            raise ValueError(f"a residual has {len(quantiles)} quantiles, not one per PROBABILITIES")
        d["residual"] = {"family": "empirical", "quantiles": quantiles, "probabilities": list(PROBABILITIES)}
    elif sigma is not None:
        d["residual"] = {"family": "lognormal", "sigma": round(float(sigma), 4)}
    else:
        d["residual"] = {"family": "none"}
    d["source"] = source
    return StageCost.model_validate(d)


def stage_json(cost: StageCost) -> dict[str, Any]:
    """A StageCost as the profile file writes it: the terms, the residual's given fields, the source."""
    return cost.model_dump(mode="json", exclude_unset=True)
