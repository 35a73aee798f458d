"""The cost model's terms: a stage's cost linear in the parent's image with a residual around its
median, the image shape it is priced at, the scheduler's costs, and a measured fraction.

    median_us = fixed_us + per_vma_us*vmas + per_anon_vma_us*anon_vmas + per_pte_us*ptes
                + per_pmd_us*pmds + per_thread_us*threads
                (+ per_vma_log_us*vmas*log2(vmas): each VMA's insertion into an interval tree, StageCost)
                (+ per_pte_miss_us*ptes*miss(walk bytes): a walk larger than the caches, CacheCurve)
                (+ per_pte_scatter_us*ptes*scatter_ramp(scatter, scatter_window)*scatter_curve.miss(walk bytes):
                 an image whose physical pages are not in its virtual order, ImageShape.scatter)

Part of a profile (forksim.profile re-exports every name here).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["TERMS", "vma_log", "scatter_ramp", "Residual", "CacheCurve", "StageCost", "IdleWakeCurve", "IpiSendCurve",
           "SchedulerCosts", "DEFAULT_TIMER_SLACK_US", "Fraction", "Spread", "Scatter", "ImageShape"]


def scatter_ramp(scatter: float, window: float = 1.0) -> float:
    """The share of an image's pages that a walk in virtual order reaches within `window` pages after a break in
    the frame order (breaks independent, one per consecutive pair with probability `scatter`): 1 - (1 - scatter)
    ** window. A break restarts the hardware prefetcher's stream, whose first pages are demand misses; a window
    of 1 is the share of pages out of order itself (`scatter`)."""
    s = min(max(scatter, 0.0), 1.0)
    return s if window == 1.0 else 1.0 - (1.0 - s) ** window


class Residual(BaseModel):
    """Multiplicative noise around the fitted median: lognormal(0, sigma) or empirical quantiles."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: Literal["lognormal", "empirical", "none"] = "lognormal"
    sigma: float = Field(default=0.0, ge=0.0, le=5.0)
    quantiles: list[float] | None = Field(
        default=None, description="ratios measured/median at `probabilities` (default: evenly spaced 0..1)"
    )
    probabilities: list[float] | None = Field(
        default=None, description="the probabilities of `quantiles`, 0 .. 1 increasing: denser in a long tail, "
                                  "so that one extreme sample is drawn about as often as it was measured"
    )

    @model_validator(mode="after")
    def _check(self) -> "Residual":
        if self.family == "empirical":
            q = self.quantiles
            if not q or len(q) < 3:
                raise ValueError("an empirical residual needs at least 3 quantiles")
            if any(not math.isfinite(x) or x <= 0 for x in q):
                raise ValueError("empirical residual quantiles must be positive finite ratios")
            if any(b < a for a, b in zip(q, q[1:])):
                raise ValueError("empirical residual quantiles must be non-decreasing")
            p = self.probabilities
            if p is not None and (len(p) != len(q) or p[0] != 0.0 or p[-1] != 1.0
                                  or any(b <= a for a, b in zip(p, p[1:]))):
                raise ValueError("empirical residual probabilities must match the quantiles, rise strictly "
                                 "and run from 0 to 1")
        elif self.probabilities is not None:
            raise ValueError("probabilities belong to an empirical residual")
        return self

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(self.quantiles, dtype=float)
        p = np.linspace(0.0, 1.0, len(q)) if self.probabilities is None else np.asarray(self.probabilities, dtype=float)
        return p, q

    def mean(self) -> float:
        """The residual's mean (its median is 1)."""
        if self.family == "lognormal":
            return math.exp(self.sigma**2 / 2)
        if self.family == "empirical":
            p, q = self._grid()  # piecewise-linear inverse CDF: the mean is its integral
            return float(np.sum(np.diff(p) * (q[1:] + q[:-1]) / 2))
        return 1.0

    def cdf(self, ratio: float) -> float:
        """The share of draws at or under `ratio` (over the median)."""
        if self.family == "none" or (self.family == "lognormal" and self.sigma == 0.0):
            return 1.0 if ratio >= 1.0 else 0.0
        if self.family == "lognormal":
            return 0.5 * (1.0 + math.erf(math.log(ratio) / (self.sigma * math.sqrt(2.0)))) if ratio > 0 else 0.0
        p, q = self._grid()  # the piecewise-linear inverse CDF, read the other way
        return float(np.interp(ratio, q, p))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.family == "none" or (self.family == "lognormal" and self.sigma == 0.0):
            return np.ones(n)
        if self.family == "lognormal":
            return rng.lognormal(0.0, self.sigma, n)
        p, q = self._grid()
        return np.interp(rng.random(n), p, q)


