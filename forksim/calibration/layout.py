"""The image's physical layout: measure how far calibrate's images are from physical order, fork images
whose pages are out of it, and fit the profile's scatter terms (StageCost.per_pte_scatter_us with its
scatter_curve) for dup_mmap and exit_mmap.

fork's copy_present_pte and exit's zap_pte_range update each page's struct page (mapcount, refcount:
folio_try_dup_anon_rmap_ptes, folio_remove_rmap_ptes) in the image's virtual order. Where the frames
follow that order the struct pages are a sequential stream the hardware prefetches; where they do not,
every struct page is a miss (and, past the TLB's reach, a page walk). What a calibration measures:

- the layout of every image it forks (forkbench -g gate; forksim.lab.pagemap.image_layout, the one
  definition of `scatter`): each run's scatter, so that the fork sweep's per-page fit is corrected for
  its own images' scatter, and `fresh_image_scatter`'s value (the median of the sweep's freshly touched
  images; its breaks by size, what a config without a scatter gets, come from the cold grid's images: derive.py);
- forks of images touched in a random order (forkbench -L random: scatter ~1) beside the sweep's
  in-order image of the same size in the same round (interleaved A/B), pinned: per size, the p50 of
  fork() and of the child's exit, random minus in order;
- forkbench `lines -L random`: the per-line time of repeated passes over a buffer in one fixed random
  order, by footprint: where a walk of struct pages out of order stops hitting the caches. Its miss
  fraction (0 cached .. 1 from memory) is the scatter_curve's shape, at 64 bytes (one struct page) per
  page of the image.

- the cold grid's back-to-back forks of 256 MiB images touched in runs of K pages (forkbench -L runs:K,
  forksim.calibration.cold_scatter) beside its in-order and random ones: how much of the random order's
  extra a break every K pages costs, which gives the scatter_window (the pages after a break that pay: each
  image's measured share within the window after a break, cold_scatter.page_share).

The fit: per size, the A/B difference D against X = ptes * (share(random) - share(in order)) *
scatter_curve.walk_miss(ptes); per_pte_scatter_us = the relative least-squares slope of D on X over
the sizes not held out (non-negative). The held-out size is predicted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar

from ..lab import PagemapUnreadable, image_layout
from ..lab.pagemap import spread_of
from ..profile import CacheCurve, ImageShape, StageCost
from .cold_scatter import page_share
from .fit import median
from .plan import MiB, Store
from .samples import fork_cfg, fork_field, vals

__all__ = ["SCATTERED", "RANDOM", "STRUCT_PAGE_BYTES", "layout_reader", "run_scatter", "runs_layout", "fit_scatter_curve",
           "LayoutFit", "fit_layout", "fit_window", "with_scatter", "sweep_scatter", "sweep_spread", "first_images",
           "scatter_rows"]

SCATTERED = "scattered"  # the store kind of forks of images touched in a random order
RANDOM = "random"  # forkbench's -L value, and the lines samples' "layout"
STRUCT_PAGE_BYTES = 64.0  # what an out-of-order walk fetches per page: its struct page (the PTEs stay in order)
_SKIPPED = "image layout not measured"


def layout_reader(store: Store, into: dict[str, Any]) -> Callable[[int], None] | None:
    """An on_ready callback for bench.run_bench that reads the gated image's layout into into["layout"]
    ({pages, pairs, scatter}); None once pagemap proved unreadable here (said once in the notes)."""
    if any(n.startswith(_SKIPPED) for n in store.notes):
        return None

    def read(pid: int) -> None:
        try:
            lay = image_layout(pid)
        except (PagemapUnreadable, OSError) as exc:  # OSError: a read of pagemap itself failed
            if not any(n.startswith(_SKIPPED) for n in store.notes):
                store.notes.append(f"{_SKIPPED} ({exc}): the profile gets no scatter terms and no "
                                   f"fresh_image_scatter, and the fork sweep's fit is not corrected for its layout")
            return
        into["layout"] = {"pages": lay.pages, "pairs": lay.pairs, "scatter": round(lay.scatter, 5),
                          "struct_page_pages": lay.struct_page_pages, "after_break": list(lay.after_break)}

    return read


def fit_scatter_curve(store: Store) -> dict[str, Any] | None:
    """The scatter_curve (profile_terms.CacheCurve) from the `lines -L random` runs; None without them."""
    from .caches import line_samples, miss_curve

    by = line_samples(store, RANDOM)
    if len(by) < 6:
        return None
    return miss_curve(by, STRUCT_PAGE_BYTES, lambda sizes, hit, miss: (
        f"measured: forkbench lines -L random, pinned: per-line CPU time of repeated passes in one fixed "
        f"random order over {sizes[0] // 1024} KiB .. {sizes[-1] // MiB} MiB ({len(sizes)} footprints, "
        f"2 MiB pages where THP allows, like the kernel's vmemmap), {hit:.2f} ns cached (median of the "
        f"3 smallest), {miss:.2f} ns from memory (the 3 largest); miss fraction = (t - cached) / "
        f"(memory - cached), never falling; walk_bytes_per_pte: the lines run's own 64 B (one struct "
        f"page per page of the image) here, fitted per stage to the forks (the stage's source)"))


@dataclass
class LayoutFit:
    """What the layout measurements gave: the scatter curve, per stage (dup_mmap from fork(), exit_mmap
    from the child's exit) the slope, the A/B rows per size, and the fresh images' scatter."""

    curve: dict[str, Any] | None
    slope: dict[str, float] = field(default_factory=dict)  # stage -> per_pte_scatter_us
    window: dict[str, float] = field(default_factory=dict)  # stage -> scatter_window (absent: 1)
    footprint: dict[str, float] = field(default_factory=dict)  # stage -> its scatter_curve's walk_bytes_per_pte
    rows: list[dict[str, Any]] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)  # scatter of the sweep's freshly touched images
    source: dict[str, str] = field(default_factory=dict)

    def stage_curve(self, stage: str) -> dict[str, Any] | None:
        """The scatter_curve of `stage`: the measured shape at the stage's fitted bytes per page."""
        if not self.curve or stage not in self.footprint:
            return None
        return {**self.curve, "walk_bytes_per_pte": self.footprint[stage]}

    def term_us(self, stage: str, ptes: int, pmds: int, scatter: float, after_break: tuple[float, ...] = ()) -> float:
        """The scatter term of `stage` for an image (us), as StageCost.scatter_us prices it, at the image's own
        share of pages after a break where its layout was read; 0 without a slope or a curve."""
        curve = self.stage_curve(stage)
        if curve is None or not self.slope.get(stage):
            return 0.0
        window = self.window.get(stage, 1.0)
        cost = StageCost(per_pte_scatter_us=self.slope[stage], scatter_curve=curve, scatter_window=window,
                         source="the scatter term alone")
        return cost.scatter_share_us(ptes, pmds, page_share(scatter, after_break, window))


def run_scatter(run: dict[str, Any]) -> float | None:
    """The scatter of a run's image, where its layout was read (None: not measured)."""
    lay = run.get("layout")
    return None if lay is None or not lay.get("pairs") else float(lay["scatter"])


def runs_layout(runs: list[dict[str, Any]]) -> tuple[float, tuple[float, ...]]:
    """The median scatter of runs' images and the median of their after_break shares ((): none read)."""
    sc = [s for r in runs if (s := run_scatter(r)) is not None]
    ab = [r["layout"]["after_break"] for r in runs if (r.get("layout") or {}).get("after_break")]
    return (median(sc) if sc else 0.0), (tuple(round(float(x), 5) for x in np.median(ab, axis=0)) if ab else ())


def _is_plain(key: dict[str, Any]) -> bool:
    return not key.get("anon_vmas") and not key.get("file_vmas") and not key.get("thp")


def _sweep_images(store: Store) -> list[dict[str, Any]]:
    """The runs of the pinned, untraced fork sweep's freshly touched images of 16 MiB and more, layout read."""
    from .plan import FORK_MODE

    return [r for r in store.select(FORK_MODE, pinned=True, traced=False, mode=FORK_MODE)
            if r["key"]["rss"] >= 16 * MiB and _is_plain(r["key"]) and run_scatter(r) is not None]


def sweep_scatter(store: Store) -> list[float]:
    """The scatter of every freshly touched image of the pinned, untraced fork sweep (16 MiB and more)."""
    return [float(r["layout"]["scatter"]) for r in _sweep_images(store)]


def sweep_spread(store: Store) -> list[float]:
    """The spread (lab.pagemap.spread_of) of the same images, where their struct pages were counted."""
    return [v for r in _sweep_images(store)
            if (v := spread_of(r["layout"].get("pages"), r["layout"].get("struct_page_pages"))) is not None]


# The images a calibration touches first meet the free lists as a process started on its own does: on the
# 2026-12-02 Intel host the first three (the traced fork runs) came out at scatter 0.43 / 0.44 / 0.15 (16 MiB,
# 256 MiB, 1 GiB) and the sweep's images after them at 0.005-0.04 (three calibrations alike), as freshly
# started processes did before and after (0.13-0.46; tools/layout_spread.py). Reported beside the sweep's.
FIRST_IMAGES = 3


def first_images(store: Store) -> list[tuple[int, float]]:
    """(RSS, scatter) of the first FIRST_IMAGES plain pinned fork images of 16 MiB and more, in the order run."""
    from .plan import FORK_MODE

    out = [(r["key"]["rss"], s) for r in store.runs if r["kind"] == FORK_MODE and r["key"].get("mode") == FORK_MODE
           and r["key"].get("pinned") and r["key"]["rss"] >= 16 * MiB and _is_plain(r["key"])
           and (s := run_scatter(r)) is not None]
    return out[:FIRST_IMAGES]


def _pairs(store: Store) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(random, in order) run pairs of the same size and round, both with a measured layout."""
    from .plan import FORK_MODE

    order = {(r["key"]["rss"], r["key"].get("round", 0)): r
             for r in store.select(FORK_MODE, pinned=True, traced=False, mode=FORK_MODE) if _is_plain(r["key"])}
    out = []
    for r in store.select(SCATTERED):
        o = order.get((r["key"]["rss"], r["key"].get("round", 0)))
        if o is not None and run_scatter(r) is not None and run_scatter(o) is not None:
            out.append((r, o))
    return out


_MEASURES = {"dup_mmap": "fork() (the parent's CPU time)", "exit_mmap": "the child's exit (exit_ns)"}
# The walk's bytes per page tried for the scatter curve: the lines run's footprint is one 64 B struct page
# per page, but a fork's struct pages share the caches with the page tables it streams and, where the
# frames spread over physical memory, sit on fewer lines and pages per vmemmap page than the lines run's
# dense buffer: where the forks' knee lies is fitted (2026-12-02, this host: a fork of 128 MiB sits at the
# knee, 256 MiB past it, where the lines run puts the knee at 6-8 MiB, i.e. 384-512 MiB at 64 B per page)
FOOTPRINTS = tuple(round(64.0 * 2 ** (k / 2), 1) for k in range(9))  # 64 .. 1024 B, steps of sqrt(2)
_NOISE = 0.01  # the relative spread of a size's median difference that fits count as equal


def _p50(runs: list[dict[str, Any]], stage: str) -> float:
    if stage == "dup_mmap":
        return fork_cfg(runs, fork_field(runs), "").median
    return median(vals(runs, "exit_ns"))


def _row(rss: int, these: list[tuple[dict[str, Any], dict[str, Any]]], held: bool) -> dict[str, Any]:
    """One A/B size: the medians over its rounds of each side's p50 and of the per-round difference."""
    sh = these[0][0]["shape"]
    row: dict[str, Any] = {"rss_bytes": int(rss), "ptes": int(sh["ptes"]), "pmds": int(sh["pmds"]),
                           "rounds": len(these), "held_out": held,
                           "scatter_random": round(median(run_scatter(r) for r, _ in these), 4),
                           "scatter_order": round(median(run_scatter(o) for _, o in these), 4),
                           "after_break_random": runs_layout([r for r, _ in these])[1],
                           "after_break_order": runs_layout([o for _, o in these])[1],
                           "spread_random": _spread([r for r, _ in these]), "spread_order": _spread([o for _, o in these]),
                           "p50_random_us": {}, "p50_order_us": {}, "diff_us": {}}
    for stage in _MEASURES:
        pr, po = [_p50([r], stage) for r, _ in these], [_p50([o], stage) for _, o in these]
        row["p50_random_us"][stage] = round(median(pr), 3)
        row["p50_order_us"][stage] = round(median(po), 3)
        row["diff_us"][stage] = round(median(a - b for a, b in zip(pr, po)), 3)
    return row


def _spread(runs: list[dict[str, Any]]) -> float | None:
    """The median over runs of how far the image's struct pages spread: distinct vmemmap pages x 64 / pages
    (1: one dense range of frames; recorded, not fitted: the scatter terms assume the spread calibrate saw)."""
    v = [s for r in runs if (s := spread_of(r["layout"].get("pages"), r["layout"].get("struct_page_pages")))]
    return round(median(v), 2) if v else None


def _shares(row: dict[str, Any], window: float) -> tuple[float, float]:
    """(the random image's, the in-order image's) share of pages within `window` after a break."""
    return (page_share(row["scatter_random"], row.get("after_break_random"), window),
            page_share(row["scatter_order"], row.get("after_break_order"), window))


def _x(row: dict[str, Any], curve: CacheCurve, window: float = 1.0) -> float:
    """ptes x (the random image's share within `window` after a break - the in-order one's) x the walk's miss
    fraction."""
    random_share, order_share = _shares(row, window)
    return row["ptes"] * (random_share - order_share) * curve.walk_miss(row["ptes"], row["pmds"])


def _contrasted(row: dict[str, Any], window: float) -> bool:
    """Whether a size's pair can price scatter: its in-order image at most half as scattered as its random one.
    The fit then takes out of an in-order image at most the difference its pair measured (share / contrast <= 1);
    a nearly random "in-order" image (a fresh VM's scattered free lists: the smoke plan's one 16 MiB image at
    scatter 0.9) turned a few microseconds of noise into a slope that took its whole per-page cost out."""
    random_share, order_share = _shares(row, window)
    return order_share <= random_share - order_share


_RUN_MEASURES = {"dup_mmap": "fork_cpu_ns", "exit_mmap": "exit_ns"}
RUN_CONTRAST = 0.25  # the least extra of a random order over the in-order image for its runs of K pages to fit a window


def _run_points(store: Store, stage: str) -> list[tuple[dict, dict, dict, float]]:
    """The cold grid's back-to-back layout runs of one size: per run of K pages, (its layout, the in-order
    image's, the random one's, its share of the random order's extra over the in-order p50)."""
    from .cold_scatter import RANDOM_COND

    field_ = _RUN_MEASURES[stage]
    b2b = {}
    for r in store.select("cold", x=0):
        if run_scatter(r) is not None:
            b2b.setdefault((r["key"]["rss"], r["key"]["cond"]), []).append(r)
    out = []
    for (rss, cond), runs in b2b.items():
        order, rand = b2b.get((rss, "sleep")), b2b.get((rss, RANDOM_COND))
        if not cond.startswith("runs:") or not order or not rand:
            continue
        p = {k: median(vals(v, field_)) / 1e3 for k, v in (("l", runs), ("o", order), ("r", rand))}
        # a random order that costs clearly more than the in-order image: the pair is measured in separate runs,
        # which this host's drift moves by +-25% in minutes; a smaller contrast fitted noise (the 2026-12-03 12:26 AMD
        # quick grid: 256 MiB random 5,438 us, runs:16 5,529, runs:8 5,005, in order 4,939 gave a window of 69
        # pages, every page of the fork sweep's in-order 1 GiB image inside one, and the fit took 18.6 of its 21 ms
        # out as scatter: the held-out 64 MiB fork came out 381 us against 1,387 measured)
        if p["r"] - p["o"] > RUN_CONTRAST * p["o"]:
            out.append((runs[0]["layout"], order[0]["layout"], rand[0]["layout"], (p["l"] - p["o"]) / (p["r"] - p["o"])))
    return out


def fit_window(store: Store, stage: str) -> float:
    """scatter_window of `stage`'s warm scatter term: the window whose ramp puts each run of K pages' back-to-back
    fork (or exit) where it lies between the in-order and the random image's (least squares over the runs,
    scipy minimize_scalar over 1..256 pages); 1 without such runs."""
    pts = _run_points(store, stage)
    if not pts:
        return 1.0

    def at(lay: dict, w: float) -> float:
        return page_share(lay["scatter"], lay.get("after_break"), w)

    def sse(log_w: float) -> float:
        w = float(np.exp(log_w))
        return sum((share - (at(lr, w) - at(lo, w)) / (at(lrand, w) - at(lo, w))) ** 2 for lr, lo, lrand, share in pts)

    best = minimize_scalar(sse, bounds=(0.0, float(np.log(256.0))), method="bounded")
    return float(np.exp(best.x))


def _slope(rows: list[dict[str, Any]], stage: str, curve: CacheCurve, window: float = 1.0) -> tuple[float, float]:
    """(slope, error): the least-squares slope through 0 of the per-size difference D on X over the sizes
    not held out whose pair is contrasted (`_contrasted`), each weighted by 1 / its in-order p50 (relative
    error; a size whose difference is nil counts too), and the weighted squared error left; none (inf) unless
    a fitted size's walk is at least half past the knee (below it, the slope is the noise of a small
    difference over a small miss share)."""
    use = [r for r in rows if not r["held_out"] and _contrasted(r, window)]
    if not use:
        return 0.0, float("inf")
    x = np.array([_x(r, curve, window) for r in use])
    if not np.any(x > 0) or max(curve.walk_miss(r["ptes"], r["pmds"]) for r in use) < 0.5:
        return 0.0, float("inf")
    d = np.array([r["diff_us"][stage] for r in use])
    w = 1.0 / np.array([r["p50_order_us"][stage] for r in use])
    s = max(0.0, float(np.sum(x * d * w * w) / np.sum((x * w) ** 2)))
    return s, float(np.sum(((s * x - d) * w) ** 2))


def _fit_stage(rows: list[dict[str, Any]], stage: str, shape: dict[str, Any], window: float) -> tuple[float, float]:
    """(slope, bytes per page): per candidate footprint the slope and its error; of the footprints whose
    error is within noise of the least (1% of each in-order p50), the smallest: the knee as late as the
    fitted sizes allow (a larger footprint moves it below the smallest fitted size, where no fitted
    difference says whether it lies)."""
    fits = {b: _slope(rows, stage, CacheCurve.model_validate({**shape, "walk_bytes_per_pte": b}), window)
            for b in FOOTPRINTS}
    best = min(e for _, e in fits.values())
    if not np.isfinite(best):
        return 0.0, FOOTPRINTS[0]
    tol = best + _NOISE**2 * sum(not r["held_out"] and _contrasted(r, window) for r in rows)
    return next((s, b) for b, (s, e) in fits.items() if e <= tol)


def fit_layout(store: Store, held_out: tuple[int, ...]) -> LayoutFit | None:
    """The scatter curve and slopes from the A/B pairs; None when no layout was measured."""
    fresh = sweep_scatter(store)
    pairs = _pairs(store)
    if not fresh and not pairs:
        return None
    fit = LayoutFit(fit_scatter_curve(store), fresh=fresh)
    if not pairs or fit.curve is None:
        return fit
    for rss in sorted({r["key"]["rss"] for r, _ in pairs}):
        fit.rows.append(_row(rss, [(r, o) for r, o in pairs if r["key"]["rss"] == rss], rss in held_out))
    for stage, what in _MEASURES.items():
        window = fit_window(store, stage)
        s, b = _fit_stage(fit.rows, stage, fit.curve, window)
        if not s:
            continue
        fit.slope[stage], fit.footprint[stage] = s, b
        if window != 1.0:
            fit.window[stage] = window
        used = ", ".join(f"{r['rss_bytes'] // MiB} MiB" for r in fit.rows
                         if not r["held_out"] and _contrasted(r, window))
        spread = [r["spread_random"] for r in fit.rows if not r["held_out"] and r.get("spread_random")]
        beside = (f"; 64 B x the random images' spread (struct_page_pages x 64 / pages, median "
                  f"{median(spread):.2f}) = {64 * median(spread):.0f} B" if spread else "")
        ab = "; ".join(f"{r['rss_bytes'] // MiB} MiB{' (held out)' if r['held_out'] else ''}: "
                       f"{r['p50_random_us'][stage]:.0f} vs {r['p50_order_us'][stage]:.0f} us at scatter "
                       f"{r['scatter_random']:.2f} vs {r['scatter_order']:.2f}, {r['rounds']} rounds"
                       for r in fit.rows)
        fit.source[stage] = (
            f"per_pte_scatter_us {s:.4g}, scatter_curve at {b:g} B per page: measured: {what}, pinned, of images "
            f"touched in a random order (forkbench -L random) against the fork sweep's in-order image of the same "
            f"size in the same round, p50 per run (random vs in order: {ab}); each image's scatter read from "
            f"/proc/PID/pagemap at forkbench's gate (forksim.lab.pagemap); the slope of the per-size median "
            f"difference on ptes x scatter difference x the curve's miss fraction (least squares, weights 1 / the "
            f"in-order p50) over {used}; the curve's bytes per page: of {', '.join(f'{x:g}' for x in FOOTPRINTS)}, "
            f"the smallest whose fit is within 1% of each in-order p50 of the best{beside}"
            + (f"; scatter_window {fit.window[stage]:.1f} pages: the cold grid's back-to-back images touched in runs "
               f"of K pages (forkbench -L runs:K) between its in-order and random ones, least squares over "
               f"{len(_run_points(store, stage))} runs" if stage in fit.window else ""))
    curves = {st: CacheCurve.model_validate(fit.stage_curve(st)) for st in fit.slope}
    for r in fit.rows:
        r["walk_miss"] = {st: round(c.walk_miss(r["ptes"], r["pmds"]), 4) for st, c in curves.items()}
        r["predicted_diff_us"] = {st: round(fit.slope[st] * _x(r, c, fit.window.get(st, 1.0)), 3)
                                  for st, c in curves.items()}
    return fit


def with_scatter(cost: StageCost, fit: LayoutFit | None, stage: str) -> StageCost:
    """`cost` with the scatter term of `stage` (and its provenance appended), or unchanged without one."""
    if fit is None or not fit.slope.get(stage) or fit.stage_curve(stage) is None:
        return cost
    d = cost.model_dump(mode="json", exclude_unset=True)
    d["per_pte_scatter_us"] = float(f"{fit.slope[stage]:.6g}")
    d["scatter_curve"] = fit.stage_curve(stage)
    if stage in fit.window:
        d["scatter_window"] = round(fit.window[stage], 2)
    d["source"] = f"{d['source']}; {fit.source[stage]}"
    return StageCost.model_validate(d)


def scatter_rows(fit: LayoutFit | None, predict: Callable[[ImageShape, str], float],
                 shapes: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per A/B size: the measured p50 of the scattered image beside the profile's own prediction at its
    measured scatter (`predict(shape, stage)`: the fork() call or the stage), for calibrate's report."""
    out = []
    for r in (fit.rows if fit else []):
        sh = shapes.get(r["rss_bytes"])
        if sh is None:
            continue
        shape = ImageShape(int(sh["vmas"]), int(sh["anon_vmas"]), int(sh["ptes"]), int(sh["pmds"]),
                           scatter=r["scatter_random"])
        p = predict(shape, "dup_mmap")
        m = r["p50_random_us"]["dup_mmap"]
        out.append({"rss_bytes": r["rss_bytes"], "held_out": r["held_out"], "scatter": r["scatter_random"],
                    "spread": r.get("spread_random"),
                    "measured_p50_us": m, "profile_predicted_p50_us": round(p, 3), "rel_error": round((p - m) / m, 4),
                    "measured_diff_us": r["diff_us"], "predicted_diff_us": r["predicted_diff_us"],
                    "measured_order_p50_us": r["p50_order_us"]["dup_mmap"]})
    return out
