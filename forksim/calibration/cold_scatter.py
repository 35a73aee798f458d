"""The cold walk of an image whose frames are out of virtual order: calibrate's layout runs and their fit.

The cold grid (forksim.calibration.warmth) forks images touched in address order. Beside them, images of
the same sizes touched in another order, each back to back and after SCATTER_GAP asleep, pinned:

- `random` (forkbench -L random, scatter ~1): every page's frame away from its neighbour's;
- `runs:K` (forkbench -L runs:K, scatter ~1/K): runs of K pages in address order, the runs in a random
  order: a break in the frame order every K pages, what a partly fragmented free list hands out.

Per layout L of a size, D = (L cold - L back to back) - (in order cold - in order back to back): what the
layout adds to the cold extra. The model prices it as per_scattered_pte_us * ptes * (ramp(s_L, w) -
ramp(s_order, w)), ramp = the share of the pages within w pages after a break, where the prefetcher's stream
starts again: each image's own, from its measured layout (lab.pagemap's after_break; runs of K pages have a
break every K pages, not at random), else forksim.profile_terms.scatter_ramp (breaks independent, as the
model prices a config's scatter). The fit: for each window w, the least-squares slope through the
origin; the window with the least squared error (a grid over 1..MAX_WINDOW pages, then scipy's bounded
scalar minimiser around it). Without a `runs:K` layout the window is not identified (ramp(~1, w) ~ 1 for
every w) and stays 1: the pages out of order themselves.
The random order's own fully cold extra a page (the median over sizes: saturated_per_pte) bounds the layout
terms: past it every struct page is a demand miss, and a wider spread adds nothing (ColdTerms.extra_us).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar

from ..lab.pagemap import within_window
from ..profile_sections import MAX_PER_SCATTERED_PTE_US
from ..profile_terms import scatter_ramp
from .plan import MiB

__all__ = ["SCATTERED", "RUN_LAYOUTS", "SCATTER_GAP", "RANDOM_COND", "runs_cond", "is_layout", "layout_jobs",
           "fit_cold_scatter", "scatter_source", "MAX_WINDOW", "page_share", "saturated_per_pte", "saturated_source"]

_MS = 1000  # us

# plan -> (sizes, back-to-back reps, reps after SCATTER_GAP asleep) of the images touched in a random order
# (cond "random"); a size the grid lacks gets in-order runs at the same two gaps too. Quick: two sizes
# (about 2 s); the interaction measured 2026-12-02 on the Intel host, 19-28 ns a page at 64 MiB, 256 MiB
# and 1 GiB, is flat enough in the image for two to give its slope.
SCATTERED: dict[str, tuple[tuple[int, ...], int, int]] = {
    "smoke": ((), 0, 0),
    "quick": ((64 * MiB, 256 * MiB), 10, 6),
    "full": ((64 * MiB, 256 * MiB, 1024 * MiB), 20, 10),
}
# plan -> (size, run lengths K) of the images touched in runs of K pages (cond "runs:K"), with the reps of
# SCATTERED. The lengths sit where the cold extra climbs: 256 MiB on the 2026-12-02 Intel host after 100 ms
# asleep, a break every 64 / 24 / 16 / 12 / 8 / 4 pages (scatter 0.02 .. 0.26) gave 0.11 / 0.30 / 0.51 / 0.73 /
# 0.82 / 0.90 of the random order's extra: a window of 10.6 pages fitted to all of them, 11.6 to 16 and 8 alone
# (the quick plan's), 16.6 to 12 and 4.
RUN_LAYOUTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "smoke": (0, ()),
    "quick": (256 * MiB, (16, 8)),
    "full": (256 * MiB, (32, 16, 8, 4)),
}
# in every grid; not fully cold on every host (the Intel host 2026-12-03: ~0.5 of the 1 s extra), so the fit divides
# what it measures here by the coldness curve's value at this gap
SCATTER_GAP = 100 * _MS
RANDOM_COND = "random"
MAX_WINDOW = 256.0  # pages: a stream longer than a 4 KiB page of struct pages (64) restarts at page bounds anyway


def page_share(scatter: float, after_break: tuple[float, ...] | list[float] | None, window: float) -> float:
    """The share of an image's pages within `window` pages after a break: from its measured layout
    (lab.pagemap's after_break: the breaks as they fall) where read, else as the model prices a config's
    scatter (breaks independent: profile_terms.scatter_ramp)."""
    return within_window(after_break, window) if after_break else scatter_ramp(scatter, window)


def runs_cond(k: int) -> str:
    """The cold grid's condition name of an image touched in runs of `k` pages (forkbench -L runs:K)."""
    return f"runs:{k}"


def is_layout(cond: str) -> bool:
    """Whether a cold-grid condition is one of the layout runs (random order, or runs of K pages)."""
    return cond == RANDOM_COND or cond.startswith("runs:")


Job = Callable[[int, str, float, int, list[str]], Callable[[], None]]


def layout_jobs(plan: str, grid: set[tuple[int, float]], job: Job) -> list[tuple[str, Callable[[], None]]]:
    """The layout runs of a plan, each a (description, job) pair; `grid` holds the (size, sleep in us) of the
    in-order runs the cold grid makes; `job(rss, cond, gap_us, reps, extra_argv)` makes one pinned forkbench cold
    run. They come after every in-order image of the grid: an image touched out of order leaves the free lists
    scattered, and the next "in-order" images with it (the 2026-12-02 full grid, interleaved: 256 MiB in-order
    images at scatter 0.01-0.71, and their cold extra with it)."""
    sizes, warm_reps, cold_reps = SCATTERED[plan]
    run_rss, run_lengths = RUN_LAYOUTS[plan]
    gaps = ((0, warm_reps), (SCATTER_GAP, cold_reps))
    jobs = []
    for rss in sizes:
        for gap, reps in gaps:
            if (rss, gap) not in grid:  # its in-order pair, which the grid lacks
                jobs.append((f"cold fork {rss // MiB}MiB after {gap / _MS:g} ms asleep",
                             job(rss, "sleep", gap, reps, ["-s", str(gap)])))
    layouts = [(rss, RANDOM_COND, "random", "touched in a random order") for rss in sizes]
    layouts += [(run_rss, runs_cond(k), runs_cond(k), f"touched in runs of {k} pages") for k in run_lengths]
    for rss, cond, arg, what in layouts:
        for gap, reps in gaps:
            jobs.append((f"cold fork {rss // MiB}MiB {what} after {gap / _MS:g} ms asleep",
                         job(rss, cond, gap, reps, ["-s", str(gap), "-L", arg])))
    return jobs


def saturated_per_pte(pairs: list[dict[str, Any]], coldness: float, fixed: float) -> float | None:
    """ColdTerms.saturated_per_pte_us: the median over sizes of the fully cold extra per page beyond `fixed` of the
    images touched in a random order (every struct page a demand miss; measured at `coldness`, their gap's); None
    without one. On the Intel host on 2026-12-06 (64 / 256 MiB after 100 ms asleep, pinned; images made spread 1-32
    by interleaving their pages with another buffer's: calibration/data/spread-saturation-20261206.json) the extra a
    page rose with the spread, 4-10 ns at 1, 16-22 ns at 2-4, and stopped from 8 to 32 (medians 37-47 ns), at both
    sizes; the random orders paid 40 (median of three) and 30 ns. The median, as one size's random run can be the
    host's noise (the AMD default profile's grid: 102, 8 and 24 ns a page at 64 MiB, 256 MiB and 1 GiB)."""
    per_page = [(p["cold_extra_layout_us"] / coldness - fixed) / p["ptes"] for p in pairs
                if p["layout"] == RANDOM_COND and p["ptes"]]
    median = statistics.median(per_page) if per_page else 0.0
    return min(median, MAX_PER_SCATTERED_PTE_US) if median > 0 else None


def saturated_source(pairs: list[dict[str, Any]], saturated: float) -> str:
    """The provenance of saturated_per_pte_us."""
    random_ = ", ".join(f"{p['rss_bytes'] // MiB} MiB {p['cold_extra_layout_us']:.0f} us" for p in pairs
                        if p["layout"] == RANDOM_COND)
    return (f"; saturated_per_pte_us {saturated * 1e3:.1f} ns a page: the median over sizes of the fully cold extra "
            f"a page beyond fixed_us of the images touched in a random order (cold extra over their own back-to-back "
            f"fork: {random_}, {SCATTER_GAP / _MS:g} ms asleep, over the curve's coldness there), where the spread and "
            f"breaks' terms stop (every struct page a demand miss)")


def _pairs(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layout run with its in-order pair (each back to back and after SCATTER_GAP, each with its image's
    scatter): the cold extra of each and their difference D."""
    def at(rss: int, cond: str, x: float) -> dict[str, Any] | None:
        return next((t for t in table if (t["rss_bytes"], t["cond"], t["x"]) == (rss, cond, x)
                     and t["scatter"] is not None), None)

    out = []
    for rss, cond in sorted({(t["rss_bytes"], t["cond"]) for t in table if is_layout(t["cond"])}):
        wo, co = at(rss, "sleep", 0), at(rss, "sleep", SCATTER_GAP)
        wl, cl = at(rss, cond, 0), at(rss, cond, SCATTER_GAP)
        if None in (wo, co, wl, cl) or cl["scatter"] <= co["scatter"]:
            continue
        e_order, e_layout = co["fork_p50_us"] - wo["fork_p50_us"], cl["fork_p50_us"] - wl["fork_p50_us"]
        out.append({"rss_bytes": rss, "layout": cond, "ptes": cl["ptes"], "scatter_order": co["scatter"],
                    "scatter_layout": cl["scatter"], "after_break_order": co.get("after_break"),
                    "after_break_layout": cl.get("after_break"), "cold_extra_order_us": round(e_order, 1),
                    "cold_extra_layout_us": round(e_layout, 1), "d_us": round(e_layout - e_order, 1)})
    return out


def _x(pairs: list[dict[str, Any]], window: float) -> np.ndarray:
    """Per pair, the pages a cold walk of its layout pays per_scattered_pte_us on beyond its in-order image's."""
    return np.array([p["ptes"] * (page_share(p["scatter_layout"], p["after_break_layout"], window)
                                  - page_share(p["scatter_order"], p["after_break_order"], window)) for p in pairs])


def _slope(d: np.ndarray, x: np.ndarray) -> float:
    return max(0.0, float(d @ x / (x @ x))) if float(x @ x) > 0 else 0.0


def _sse(d: np.ndarray, pairs: list[dict[str, Any]], window: float) -> float:
    x = _x(pairs, window)
    return float(np.sum((d - _slope(d, x) * x) ** 2))


def _window(d: np.ndarray, pairs: list[dict[str, Any]]) -> float:
    """The window with the least squared error (1 where no pair's layout is between in order and random)."""
    if not any(0.02 < p["scatter_layout"] < 0.6 for p in pairs):
        return 1.0
    grid = np.geomspace(1.0, MAX_WINDOW, 97)
    errs = [_sse(d, pairs, w) for w in grid]
    i = int(np.argmin(errs))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    best = minimize_scalar(lambda lw: _sse(d, pairs, float(np.exp(lw))), bounds=(lo, hi), method="bounded")
    return float(np.exp(best.x)) if best.fun <= errs[i] else float(grid[i])


def fit_cold_scatter(table: list[dict[str, Any]]) -> tuple[float | None, float, list[dict[str, Any]]]:
    """ColdTerms.per_scattered_pte_us (us per page, >= 0) and scatter_window (pages) from the cold grid's
    layout runs; (None, 1.0, []) without a pair. The pairs, with the fit's prediction of each D, as
    diagnostics."""
    pairs = _pairs(table)
    if not pairs:
        return None, 1.0, pairs
    d = np.array([p["d_us"] for p in pairs])
    window = _window(d, pairs)
    x = _x(pairs, window)
    slope = _slope(d, x)
    for p, xi in zip(pairs, x):
        p["x_pages"] = round(float(xi), 1)
        p["fit_d_us"] = round(slope * float(xi), 1)
    return slope, window, pairs


def scatter_source(pairs: list[dict[str, Any]], window: float) -> str:
    """The provenance of per_scattered_pte_us and scatter_window ('' without pairs)."""
    if not pairs:
        return ""
    runs = [p for p in pairs if p["layout"] != RANDOM_COND]
    return ("; per_scattered_pte_us: the cold extra of images touched out of order over the in-order one's, per page "
            f"within scatter_window pages after a break (least squares through the origin, {len(pairs)} layouts: "
            + ", ".join(f"{p['rss_bytes'] // MiB} MiB {p['layout']} (scatter {p['scatter_layout']:.2f}) "
                        f"{p['d_us']:.0f} us" for p in pairs)
            + f", {SCATTER_GAP / _MS:g} ms asleep); scatter_window {window:.1f} pages: "
            + ("the window with the least squared error over the runs of K pages (1..256, scipy minimize_scalar)"
               if runs else "1 (no image touched in runs of K pages: the pages out of order themselves)"))