# The cost terms every stage carries (a what-if scales one of them: `stage.term`).
TERMS = ("fixed_us", "per_vma_us", "per_anon_vma_us", "per_pte_us", "per_pmd_us", "per_thread_us", "per_vma_log_us")
_TERMS = TERMS


def vma_log(vmas: float) -> float:
    """vmas x log2(vmas): the tree insertions of an image's VMAs (StageCost.per_vma_log_us); 0 below 2 VMAs."""
    return vmas * math.log2(vmas) if vmas > 1 else 0.0


class CacheCurve(BaseModel):
    """How much of a walk misses the caches when the same walk is repeated back to back: the miss
    fraction (0 = every line still cached from the last walk, 1 = every line from memory) of a cyclic,
    in-order pass over `bytes` of memory, measured on this CPU (forkbench lines) and interpolated in
    log(bytes), held flat beyond the ends. A fork's walk touches `walk_bytes_per_pte` per 4 KiB page
    (copy_present_pte: the parent's PTE, the child's PTE and the page's struct page)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bytes: list[float] = Field(min_length=2)
    miss: list[float] = Field(min_length=2)
    walk_bytes_per_pte: float = Field(default=80.0, gt=0.0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "CacheCurve":
        if len(self.bytes) != len(self.miss):
            raise ValueError("cache_curve: bytes and miss must have the same length")
        if any(x <= 0 for x in self.bytes) or any(b <= a for a, b in zip(self.bytes, self.bytes[1:])):
            raise ValueError("cache_curve.bytes must be positive and rise strictly")
        if any(not 0.0 <= m <= 1.0 for m in self.miss) or any(b < a for a, b in zip(self.miss, self.miss[1:])):
            raise ValueError("cache_curve.miss must be fractions 0..1 that never fall")
        return self

    def miss_at(self, nbytes: float) -> float:
        """The miss fraction of a repeated walk over `nbytes`."""
        if nbytes <= self.bytes[0]:
            return self.miss[0]
        return float(np.interp(math.log(nbytes), np.log(self.bytes), self.miss))

    def walk_miss(self, ptes: int, pmds: int = 0) -> float:
        """The miss fraction of a fork's walk of an image of `ptes` 4 KiB pages and `pmds` huge pages."""
        return self.miss_at(self.walk_bytes_per_pte * (ptes + pmds))


class StageCost(BaseModel):
    """One stage's cost: a linear median in the image, and a residual around it. A stage that walks
    the image's pages may also carry `per_pte_miss_us` with its `cache_curve`: what a page costs on
    top of `per_pte_us` when its lines come from memory, times the share of the walk that misses
    (a back-to-back fork of an image larger than the caches finds it cold however often it forks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fixed_us: float = Field(default=0.0, ge=0.0)
    per_vma_us: float = Field(default=0.0, ge=0.0)
    per_anon_vma_us: float = Field(default=0.0, ge=0.0)
    per_pte_us: float = Field(default=0.0, ge=0.0)
    per_pmd_us: float = Field(default=0.0, ge=0.0)
    per_thread_us: float = Field(default=0.0, ge=0.0)
    # dup_mmap links each copied VMA into an augmented rb-tree: the anon_vma's (anon_vma_clone ->
    # anon_vma_interval_tree_insert) and the file's i_mmap (vma_interval_tree_insert_after), O(log n) in the VMAs
    # already there. Forks of 10 .. 10,000 extra VMAs that share one tree (calibrate's, as an mprotect-split heap or
    # one file mapped many times) cost n log n on four hosts; a linear fit missed 3,000-10,000 VMAs by -8..-37% and
    # 100 by +12..+32% (2026-12-05, the shipped profiles' raw files). The term takes the image's VMAs as one tree:
    # for VMAs over many small trees (distinct files) it is an upper bound
    per_vma_log_us: float = Field(default=0.0, ge=0.0, description="per VMA times log2 of the image's VMAs "
                                  "(absent: 0, the per-VMA cost is flat)")
    per_pte_miss_us: float = Field(default=0.0, ge=0.0, description="per 4 KiB page, times cache_curve's miss "
                                   "fraction of the walk (absent: 0, the walk's cost is linear)")
    cache_curve: CacheCurve | None = None
    # copy_present_pte and zap_pte_range touch each page's struct page in the image's virtual order: where
    # the physical frames are out of that order the hardware prefetcher cannot follow the walk
    per_pte_scatter_us: float = Field(default=0.0, ge=0.0, description="per 4 KiB page out of physical order "
                                      "(ImageShape.scatter), times scatter_curve's miss fraction of the walk "
                                      "(absent: 0, the physical layout costs nothing)")
    scatter_curve: CacheCurve | None = None
    # a break in the frame order also costs the pages after it (the prefetcher's stream starts again): the term
    # prices the share within scatter_window pages of a break, scatter_ramp(scatter, scatter_window)
    scatter_window: float = Field(default=1.0, ge=1.0, le=4096.0, description="pages after a break in the frame "
                                  "order that pay per_pte_scatter_us (absent: 1, the pages out of order themselves)")
    # copy_present_pte write-protects (ptep_set_wrprotect) each writable PTE it copies: the parent's pages it wrote
    # since its last fork (a write fault made them writable again); from the second fork of a loop that writes
    # nothing, none are
    per_written_pte_us: float = Field(default=0.0, ge=0.0, description="per 4 KiB page the parent wrote since its "
                                      "last fork (absent: 0, a written page forks as a read-only one)")
    residual: Residual = Residual()
    source: str = Field(min_length=1, description="measured: ... | derived: ... | assumption: ...")

    @field_validator(*_TERMS)
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number of microseconds")
        return v

    def median_us(self, shape: "ImageShape") -> float:
        return (
            self.fixed_us
            + self.per_vma_us * shape.vmas
            + self.per_anon_vma_us * shape.anon_vmas
            + self.per_pte_us * shape.ptes
            + self.per_pmd_us * shape.pmds
            + self.per_thread_us * shape.threads
            + self.per_vma_log_us * vma_log(shape.vmas)
            + self.miss_us(shape)
            + self.scatter_us(shape)
        )

    def miss_us(self, shape: "ImageShape") -> float:
        """The walk's cache misses: per_pte_miss_us per page, times the share of the walk that misses."""
        if not self.per_pte_miss_us or self.cache_curve is None:
            return 0.0
        return self.per_pte_miss_us * shape.ptes * self.cache_curve.walk_miss(shape.ptes, shape.pmds)

    @property
    def prices_scatter(self) -> bool:
        """Whether this stage prices the image's physical layout (a scatter term with its curve)."""
        return bool(self.per_pte_scatter_us) and self.scatter_curve is not None

    def scatter_us(self, shape: "ImageShape") -> float:
        """The walk's out-of-order struct pages: per_pte_scatter_us per page within scatter_window pages after
        a break in the frame order, times the share of such a walk that misses."""
        if not self.prices_scatter or not shape.scatter:
            return 0.0
        return self.scatter_share_us(shape.ptes, shape.pmds, scatter_ramp(shape.scatter, self.scatter_window))

    def scatter_share_us(self, ptes: float, pmds: float, share: float) -> float:
        """The scatter term for a walk whose `share` of pages lie within scatter_window pages after a break
        (calibration passes an image's measured share; the model the ramp of a config's scatter)."""
        if not self.prices_scatter:
            return 0.0
        return self.per_pte_scatter_us * ptes * share * self.scatter_curve.walk_miss(ptes, pmds)

    def scaled(self, term: str, factor: float) -> "StageCost":
        if term not in _TERMS:
            raise ValueError(f"unknown cost term {term!r} (one of {', '.join(_TERMS)})")
        update = {term: getattr(self, term) * factor}
        if term == "per_vma_us" and self.per_vma_log_us:  # a VMA's copy, its tree insertion included
            update["per_vma_log_us"] = self.per_vma_log_us * factor
        if term == "per_pte_us":  # a walk with less work per page misses alike, in or out of physical order
            if self.per_pte_miss_us:
                update["per_pte_miss_us"] = self.per_pte_miss_us * factor
            if self.per_pte_scatter_us:
                update["per_pte_scatter_us"] = self.per_pte_scatter_us * factor
        return self.model_copy(update=update)


def _check_idle_times(name: str, idle_us: list[float], what: str, values: list) -> None:
    """A curve over idle times: one value per idle time, the idle times positive and rising."""
    if len(idle_us) != len(values):
        raise ValueError(f"{name}: idle_us and {what} must have the same length")
    if any(x <= 0 for x in idle_us) or any(b <= a for a, b in zip(idle_us, idle_us[1:])):
        raise ValueError(f"{name}.idle_us must be positive and rise strictly (microseconds)")


def _log_midpoints(idle_us: list[float]) -> list[float]:
    """The geometric midpoints of ascending idle times: the bounds of each one's nearest range in log(idle)."""
    return np.sqrt(np.multiply(idle_us[:-1], idle_us[1:])).tolist()


class IdleWakeCurve(BaseModel):
    """How a halted vCPU's wake-up latency depends on how long it has been idle: `scale` (the median
    latency over `idle_wake`'s median) at each `idle_us`. The host polls a halted vCPU a while before it
    deschedules its thread, so a CPU idle for microseconds wakes faster than one idle for a millisecond.
    With `residuals` (the latencies' shapes at each idle time) a wake-up between two measured idle times
    draws from one of the two measured distributions (`around`): the upper one's with a share rising in
    log(idle) from 0 to 1. The host's latencies past its polling are two modes (this VM, 2026-12-06 04:30,
    schedbench wake, 900 wake-ups an idle time: ~10-15 us or ~130-300 us) whose shares move with the idle
    time (the slow one 13% after 200 us, 26% after 300, 37% after 450, 75% after 1 ms): the mixture of the
    200 us and 1 ms measurements gave 11 / 182 / 270 us at 300 us (p50 / p90 / p99) against 12 / 176 / 282
    measured, where the median scaled in log(idle) times the nearer one's shape gave 44 / 610 / 1,102 (its
    slow mode scaled up a second time). Without residuals, `scale` interpolated in log(idle) times
    idle_wake's own shape; held flat beyond the ends either way."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    idle_us: list[float] = Field(min_length=2)
    scale: list[float] = Field(min_length=2)
    # the latency's shape (sample / median) after each idle_us, where the host's stalls of a halted vCPU come at long
    # idle times only (2026-12-05 Intel host: p99 5.8 us over a 4.5 us median after 10 us idle, 85 over 9.2 after
    # 200, 375 over 140 after 1 ms). None: idle_wake's own residual (measured after 200 us) at every idle time
    residuals: list[Residual] | None = None
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "IdleWakeCurve":
        _check_idle_times("idle_wake_curve", self.idle_us, "scale", self.scale)
        if any(not math.isfinite(x) or x <= 0 for x in self.scale):
            raise ValueError("idle_wake_curve.scale must be positive ratios")
        if self.residuals is not None and len(self.residuals) != len(self.idle_us):
            raise ValueError("idle_wake_curve.residuals needs one residual per idle_us")
        return self

    def at(self, idle_us: float) -> float:
        """The latency scale for a CPU idle `idle_us` microseconds."""
        return self.scaler()(idle_us)

    def scaler(self) -> Callable[[float], float]:
        """`at` with the logs of the idle times worked out once (it runs at every halt exit)."""
        logs, scale = [math.log(x) for x in self.idle_us], [float(s) for s in self.scale]

        def at(idle_us: float) -> float:
            return interp_one(math.log(1e-3 if 1e-3 > idle_us else idle_us), logs, scale)  # max(idle_us, 1e-3)

        return at

    def around(self) -> Callable[[float], tuple[int, int, float]]:
        """For an idle time: the indices of the measured idle times below and above it and the share of wake-ups
        drawn from the upper one's distribution (its distance in log(idle)); past the ends the end's, share 0."""
        logs, last = [math.log(x) for x in self.idle_us], len(self.idle_us) - 1

        def at(idle_us: float) -> tuple[int, int, float]:
            x = math.log(1e-3 if 1e-3 > idle_us else idle_us)
            j = bisect.bisect_right(logs, x)
            if j == 0:
                return 0, 0, 0.0
            if j > last:
                return last, last, 0.0
            return j - 1, j, (x - logs[j - 1]) / (logs[j] - logs[j - 1])

        return at

    def median_us(self, idle_us: float, median_us: float) -> float:
        """The median wake-up latency after `idle_us` as the model draws it, `median_us` being idle_wake's median:
        with residuals, the median of the mixture of the two measured distributions around it; without,
        median_us times the scale there."""
        if self.residuals is None:
            return median_us * self.at(idle_us)
        lo, hi, w = self.around()(idle_us)
        parts = [(1.0 - w, median_us * self.scale[lo], self.residuals[lo]), (w, median_us * self.scale[hi],
                                                                             self.residuals[hi])]

        def below(x: float) -> float:  # the mixture's CDF
            return sum(share * r.cdf(x / at) for share, at, r in parts if share > 0)

        a, b = math.log(median_us * min(self.scale) * 1e-6), math.log(median_us * max(self.scale) * 1e6)
        for _ in range(100):  # bisection in log(latency)
            mid = (a + b) / 2
            a, b = (mid, b) if below(math.exp(mid)) < 0.5 else (a, mid)
        return math.exp((a + b) / 2)


def interp_one(x: float, xp: list[float], fp: list[float]) -> float:
    """float(numpy.interp(x, xp, fp)) for one float `x` and ascending `xp` (two or more points), with numpy's own
    branches and arithmetic (numpy/_core/src/multiarray/compiled_base.c, arr_interp): the same float, without a
    numpy call's conversions (a scalar np.interp costs microseconds; it runs at every halt exit)."""
    if x != x:
        return x  # NaN
    j = bisect.bisect_right(xp, x) - 1  # binary_search_with_guess: xp[j] <= x < xp[j + 1]
    if j < 0:
        return fp[0]  # left of the first point
    last = len(xp) - 1
    if j >= last:
        return fp[last]  # at or right of the last point
    if xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    y = slope * (x - xp[j]) + fp[j]
    if y != y:  # NaN one way: the other way, then the flat segment's value
        y = slope * (x - xp[j + 1]) + fp[j + 1]
        if y != y and fp[j] == fp[j + 1]:
            y = fp[j]
    return y


class IpiSendCurve(BaseModel):
    """The waker's cost of waking a halted vCPU (ipi_send) measured after several idle times of that
    vCPU: `costs[i]` after `idle_us[i]`. A wake-up draws from the measured idle time nearest in
    log(idle). The host's halt polling makes it depend on the idle time, and not smoothly: on KVM an
    IPI that arrives as the target stops polling (about 200 us) can stall the sender for hundreds of
    microseconds, which one reference idle time would charge to every wake-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    idle_us: list[float] = Field(min_length=2)
    costs: list[StageCost] = Field(min_length=2)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "IpiSendCurve":
        _check_idle_times("ipi_send_curve", self.idle_us, "costs", self.costs)
        return self

    def cuts(self) -> list[float]:
        """`bisect_right(cuts, idle_us)` is `nearest`'s index."""
        return _log_midpoints(self.idle_us)

    def nearest(self) -> Callable[[float], int]:
        """The index of the measured idle time nearest to a CPU's idle time (in log), for each wake-up."""
        cuts = self.cuts()

        def index(idle_us: float) -> int:
            return bisect.bisect_right(cuts, idle_us)

        return index


# init_task.timer_slack_ns: every SCHED_OTHER task's hrtimer sleep may end this much after the time it asked for
# (hrtimer_set_expires_range_ns); on a CPU with no other timer due in that range it ends at the range's end
DEFAULT_TIMER_SLACK_US = 50.0


class SchedulerCosts(BaseModel):
    """The machine's scheduling costs, each a StageCost with only `fixed_us` used as its median."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tick: StageCost
    slice: StageCost
    idle_wake: StageCost
    context_switch: StageCost
    migration: StageCost
    wakeup_granularity: StageCost
    # optional (profiles before 2026-12-01 evening lack it: every wake-up of a halted CPU costs
    # idle_wake, however briefly it was idle)
    idle_wake_curve: IdleWakeCurve | None = None
    # optional (profiles before 2026-12-02 lack it: ipi_send, measured after 200 us idle, whatever the idle time)
    ipi_send_curve: IpiSendCurve | None = None
    # optional (profiles before 2026-12-04 lack it: the kernel's default, DEFAULT_TIMER_SLACK_US): how much later than
    # asked a user task's timer sleep (nanosleep, clock_nanosleep) ends on an idle CPU
    timer_slack: StageCost | None = None

    @model_validator(mode="after")
    def _check(self) -> "SchedulerCosts":
        for name in ("tick", "slice"):  # the scheduler divides by them
            if getattr(self, name).fixed_us <= 0.0:
                raise ValueError(f"scheduler.{name}.fixed_us must be positive (microseconds)")
        return self


class Fraction(BaseModel):
    """A probability or share measured on (or assumed for) this kernel, with where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float = Field(ge=0.0, le=1.0)
    source: str = Field(min_length=1)


def _share_by_size(counts: list[tuple[float, float]], pages: int) -> float:
    """The share of an image of `pages` pages that a per-size count (fragments, breaks) makes: between the measured
    sizes the share interpolated in log2(pages) (a count interpolated there would overshoot both neighbours' shares),
    beyond the largest the count held (the allocator's scattered free pages are a count, which a larger image
    dilutes: the 2026-12-03 AMD full calibration's sweep images of 512 MiB to 4 GiB picked up 750-880 extra vmemmap
    pages each), below the smallest its share held (a smaller image may lie wholly among them: that calibration's
    grid images sat at spread 3.9 and 3.5 at 16 and 64 MiB)."""
    pts = sorted((max(p, 1.0), c) for p, c in counts)
    (lo_pages, lo_count), (hi_pages, hi_count) = pts[0], pts[-1]
    if pages >= hi_pages:
        return hi_count / pages
    if pages <= lo_pages:
        return lo_count / lo_pages
    return float(np.interp(math.log2(pages), [math.log2(p) for p, _ in pts], [c / p for p, c in pts]))


class Spread(BaseModel):
    """How far an image's struct pages spread over the vmemmap (ImageShape.spread) as measured on this host, with
    where it came from. With `fragments`, a freshly touched image's spread depends on its size: the allocator hands
    an image the scattered free pages first (the per-CPU lists' recently freed pages, then the lowest order that has
    any: __rmqueue_smallest), each on a vmemmap page of its own, and the rest of it in dense ranges, so the extra
    vmemmap pages are about a count of fragments, not a share of the image (the 2026-12-03 AMD full calibration's
    sweep images of 512 MiB to 4 GiB picked up 750-880 each): an image of P pages sits at spread 1 + 64 F / P, F / P
    interpolated between the measured sizes in log2(P), F held beyond the largest (_share_by_size)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float = Field(ge=1.0, le=64.0)
    fragments: list[tuple[float, float]] | None = Field(
        default=None, min_length=1, description="(4 KiB pages of an image, vmemmap pages its struct pages sat on "
        "beyond a dense range's pages / 64), by size; absent: every image at `value`")
    source: str = Field(min_length=1)

    @property
    def by_size(self) -> bool:
        return bool(self.fragments)

    def at(self, pages: int) -> float:
        """The spread of a freshly touched image of `pages` 4 KiB pages."""
        if not self.fragments or pages <= 0:
            return self.value
        return min(64.0, max(1.0, 1.0 + 64.0 * _share_by_size(self.fragments, pages)))


class Scatter(BaseModel):
    """How far a freshly touched image's pages are from physical order (ImageShape.scatter) as measured on this host,
    with where it came from. With `breaks`, it depends on the image's size as Spread's fragments do, for the same
    reason: the scattered free pages the allocator hands out first put a count of breaks in the frame order, and the
    rest of the image comes in dense ranges (the 2026-12-03 AMD full calibration: cold grid images 0.074 / 0.083 /
    0.147 / 0.057 at 16 MiB / 64 MiB / 256 MiB / 1 GiB; its fork sweep's 4 GiB images 0.011): an image of P pages
    sits at B / P, B / P interpolated between the measured sizes in log2(P), B held beyond the largest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float = Field(ge=0.0, le=1.0)
    breaks: list[tuple[float, float]] | None = Field(
        default=None, min_length=1, description="(4 KiB pages of an image, pages whose frame does not follow their "
        "virtual predecessor's), by size; absent: every image at `value`")
    source: str = Field(min_length=1)

    @property
    def by_size(self) -> bool:
        return bool(self.breaks)

    def at(self, pages: int) -> float:
        """The scatter of a freshly touched image of `pages` 4 KiB pages."""
        if not self.breaks or pages <= 0:
            return self.value
        return min(1.0, max(0.0, _share_by_size(self.breaks, pages)))


@dataclass(frozen=True)
class ImageShape:
    """The parent's image as the cost model sees it."""

    vmas: int = 0
    anon_vmas: int = 0
    ptes: int = 0
    pmds: int = 0
    threads: int = 1
    # share of the image's 4 KiB pages whose physical frame does not follow their virtual predecessor's
    # (forksim.lab.pagemap.image_layout): 0 = one physically contiguous run, 1 = no two pages in order
    scatter: float = 0.0
    # how far the image's struct pages spread over the vmemmap: the distinct 4 KiB pages of struct pages they sit
    # on x 64 / pages (forksim.lab.pagemap.spread_of): 1 = one dense range of frames, up to 64 when no two of
    # the image's frames share a vmemmap page (the buddy allocator handed out frames among other processes')
    spread: float = 1.0

    @classmethod
    def from_rss(cls, rss: int, vmas: int, anon_vmas: int, thp: bool, threads: int = 1,
                 scatter: float = 0.0, spread: float = 1.0) -> "ImageShape":
        if thp:
            pmds, rest = divmod(rss, 2 * 1024**2)
            return cls(vmas, anon_vmas, -(-rest // 4096), pmds, threads, scatter, spread)
        return cls(vmas, anon_vmas, -(-rss // 4096), 0, threads, scatter, spread)
