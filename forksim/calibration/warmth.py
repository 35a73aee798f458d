"""Cold forks: measure fork() after the parent's image cooled, and fit the profile's `warmth` terms.

forkbench's `cold` mode times the same pinned fork() as the stage sweep, each one after a gap that
cools what the previous fork and the child's exit warmed: a sleep (-s), another process sweeping its
own memory on the parent's CPU (-W, in multiples of the last-level cache), a move to the other CPU
(-M); and unpinned after a sleep (-c -1: the parent wakes on either CPU, as a real one does), which
calibrate's report compares with `forksim run` and the fit leaves out. The fit (see
forksim/kernel/warmth.py for how the model uses it):

- per size, the warm p50 (gap 0) and the extra X = p50 - warm at that size's longest sleep (1 s in the
  quick and full plans for the first size, in the quick plan 300 ms for the others and the exits; the
  curve is not flat at 100 ms: on the 2026-12-03 Intel host 64 and 256 MiB images were 0.44 and 0.66 as
  cold after 100 ms as after 3 s, 0.92 and 0.78 after 300 ms: calibration/data/warmth-gaps-20261203.json);
- coldness c = (p50 - warm) / X per gap of the sizes measured at the longest gap, fitted by
  scipy.optimize.curve_fit to 1 - exp(-(gap/tau)^beta);
- per size the fully cold extra E = X / c(its longest gap) (a size measured at a shorter longest gap is
  scaled up by the curve);
- ColdTerms for dup_mmap: fixed_us + per_pte_us * min(ptes, pte_cap) through the sizes' E (NNLS per
  candidate cap; the cap the caches held warm, or no cap), over the sizes up to the largest whose E
  still grew (a larger image's back-to-back reference is itself partly cold): the cap is that size;
- the footprint scale from the sweeps (the sweep's own duration is a gap too: its part is divided out),
  and the migration coldness from the moves;
- the cold extra of pages out of physical order (ColdTerms.per_scattered_pte_us and scatter_window):
  images touched in a random order and in runs of K pages (forksim.calibration.cold_scatter); it prices
  the share after a break beyond the in-order images' (reference_scatter), whose extras the fit above
  takes as they are; measured after cold_scatter.SCATTER_GAP asleep, it is divided by the curve's coldness
  there, as E is;
- exit_mmap's ColdTerms (_fit_exit): runs whose child sleeps before its exit (-E) give the exit's fully cold
  extra over the back-to-back run's exit, fitted as the fork's is;
- the residual share a walk leaves (_fit_residual): the exit right after each sleep's fork and the fork right
  after a cold exit each pay the residual share of their own fully cold extra
  (calibration/data/exit-warmth-20261203.json), and the fork right after each cold fork of the grid its square
  (two walks); a median of those ratios weighted by their signal, robust to a stalled exit. The coldness curve
  is fitted as if a walk left none (the forks after 1-10 ms carry a little of the previous cold fork's residual:
  a small bias).
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any, Callable

import numpy as np
from scipy.optimize import curve_fit, nnls

from ..errors import MeasurementError
from ..kernel.stages import DUP_MMAP, EXIT_MMAP
from ..lab import llc_bytes
from ..lab.pagemap import spread_of
from ..profile_sections import MAX_PER_SCATTERED_PTE_US
from . import bench
from .cold_families import fit_families
from .cold_scatter import (SCATTER_GAP, fit_cold_scatter, is_layout, layout_jobs, saturated_per_pte, saturated_source,
                           scatter_source)
from .layout import layout_reader
from .plan import MiB, Plan, Store

__all__ = ["GRIDS", "cold_jobs", "cross_cpu_wake_us", "fit_warmth", "grid_scatters", "grid_spreads", "llc_bytes"]

_MS = 1000  # us

REMOTE_LOCAL = "remote_local"  # the remote runs' pair: the same forkbench -R call, the child's pin its parent's CPU

# A size's sleeps, spins and co-runner sweeps run interleaved in one process (forkbench cold -G, _interleaved; the
# sweeps since 2026-12-05: run apart, the 09:27 quick grid's 64 MiB forks after 16 and 64 MiB of other work came out
# at 961 and 931 us against the grid's own back to back 954, a difference of processes), each gap after two
# back-to-back forks: run one after another, the back-to-back reference and the cold runs were minutes apart, and this
# host drifts by +-25% in minutes (the 2026-12-03 12:00 AMD full grid: the 64 MiB back-to-back fork 1,506 us, its
# remote_local pair 1,088 us, so extras of +200 us read as noise; interleaved, the same gaps one after another in a
# shuffled order gave a curve that rose to 10 ms and then held, calibration/data/gaps-spin-sleep-20261203.json).
# plan name -> (sizes, [(sleep_us, reps)], [(LLC multiple, reps)], migration reps, [(spin_us, reps)],
# [(sleep_us, reps)] of the first size unpinned: the parent wakes on either CPU, as a real one does; these
# are compared with the model in calibrate's report, never fitted; [(child's sleep_us, reps)] at every size:
# the child sleeps before its exit (forkbench -E), so its exit_mmap finds the image cold and the next fork
# follows that cold exit: exit_mmap's cold terms and the residual a walk leaves);
# sizes after the first get the back-to-back and the longest sleep only in the quick plan (the
# coldness curve's shape comes from the first size; the others give the cold extra's growth). The longest
# sleep is 1 s: after 100 ms the Intel host's images were about half as cold as after 1-3 s (2026-12-03,
# calibration/data/warmth-gaps-20261203.json), and a fit that took 100 ms for fully cold put the validation's
# forks after 1 s asleep 31-34% under. Four forks there (the quick plan's time: each costs its second); the
# 2026-12-01 AMD quick grid found a 256 MiB extra, a difference of two ~9 ms medians, below zero with five
# forks at 100 ms, which the fit's fall rule (_rising) then leaves out. Four, not five, since 2026-12-03 04:11: with
# five the plan took 60.1 s. The empty image (RSS 0, last) gets
# the back-to-back and the longest sleep in every plan: it pins the cold extra's fixed part, which two sizes
# alone leave free (the 2026-12-01 quick grids put 271 us and, on a busy box, 2 ms there: a cold fork of an
# empty parent). The quick plan's cold exits (2 a size: the second fork follows the first cold exit) took 9 s with 3
# and the plan 65.0 s (2026-12-03 06:54): 2 exits and the unpinned forks 4 (not 8; compared, never fitted) keep it
# near a minute. The co-runner sweeps (the footprint scale) ran 4 times at 2 LLCs until 2026-12-05: one estimate,
# 2.75 GB in the 07:40 quick calibration against the full plan's median of 11, 80 MB (10-364), and the validation's
# fork after 2 LLCs of other work 59% under; now 6 times at half an LLC and at 2 (a few ms each with its two walks).
# Since 2026-12-03 15:10 the quick plan's other sizes and its exits sleep 300 ms, not 1 s (QUICK_OTHER_SLEEP: 9 s of
# the 80 s plan): the first size's curve still reaches 1 s, and the fit divides their extra by the curve's coldness
# at 300 ms (the Intel host's images were 0.78-0.92 as cold there as after 3 s, so at worst a sixth of their fully
# cold extra is missed).
# Last, remote reps: forks whose children exit on the other CPU, at every size, beside as many whose children exit
# on the parent's (forkbench -R: Warmth.remote). With those terms a move of the parent is priced by them (forkbench
# -M measured +280 us at 64 MiB against -R's +240 us, 2026-12-03), so the quick plan leaves the moves out; the full
# plan keeps them (warmth.migration, for the model without remote terms).
GRIDS: dict[str, tuple[tuple[int, ...], tuple[tuple[int, int], ...], tuple[tuple[float, int], ...], int,
                       tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], int]] = {
    "smoke": ((16 * MiB,), ((0, 8), (10 * _MS, 4), (100 * _MS, 3)), ((2.0, 3),), 6, (), (), ((100 * _MS, 3),), 4),
    "quick": ((64 * MiB, 256 * MiB, 0), ((0, 20), (1 * _MS, 12), (10 * _MS, 8), (100 * _MS, 10), (1000 * _MS, 4)),
              ((0.5, 6), (2.0, 6)), 0, (),
              ((100 * _MS, 4),), ((300 * _MS, 2),), 20),
    "full": ((16 * MiB, 64 * MiB, 256 * MiB, 0),
             ((0, 60), (1 * _MS, 40), (3 * _MS, 30), (10 * _MS, 25), (30 * _MS, 15), (100 * _MS, 10), (1000 * _MS, 4)),
             ((0.25, 25), (0.5, 25), (1.0, 20), (2.0, 20)), 60, ((10 * _MS, 20), (100 * _MS, 8)),
             ((10 * _MS, 20), (100 * _MS, 10), (1000 * _MS, 5)), ((100 * _MS, 9), (1000 * _MS, 6)), 60),
}


_ROUNDS = {"smoke": 1, "quick": 1, "full": 3}
# The empty image's remote pair sets exit_mmap's fixed remote term (_fit_remote): a difference of two p50s of 40-80
# us, at ~0.1 ms a fork, so it takes this many reps a side (0.07 s in all; ten quick calibrations on 2026-12-05, 20
# a side, read +16..+35 us), in EMPTY_REMOTE_CHUNKS pairs that alternate, pooled: the host flips between a fast and
# a slow phase within seconds, and one 200-rep run a side read -3 us at 01:41 on 2026-12-06 (local 57.9, remote
# 55.1) where alternating single runs before and after it read +20..+45 us (local 36-61, remote 75-85)
EMPTY_REMOTE_REPS = 200
EMPTY_REMOTE_CHUNKS = 5
# the gaps of forkbench cold -G (the store's cond of their runs), and each one's prefix in its list
SLEEP, SPIN, WORK = "sleep", "spin", "work"
_ITEM_PREFIX = {SLEEP: "", SPIN: "S", WORK: "W"}
# the quick plan's longest sleep of the sizes after the first, (sleep us, reps): see GRIDS
QUICK_OTHER_SLEEP = (300 * _MS, 4)


def cold_jobs(plan: Plan, fb: str, store: Store, cpu: int, other: int) -> list[tuple[str, Callable[[], None]]]:
    """The cold-fork runs of this plan, each a (description, job) pair."""
    sizes, sleeps, works, mig_reps, spins, unpinned, exits, remote_reps = GRIDS[plan.name]
    llc = llc_bytes()
    jobs: list[tuple[str, Callable[[], None]]] = []

    def job(rss: int, cond: str, x: float, reps: int, extra: list[str], pinned_cpu: int) -> Callable[[], None]:
        def run() -> None:
            # one warm-up fork where each gap is a sleep of 10 ms or more (the sleep before the first measured
            # fork cools what the warm-up warmed; forkbench does not sleep before warm-ups), three otherwise
            warm = 1 if (cond in ("sleep", "unpinned") or is_layout(cond)) and x >= 10 * _MS else 3
            argv = [fb, "cold", "-r", str(rss), "-n", str(reps), "-w", str(warm), "-c", str(pinned_cpu), *extra]
            got: dict[str, Any] = {}
            # the layout of every slept image (the cold terms are fitted per unit of its spread; the scatter pairs
            # compare the in-order runs with the layout runs)
            read = layout_reader(store, got) if (rss > 0 and cond == "sleep") or is_layout(cond) else None
            ran = _run_or_refused(argv, read, store)
            if ran is not None:
                _add_cold(store, {"rss": rss, "cond": cond, "x": x, "llc_bytes": llc}, *ran, got)

        return run

    rounds = _ROUNDS[plan.name]
    rng = random.Random(1313)

    def short(rss: int) -> bool:  # a size that gets the back-to-back fork and one long sleep only
        return rss != sizes[0] and (plan.name == "quick" or rss == 0)

    def sleeps_of(rss: int) -> tuple[tuple[int, int], ...]:
        if not short(rss):
            return sleeps
        return sleeps[:1] + ((QUICK_OTHER_SLEEP,) if plan.name == "quick" else sleeps[-1:])

    for rnd in range(rounds):
        this: list[tuple[str, Callable[[], None]]] = []
        per = f" (round {rnd + 1}/{rounds})" if rounds > 1 else ""
        for rss in sizes:
            gaps = ([(gap, reps, SLEEP) for gap, reps in sleeps_of(rss)] + [(gap, reps, SPIN) for gap, reps in spins]
                    + [(int(mult * llc), reps, WORK) for mult, reps in ([] if short(rss) else works)])
            passes, items = _interleaved(gaps, rounds)
            said = ", ".join(f"{gap // MiB} MiB of other work" if how == WORK else
                             f"{gap / _MS:g} ms {'spinning' if how == SPIN else 'asleep'}" for gap, _, how in gaps)
            this.append((f"cold forks {rss // MiB}MiB after {said}, interleaved{per}",
                         _gaps_job(fb, store, cpu, llc, rss, passes, items)))
            for gap, reps in exits:
                this.append((f"cold exit {rss // MiB}MiB after the child slept {gap / _MS:g} ms{per}",
                             job(rss, "exit", gap, -(-reps // rounds), ["-E", str(gap)], cpu)))
            if other != cpu and not short(rss) and mig_reps:
                this.append((f"cold fork {rss // MiB}MiB after a move to another CPU{per}",
                             job(rss, "migrate", 0.0, -(-mig_reps // rounds), ["-M"], min(cpu, other))))
            if other != cpu and remote_reps:  # a pair, side by side: the remote extra is a few hundred us
                pair = [("remote", other, "the other CPU"), (REMOTE_LOCAL, cpu, "its parent's CPU")]
                chunks = EMPTY_REMOTE_CHUNKS if rss == 0 else 1
                reps = -(-(max(remote_reps, EMPTY_REMOTE_REPS) if rss == 0 else remote_reps) // (rounds * chunks))
                for chunk in range(chunks):
                    part = f" (part {chunk + 1} of {chunks})" if chunks > 1 else ""
                    for cond, exit_cpu, where in pair if (rnd + sizes.index(rss) + chunk) % 2 == 0 else pair[::-1]:
                        this.append((f"fork {rss // MiB}MiB, the children exiting on {where}{part}{per}",
                                     job(rss, cond, 0.0, reps, ["-R", str(exit_cpu)], cpu)))
            for gap, reps in ([] if rss != sizes[0] else unpinned):
                this.append((f"cold fork {rss // MiB}MiB after {gap / _MS:g} ms asleep, unpinned{per}",
                             job(rss, "unpinned", gap, -(-reps // rounds), ["-s", str(gap)], -1)))
        if rounds > 1:
            rng.shuffle(this)  # conditions interleaved: a drift of the host hits them all alike
        jobs += this
    grid = {(rss, gap) for rss in sizes for gap, _ in sleeps_of(rss)}
    jobs += layout_jobs(plan.name, grid, lambda rss, cond, x, reps, extra: job(rss, cond, x, reps, extra, cpu))
    return jobs


def _gaps_job(fb: str, store: Store, cpu: int, llc: int, rss: int, passes: int, items: list[str]) -> Callable[[], None]:
    """The sleeps, spins and co-runner sweeps of one size in one process, interleaved (forkbench cold -G): stored as
    one run per gap, as separate runs were, so the fit reads them alike."""
    def run() -> None:
        argv = [fb, "cold", "-r", str(rss), "-n", str(passes), "-w", "3", "-c", str(cpu), "-G", ",".join(items)]
        got: dict[str, Any] = {}
        ran = _run_or_refused(argv, layout_reader(store, got) if rss > 0 else None, store)
        if ran is None:
            return
        shape, samples = ran
        by: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for x in samples:
            key = (WORK, int(x["work"])) if x.get("work") else (SPIN if x.get("spin") else SLEEP, int(x["x_us"]))
            by.setdefault(key, []).append(x)
        for (cond, x), part in sorted(by.items()):
            _add_cold(store, {"rss": rss, "cond": cond, "x": x, "llc_bytes": llc}, shape, part, got)

    return run


def _add_cold(store: Store, key: dict[str, Any], shape: dict[str, Any], samples: list[dict[str, Any]],
              got: dict[str, Any]) -> None:
    """A cold run into the store, with the image's layout where it was read."""
    store.add("cold", key, shape, samples)
    if got:
        store.runs[-1]["layout"] = got["layout"]


def _run_or_refused(argv: list[str], on_ready: Callable[..., Any] | None,
                    store: Store) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One forkbench run: (shape, samples), or None where it refused (too little memory: noted in the store)."""
    try:
        shape, samples, _, _ = bench.run_bench(argv, on_ready=on_ready)
    except MeasurementError as exc:
        if "refused" in str(exc):
            store.refused.append(str(exc))
            return None
        raise
    return shape, samples


def _interleaved(gaps: list[tuple[int, int, str]], rounds: int) -> tuple[int, list[str]]:
    """forkbench cold -G's passes and gap list for (gap, reps, SLEEP / SPIN / WORK) asked over `rounds` (a gap in us,
    a WORK's in bytes swept): as many passes as the rarest gap needs (the longest sleep: each costs its own length),
    each gap repeated in a pass as often as its reps need over those passes."""
    passes = max(1, -(-min(reps for _, reps, _ in gaps) // rounds))
    items: list[str] = []
    for gap, reps, how in gaps:
        items += [f"{_ITEM_PREFIX[how]}{gap}"] * max(1, -(-reps // (rounds * passes)))
    return passes, items


def _pooled(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of the same (size, condition, amount) as one: rounds interleave conditions against drift."""
    pooled: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        k = r["key"]
        key = (k["rss"], k["cond"], k["x"])
        if key in pooled:
            pooled[key]["samples"] = pooled[key]["samples"] + r["samples"]
        elif r["samples"]:
            pooled[key] = {**r, "samples": list(r["samples"])}
    return list(pooled.values())


def _p50(run: dict[str, Any], field: str = "fork_cpu_ns") -> float:
    return statistics.median(x[field] for x in run["samples"]) / 1e3


def _cap_fit(ptes: np.ndarray, extra: np.ndarray, caps: list[float] | None = None,
             spread: np.ndarray | None = None) -> tuple[float, float, float]:
    """fixed + per_pte * min(ptes, cap) * spread through the sizes' cold extras (relative least squares), the cap
    one of `caps` (default: each size's PTEs, or none); spread 1 where not given."""
    scale = np.ones_like(ptes) if spread is None else spread
    best: tuple[float, float, float, float] | None = None
    for cap in caps or sorted({*ptes.tolist(), math.inf}):
        a = np.column_stack([np.ones_like(ptes), np.minimum(ptes, cap) * scale]) / extra[:, None]
        coef, _ = nnls(a, np.ones_like(extra))
        err = float(np.sum((a @ coef - 1.0) ** 2))
        if best is None or err < best[0] - 1e-9:
            best = (err, float(coef[0]), float(coef[1]), cap)
    assert best is not None
    _, fixed, per_pte, cap = best
    return fixed, per_pte, (cap if math.isfinite(cap) else float(ptes.max()) * 1e6)


def _curve(gap: np.ndarray, tau: float, beta: float) -> np.ndarray:
    return 1.0 - np.exp(-np.power(np.maximum(gap, 0.0) / tau, beta))


def _fit_curve(g: np.ndarray, c: np.ndarray) -> tuple[float, float] | None:
    """tau and beta of 1 - exp(-(gap/tau)^beta) (beta = 1 with fewer than three gaps); None if no fit."""
    try:
        if len(set(g.tolist())) >= 3:
            # beta >= 1: a curve steeper than exponential at 0 would cool the warm reference itself
            # dogbox: trf crawls for seconds when the points fit exactly (two of three gaps saturated at 1)
            (tau, beta), _ = curve_fit(_curve, g, c, p0=(3000.0, 1.5), bounds=([1.0, 1.0], [1e7, 4.0]),
                                       max_nfev=5000, method="dogbox")
            return float(tau), float(beta)
        (tau,), _ = curve_fit(lambda x, t: _curve(x, t, 1.0), g, c, p0=(3000.0,), bounds=([1.0], [1e7]), max_nfev=5000,
                              method="dogbox")
        return float(tau), 1.0
    except (RuntimeError, ValueError):
        return None


def _cold_table(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """One row per pooled cold run (p50s in us), and the back-to-back fork() p50 per size."""
    warm: dict[int, float] = {}
    table: list[dict[str, Any]] = []
    for r in runs:
        k = r["key"]
        row = {"rss_bytes": k["rss"], "cond": k["cond"], "x": k["x"], "n": len(r["samples"]),
               "fork_p50_us": round(_p50(r), 2), "fork_wall_p50_us": round(_p50(r, "fork_ns"), 2),
               "exit_p50_us": round(_p50(r, "exit_ns"), 2), "gap_p50_us": round(_p50(r, "gap_ns"), 1),
               "ptes": r["shape"].get("ptes", 0), "vmas": r["shape"].get("vmas"),
               "anon_vmas": r["shape"].get("anon_vmas"), "scatter": (r.get("layout") or {}).get("scatter"),
               "after_break": (r.get("layout") or {}).get("after_break"), "spread": _spread(r.get("layout") or {})}
        if any("next_cpu_ns" in x for x in r["samples"]):  # the fork right after each (forkbench cold -G)
            row["next_p50_us"] = round(_p50(r, "next_cpu_ns"), 2)
        if k["cond"] == "exit":  # the forks that followed one of the run's cold exits (the first followed a warm-up's)
            after = [x["fork_cpu_ns"] for x in r["samples"] if x["i"] >= 1]
            row["fork_after_exit_p50_us"] = round(statistics.median(after) / 1e3, 2) if after else None
        table.append(row)
        if k["cond"] == "sleep" and k["x"] == 0:
            warm[k["rss"]] = row["fork_p50_us"]
    return table, warm


def _spread(layout: dict[str, Any]) -> float | None:
    """The image's struct-page spread where its layout was read: recorded, not priced
    (calibration/data/layout-spread-20261202.json)."""
    v = spread_of(layout.get("pages"), layout.get("struct_page_pages"))
    return None if v is None else round(v, 2)


def _slept_images(runs: list[dict[str, Any]], rss: int, read: Callable[[dict[str, Any]], float | None]) -> list[float]:
    """`read` of the layout of every slept in-order image of `rss` bytes among `runs` (each round its own process)."""
    return [v for r in runs if r["key"]["rss"] == rss and r["key"]["cond"] == "sleep"
            and (v := read(r.get("layout") or {})) is not None]


def _spreads(runs: list[dict[str, Any]], sizes: list[int]) -> dict[int, float] | None:
    """Per size but the empty image, the median spread of its slept in-order images over every run (each round its
    own process and image: a pooled row keeps the first round's layout, while its extra pools every round's; the
    2026-12-03 12:36 AMD full grid's 64 MiB rounds sat at 5.68, 3.45 and 3.39, and the first alone put the per-page
    term at 0.6 of what the three gave); None unless every such size has one (the cold terms are then priced per
    page as measured, whatever the images' spread, as before the spread was read)."""
    out: dict[int, float] = {}
    for rss in sizes:
        if rss == 0:  # a few dozen pages of stack and libraries: the fixed part
            continue
        got = [v for v in _slept_images(runs, rss, _spread) if v]
        if not got:
            return None
        out[rss] = max(1.0, statistics.median(got))
    return out or None


def grid_spreads(store: Store) -> dict[int, float] | None:
    """The spread the cold terms were measured at, per size of the cold grid (its slept in-order images: _spreads);
    None where the grid read none."""
    runs = store.select("cold")
    return _spreads(runs, sorted({r["key"]["rss"] for r in runs})) if runs else None


def grid_scatters(store: Store) -> dict[int, float] | None:
    """The scatter of the cold grid's slept in-order images (the images the cold terms were measured on), per size
    but the empty image: every round's median; None where the grid read none."""
    runs = store.select("cold")
    got = {rss: _slept_images(runs, rss, lambda lay: lay.get("scatter")) for rss in {r["key"]["rss"] for r in runs} - {0}}
    return {rss: round(statistics.median(v), 4) for rss, v in sorted(got.items()) if v} or None


def _reference_gap(table: list[dict[str, Any]]) -> float | None:
    """How long before a back-to-back fork its image was last walked (us): the exit and reap of the previous
    child after its zap, bounded by the back-to-back run's exit_ns p50 (child's _exit to waitpid's return) at
    the emptiest image, where the walk itself is shortest. That fork is the warm reference: coldness 0 there."""
    refs = sorted((t["rss_bytes"], t["exit_p50_us"]) for t in table if t["cond"] == "sleep" and t["x"] == 0)
    return refs[0][1] if refs and refs[0][1] > 0 else None


def _longest_sleeps(table: list[dict[str, Any]], warm: dict[int, float], sizes: list[int]) -> dict[int, dict[str, Any]]:
    """Per size measured back to back: its row at the longest sleep (pooled over rounds: one row per gap)."""
    out: dict[int, dict[str, Any]] = {}
    for rss in sizes:
        slept = [t for t in table if t["rss_bytes"] == rss and t["cond"] == "sleep" and t["x"] > 0]
        if rss in warm and slept:
            out[rss] = max(slept, key=lambda t: t["x"])
    return out


# How far a larger image's cold extra must fall below the previous size's to mark a partly cold reference: a
# fall to under half (the AMD host, 2026-12-02 quick grid: 1,212 -> 168 us), not a dip within the grid's noise
# (the Intel host, 2026-12-02 full grid: 16 MiB 281 us, 64 MiB 222 us, then 894 and 4,202 us at 256 MiB and 1 GiB).
_FALL = 0.5


def _rising(sizes: list[int], sat: dict[int, float]) -> list[int]:
    """The sizes up to the largest whose cold extra still grew with the image. Beyond it the extra falls
    (2026-12-02 quick grid: 0, 64, 256 MiB -> 147, 1212, 168 us): the back-to-back reference of a larger
    image is itself partly cold (its fork costs more per PTE than the smaller size's), so that extra says
    how much colder a cold fork is than an already cold one, not what the caches kept warm. A fall is a drop
    below _FALL of the largest extra so far."""
    out: list[int] = []
    for s in sorted(sizes):
        if out and sat[s] < _FALL * max(sat[o] for o in out):
            break
        out.append(s)
    return out


def _footprints(sweeps: list[dict[str, Any]], rel: Callable[[dict[str, Any]], float], tau: float,
                beta: float) -> list[float]:
    """Per co-runner sweep (the rows of cond "work"), the footprint scale its coldness beyond its own duration's
    gives, as exp(-W/footprint) (sweeps that cooled nothing more are left out)."""
    fp = []
    for t in sweeps:
        c_time = float(_curve(np.array([t["gap_p50_us"]]), tau, beta)[0])
        c_work = 1.0 - (1.0 - rel(t)) / max(1e-9, 1.0 - c_time)
        if c_work > 0.01:
            fp.append(t["x"] / -math.log(1.0 - min(c_work, 0.999)))
    return fp


def _source(runs: list[dict[str, Any]], table: list[dict[str, Any]], sizes: list[int], ref: float | None,
            n_footprints: int) -> str:
    """The warmth section's provenance: what was measured and how each term was fitted."""
    llc = runs[0]["key"].get("llc_bytes", 0)
    n = sum(len(r["samples"]) for r in runs)
    gaps_ms = ", ".join(f"{x / _MS:g}" for x in sorted({t["x"] for t in table if t["cond"] == "sleep"}))
    return (f"measured: forkbench cold, pinned, the parent's CPU time in fork() (p50) at {', '.join(f'{s // MiB} MiB' for s in sizes)} "
            f"after sleeps of {gaps_ms} ms, "
            f"after another process swept multiples of the {llc // MiB} MiB last-level cache on the same CPU, and after a move "
            f"to the other CPU ({len(runs)} runs, {n} forks); coldness 1-exp(-(gap/tau)^beta) by scipy curve_fit to the "
            f"extra over back to back as a share of the extra after the longest sleep"
            + (f" with the back-to-back fork as coldness 0 at {ref:.0f} us (its exit and reap after the last walk)"
               if ref is not None else "")
            + "; fully cold extra: each size's after its longest sleep over the curve there, fitted as fixed + "
            "per_pte*min(ptes, cap) (NNLS); footprint and migration from their extras; "
            + (f"footprint_bytes: median of {n_footprints} sweeps' coldness beyond their own duration's, as exp(-W/footprint)"
               if n_footprints else "footprint_bytes 1e15 (no effect): no sweep cooled the image more than its own duration did")
            + "; walk_bytes_per_pte 80: assumption (the parent's and the child's PTE, 8 + 8 B, and the struct page, 64 B)")


def _spread_source(spreads: dict[int, float] | None) -> str:
    """The provenance of per_spread ("" without it)."""
    if not spreads:
        return ""
    sizes = ", ".join(f"{s // MiB} MiB {v:.2f}" for s, v in spreads.items())
    return ("; per_spread: per_pte_us is per page at spread 1, each size's extra divided by the median spread of its "
            f"slept images, every round's (lab.pagemap.spread_of: {sizes}"
            + "; the cold extra grows about linearly with it: on the 2026-12-02/03 Intel host 0.3-0.4 us per "
            "vmemmap page, calibration/data/layout-spread-20261202.json)")


def _fully_cold_scatter(slope: float, coldness: float, pairs: list[dict[str, Any]],
                        diag: dict[str, Any]) -> float | None:
    """per_scattered_pte_us fully cold: the slope fitted at `coldness` (its gap's) over it; None, with diag's
    cold_scatter_note, where that exceeds ColdTerms' bound: the A/B had no contrast to measure. On a guest whose
    free lists had fragmented for hours the in-order images came out scattered too, and the pairs' differences were
    the noise (2026-12-04 19:08 quick grid: 4.6 us a page, which the schema refused after the measurements)."""
    if slope / coldness <= MAX_PER_SCATTERED_PTE_US:
        return slope / coldness
    diag["cold_scatter_note"] = (
        f"per_scattered_pte_us fitted at {slope / coldness:.3g} us a page, over {MAX_PER_SCATTERED_PTE_US:g} (about "
        f"ten misses to memory a page): not priced; in-order images' scatter "
        + ", ".join(f"{p['rss_bytes'] // MiB} MiB {p['scatter_order']:.2f}" for p in pairs))
    return None


def _layout_terms(per_scattered: float | None, window: float, pairs: list[dict[str, Any]], coldness: float,
                  fixed: float, per_spread: bool, diag: dict[str, Any]) -> tuple[dict[str, float], str, str]:
    """dup_mmap's layout terms: the breaks' (fully cold from the slope fitted at `coldness`, SCATTER_GAP's) and, where
    the spread is priced, their bound (saturated_per_pte_us); with the breaks' source and the bound's."""
    scattered = None if per_scattered is None else _fully_cold_scatter(per_scattered, coldness, pairs, diag)
    saturated = saturated_per_pte(pairs, coldness, fixed) if per_spread else None
    terms = {**(_scatter_terms(scattered, window, pairs) if scattered is not None else {}),
             **({"saturated_per_pte_us": round(saturated, 6)} if saturated is not None else {})}
    return (terms, scatter_source(pairs if scattered is not None else [], window),
            "" if saturated is None else saturated_source(pairs, saturated))


def _scatter_terms(per_scattered: float, window: float, pairs: list[dict[str, Any]]) -> dict[str, float]:
    """The breaks' cold terms (fully cold per page, the in-order images' own scatter, the window unless 1)."""
    return {"per_scattered_pte_us": round(per_scattered, 6),
            "reference_scatter": round(statistics.median(p["scatter_order"] for p in pairs), 4),
            **({"scatter_window": round(window, 2)} if window != 1.0 else {})}


def _exit_source(points: dict[str, Any], terms: dict[str, Any] | None, residual: list[list[float]]) -> str:
    """The provenance of exit_mmap's cold terms and of the residual points."""
    sizes = ", ".join(f"{int(s) // MiB} MiB {p['exit_full_us']:.0f} us over {p['exit_warm_us']:.0f}"
                      for s, p in points.items() if "exit_full_us" in p)
    return ("; exit_mmap: forkbench cold -E (the child sleeps before its exit, the parent blocked in waitpid, both "
            f"pinned), the exit's fully cold extra (exit_ns p50 over the back-to-back run's): {sizes}"
            + ("; fitted as fixed + per_pte*min(ptes, cap) (NNLS), per page as measured on these images (no spread term: "
               "not measured)" if terms is not None else "; no size cooled: no exit_mmap terms")
            + ("; residual: the share of a walk's coldness left right after it, per size (ptes, share) "
               + ", ".join(f"({p:.0f}, {r:.2f})" for p, r in sorted(residual))
               + ", the median, weighted by the fully cold share squared, of the ratios of measured to fully cold "
               "extra over the exits right after each sleep's fork (share of the exit's fully cold extra at the "
               "coldness that fork found), the fork right after a cold exit (share of the fork's) and the fork right "
               "after each cold fork of the grid (the square root of its extra over the cold fork's: two walks, the "
               "fork's and its child's exit)" if residual else ""))


def _coldness_points(table: list[dict[str, Any]], warm: dict[int, float], measured: dict[int, float],
                     longest: dict[int, dict[str, Any]], good: list[int], ref: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The coldness curve's points: (p50 - warm) / X against the gap, over the sizes measured at the longest sleep
    of all, and the back-to-back fork as coldness 0 `ref` us after the last walk."""
    top = max(longest[s]["x"] for s in good)
    shaped = [s for s in good if longest[s]["x"] == top]
    pts = [(t["gap_p50_us"], (t["fork_p50_us"] - warm[t["rss_bytes"]]) / measured[t["rss_bytes"]])
           for t in table if t["cond"] == "sleep" and t["rss_bytes"] in shaped and t["x"] > 0]
    if ref is not None:
        # without it, a host whose image is fully cold after the shortest gap (12-02 05:40: 1 ms) pushes tau
        # to its bound (1 us), and the model then finds every back-to-back fork fully cold
        pts.append((ref, 0.0))
    return np.array([p[0] for p in pts]), np.clip(np.array([p[1] for p in pts]), 0.0, 1.0)


def _fit_exit(table: list[dict[str, Any]], warm: dict[int, float], fork_full: dict[int, float],
              cold_at: Callable[[float], float]) -> tuple[dict[str, Any] | None, dict[int, list[tuple[float, float]]],
                                                          dict[str, Any]]:
    """exit_mmap's ColdTerms, from the runs whose child slept before its exit (cond "exit") beside the same size's
    back-to-back and longest-sleep runs, and the pairs they give the residual (_fit_residual). Per size:

    - the exit's warm p50 is the back-to-back run's exit_ns (child's _exit to waitpid's return, both pinned to one CPU);
    - its fully cold extra is the exit after the child's longest sleep over that, divided by the curve's coldness
      there (assumption: the image cools by the fork's clock, however it was last walked; the full plan's shorter
      child sleep is kept in the table, not fitted: on 2026-12-03 100 ms left the exit 0.55-0.63 as cold as 1 s);
    - the residual pairs (fully cold share x, measured extra y; y = r * x): the exit right after a fork that found
      the image at coldness c (each parent sleep of the size) pays r * c of the exit's fully cold extra, and the fork
      right after a cold exit r of the fork's.

    Returns the terms (None where no size's exit cooled), the pairs per size and the per-size diagnostics."""
    def rows(rss: int, cond: str) -> list[dict[str, Any]]:
        return [t for t in table if t["rss_bytes"] == rss and t["cond"] == cond]

    def row(rss: int, cond: str, x: float | None = None) -> dict[str, Any] | None:
        got = [t for t in rows(rss, cond) if x is None or t["x"] == x]
        return max(got, key=lambda t: t["x"]) if got else None

    full: dict[int, float] = {}
    pairs: dict[int, list[tuple[float, float]]] = {}
    points: dict[str, Any] = {}
    for rss in sorted({t["rss_bytes"] for t in table if t["cond"] == "exit"}):
        b2b, exited = row(rss, "sleep", 0), row(rss, "exit")
        if b2b is None or exited is None or rss not in fork_full:
            continue
        warm_exit = b2b["exit_p50_us"]
        c_exit = cold_at(exited["x"])
        full[rss] = (exited["exit_p50_us"] - warm_exit) / c_exit
        got = pairs[rss] = []
        for slept in (t for t in rows(rss, "sleep") if t["x"] > 0):  # the exit right after a fork at coldness c
            got.append((full[rss] * cold_at(slept["gap_p50_us"]), slept["exit_p50_us"] - warm_exit))
        if exited.get("fork_after_exit_p50_us") is not None:  # the fork right after a cold exit
            got.append((fork_full[rss] * c_exit, exited["fork_after_exit_p50_us"] - warm[rss]))
        points[str(rss)] = {"exit_warm_us": warm_exit, "exit_full_us": round(full[rss], 1),
                            "residual_pairs_us": [[round(float(a), 1), round(float(b), 1)] for a, b in got]}
    fitted = [s for s in full if full[s] > 0.0]
    if not fitted:
        return None, pairs, points
    ptes = np.array([row(s, "exit")["ptes"] for s in fitted], dtype=float)
    fixed, per_pte, cap = _cap_fit(ptes, np.array([full[s] for s in fitted]))
    return {"fixed_us": round(fixed, 2), "per_pte_us": round(per_pte, 6), "pte_cap": round(cap, 0)}, pairs, points


def _fit_residual(table: list[dict[str, Any]], warm: dict[int, float], exit_pairs: dict[int, list[tuple[float, float]]],
                  points: dict[str, Any]) -> list[list[float]]:
    """The residual share r a walk leaves of the coldness it found, per size (ptes, r), from every pair that shows it:
    the exit pairs (_fit_exit: y = r * x) and the fork right after each cold fork of the grid (forkbench cold -G's
    next_cpu_ns: the cold fork's walk and its child's exit each left r, so its extra is r^2 times the cold fork's,
    over the back-to-back run's own next fork). Each pair gives r (sqrt(y / x) for the forks'), weighted by x^2 (a
    ratio's noise goes as 1 / x: the measurement's noise over the signal it divides), and r is their weighted
    median, clipped to 0..1. On the 2026-12-05 Intel host (family 6 model 207) the 64 MiB exit's whole cold extra
    was +66 us on a 745 us exit, within its noise, in one quick calibration: the exit pairs' plain median was 1.36,
    clipped to 1, a walk that leaves the image as cold as it found it (every back-to-back fork then fully cold: the
    validation's 64 MiB canary predicted at 922 us against 318-757 measured). The next quick calibration, with the
    forks' pairs: 64 MiB exit pairs 0.41-0.50 and one 1.30, forks' pairs 0.53-0.87 (x 131-165 us), r 0.43; 256 MiB
    0.69. Least squares through the origin is the x^2-weighted mean of the same ratios: one stalled exit (256 MiB
    +1,541 us where fully cold costs +351, 2026-12-05 AMD host) put it at 1.25; their weighted median stays at the
    others' 0.1."""
    ratios: dict[int, list[tuple[float, float]]] = {rss: [(y / x, x * x) for x, y in got if x > 0.0]
                                                    for rss, got in exit_pairs.items()}
    for rss in sorted({t["rss_bytes"] for t in table}):
        slept = [t for t in table if t["rss_bytes"] == rss and t["cond"] == "sleep"
                 and t.get("next_p50_us") is not None]
        ref = next((t["next_p50_us"] for t in slept if t["x"] == 0), None)
        if ref is None or rss not in warm:
            continue
        got = [(t["fork_p50_us"] - warm[rss], t["next_p50_us"] - ref) for t in slept if t["x"] > 0]
        got = [(x, y) for x, y in got if x > 0.0]
        if not got:
            continue
        ratios.setdefault(rss, []).extend((math.sqrt(max(y / x, 0.0)), x * x) for x, y in got)
        points.setdefault(str(rss), {})["next_fork_pairs_us"] = [[round(x, 1), round(y, 1)] for x, y in got]
    residual = []
    for rss, rw in sorted(ratios.items()):
        if rw:
            r, w = np.array(rw).T
            median = float(np.quantile(r, 0.5, weights=w, method="inverted_cdf"))
            ptes = next(t["ptes"] for t in table if t["rss_bytes"] == rss)
            residual.append([float(ptes), round(float(np.clip(median, 0.0, 1.0)), 3)])
    return residual


def _fit_remote(table: list[dict[str, Any]], wake_us: Callable[[float], float] | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Warmth.remote, from the runs whose children exit on the other CPU (cond "remote", forkbench -R) beside the same
    size's run whose children pin themselves to the parent's CPU (cond REMOTE_LOCAL, run next to it: the extra moved
    from +500 to +100 us at 64 MiB within an hour on the 2026-12-03 Intel host, so a reference minutes away does
    not do; without the pair, the back-to-back run). Per size, the fork's extra (fork() CPU time p50) and
    the exit's (exit_ns p50: the child's _exit to the parent's reap); less the empty image's extras, which other terms
    price (remote_free: the slab objects the exit freed there; the scheduler: the parent's wake-up from the other
    CPU); per stage per_pte_us * min(ptes, cap) through the sizes' extras by least squares, the cap one of
    the sizes' PTEs or none (what the other CPU's private caches hold of a larger image: measured flat beyond 64 MiB,
    2026-12-03 Intel host). A stage none of whose sizes paid more than the empty image gets no terms.
    The empty image's exit extra is not all priced elsewhere: remote_free prices the parent's next fork, and the
    model's cross-CPU wake-up of the parent (`wake_us`, cross_cpu_wake_us: the median it charges after an idle time)
    only part of the exit's. What is left over the wake-up, after an idle time of the remote exit's own p50 (the
    parent's CPU halts from the child's move to the wake-up), is exit_mmap's fixed remote term: the task, mm, files
    and signal structs the fork wrote on the parent's CPU, which the child's exit on the other CPU fetches from
    there (Intel model 207 host, 2026-12-05: +26-27 us at 0 MiB, the wake-up 5 us of it; the unpinned closed loop's
    round trip was predicted 98 us against 124 measured in the same calibration).
    Returns the terms per stage and the per-size extras (us)."""
    def row(rss: int, cond: str) -> dict[str, Any] | None:
        got = [t for t in table if t["rss_bytes"] == rss and t["cond"] == cond and t["x"] == 0]
        return got[0] if got else None

    points: dict[str, Any] = {}
    for rss in sorted({t["rss_bytes"] for t in table if t["cond"] == "remote"}):
        b2b, remote = row(rss, REMOTE_LOCAL) or row(rss, "sleep"), row(rss, "remote")
        if b2b is not None and remote is not None:
            points[rss] = {"ptes": remote["ptes"], "fork_extra_us": round(remote["fork_p50_us"] - b2b["fork_p50_us"], 1),
                           "exit_extra_us": round(remote["exit_p50_us"] - b2b["exit_p50_us"], 1)}
    terms: dict[str, Any] = {}
    base = points.get(0)
    for stage, field in ((DUP_MMAP, "fork_extra_us"), (EXIT_MMAP, "exit_extra_us")):
        pts = [(p["ptes"], p[field] - (base[field] if base else 0.0)) for s, p in points.items() if s > 0]
        pts = [(x, y) for x, y in pts if y > 0.0]
        if not pts:
            continue
        ptes, extra = np.array([x for x, _ in pts], dtype=float), np.array([y for _, y in pts])
        best: tuple[float, float, float] | None = None
        for cap in sorted({*ptes.tolist(), math.inf}):
            # absolute, not relative, least squares: a small image's extra of a few tens of us (16 MiB: +29 us over
            # the empty image's in the 2026-12-03 full calibration, against +304 at 64 MiB) would set the slope
            m = np.minimum(ptes, cap)
            k = float(m @ extra / (m @ m))
            err = float(np.sum((k * m - extra) ** 2))
            if best is None or err < best[0] - 1e-9:
                best = (err, k, cap)
        assert best is not None
        _, k, cap = best
        terms[stage] = {"per_pte_us": round(k, 6), "pte_cap": round(cap if math.isfinite(cap) else ptes.max() * 1e6, 0)}
    remote0 = row(0, "remote")
    if base is not None and remote0 is not None and wake_us is not None:
        base["exit_wake_us"] = round(wake_us(remote0["exit_p50_us"]), 1)
        fixed = base["exit_extra_us"] - base["exit_wake_us"]
        if fixed > 0.0:
            terms[EXIT_MMAP] = {**terms.get(EXIT_MMAP, {}), "fixed_us": round(fixed, 2)}
    return terms, {str(s): p for s, p in points.items()}


def cross_cpu_wake_us(scheduler: dict[str, Any], ipi_send_us: float) -> Callable[[float], float]:
    """The model's median price of waking a task on a vCPU halted `idle_us` (the argument) from the other CPU, from a
    profile's `scheduler` section (JSON) and its ipi_send stage's median: the waker's ipi_send (the curve's cost
    measured nearest that idle time, where the profile has one) and the wakee's idle wake-up (IdleWakeCurve.median_us:
    the median of what the model draws there), as model.SchedulerSpec's bound parameters charge them."""
    from ..profile_terms import IdleWakeCurve, IpiSendCurve

    median = float(scheduler["idle_wake"]["fixed_us"])
    curve = IdleWakeCurve(**scheduler["idle_wake_curve"]) if scheduler.get("idle_wake_curve") else None
    wake = (lambda _: median) if curve is None else (lambda idle_us: curve.median_us(idle_us, median))
    ipi = IpiSendCurve(**scheduler["ipi_send_curve"]) if scheduler.get("ipi_send_curve") else None
    if ipi is None:
        return lambda idle_us: wake(idle_us) + ipi_send_us
    nearest = ipi.nearest()
    return lambda idle_us: wake(idle_us) + ipi.costs[nearest(idle_us)].fixed_us


def _remote_source(terms: dict[str, Any], points: dict[str, Any]) -> str:
    """The provenance of Warmth.remote ("" without runs)."""
    if not points:
        return ""
    sizes = ", ".join(f"{int(s) // MiB} MiB fork {p['fork_extra_us']:+.0f} us, exit {p['exit_extra_us']:+.0f} us"
                      for s, p in points.items())
    base = points.get("0") or {}
    fixed = (terms.get(EXIT_MMAP) or {}).get("fixed_us")
    wake = ("" if "exit_wake_us" not in base else
            f"; exit_mmap's fixed_us: the empty image's exit extra less the model's cross-CPU wake-up of the parent "
            f"after the remote exit's p50 idle ({base['exit_wake_us']:.1f} us: ipi_send and idle_wake by the curves), "
            + (f"{fixed:.1f} us" if fixed else "none left"))
    return ("; remote: forkbench cold -R (each child pins itself to the other CPU before its exit) against the same "
            f"call with the pin to the parent's CPU, run beside it, p50 extras: {sizes}; less the empty image's "
            "(remote_free and the parent's cross-CPU wake-up price it), fitted as per_pte*min(ptes, cap) by least "
            "squares, the cap one of the sizes' PTEs or none"
            + ("" if any(t.get("per_pte_us") for t in terms.values())
               else "; no size paid more than the empty image: no per-page remote terms") + wake)


def _fully_cold_fit(table: list[dict[str, Any]], fitted: list[int], extras: dict[int, float], fell: bool,
                    spreads: dict[int, float] | None) -> tuple[float, float, float]:
    """fixed_us, per_pte_us and pte_cap through the fitted sizes' fully cold extras (per page at spread 1 where the
    spreads were read). Where the larger sizes' extras fell, what the caches kept warm stops growing at the largest
    fitted size: the cap is that size (fitted with it, not set after a fit that chose another: the 12:31 full
    grid's 0 and 16 MiB fit put a 6.6 us per-PTE slope under a cap of 26 PTEs, then moved the cap to 16 MiB: 14 ms
    predicted for a 16 MiB fork after 1 s asleep)."""
    ptes = np.array([next(t["ptes"] for t in table if t["rss_bytes"] == s) for s in fitted], dtype=float)
    return _cap_fit(ptes, np.array([extras[s] for s in fitted]), [float(ptes.max())] if fell else None,
                    None if spreads is None else np.array([spreads.get(s, 1.0) for s in fitted]))


def fit_warmth(store: Store, wake_us: Callable[[float], float] | None = None
               ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The profile's `warmth` section (None when not measured or no effect) and its diagnostics: the image's
    terms, then the kinds that copy no image (cold_families.py) on the image curve's time scale. `wake_us`: the
    model's cross-CPU wake-up price by idle time (cross_cpu_wake_us), for exit_mmap's fixed remote term (none
    without it)."""
    warmth, diag, tau = _fit_image_warmth(store, wake_us)
    families, families_src, families_diag = fit_families(store, tau)
    if warmth is None:
        if not families:
            return None, diag
        # a host whose images show no cold extra may still cool the kinds that copy none
        warmth = _families_only(families, diag.get("warmth_note", "no cold forks measured"))
    source = warmth.pop("source") + families_src
    warmth.update(({"families": families} if families else {}), source=source)
    diag.setdefault("warmth_fit", {}).update(families_diag)
    return warmth, diag


def _families_only(families: dict[str, dict[str, float]], why: str) -> dict[str, Any]:
    """A `warmth` section with no image terms, for the families' curves alone."""
    return {"tau_us": float(np.median([f["tau_us"] for f in families.values()])), "beta": 1.0,
            "footprint_bytes": 1e15, "migration": 0.0, "stages": {},
            "source": (f"no image terms ({why}); the curve's time scale the families' median, no footprint or "
                       "migration term (assumptions: nothing measured them here)")}


def _footprint_migration(table: list[dict[str, Any]], good: list[int], rel: Callable[[dict[str, Any]], float],
                         tau: float, beta: float) -> tuple[float, float, list[float], list[float]]:
    """The footprint scale (bytes) from the sweeps and the migration coldness from the moves, at the sizes with a
    cold extra, and their points (1e15 and 0 where not measured)."""
    fp = _footprints([t for t in table if t["cond"] == "work" and t["rss_bytes"] in good and t["x"] > 0],
                     rel, tau, beta)
    mig = [rel(t) for t in table if t["cond"] == "migrate" and t["rss_bytes"] in good]
    return (statistics.median(fp) if fp else 1e15), (statistics.median(mig) if mig else 0.0), fp, mig


def _fit_image_warmth(store: Store, wake_us: Callable[[float], float] | None
                      ) -> tuple[dict[str, Any] | None, dict[str, Any], float]:
    """The `warmth` section's image terms, their diagnostics and the curve's time scale (us; nan where unfitted);
    `wake_us` as fit_warmth's."""
    runs = _pooled(store.select("cold"))
    if not runs:
        return None, {}, math.nan
    sizes = sorted({r["key"]["rss"] for r in runs})
    table, warm = _cold_table(runs)
    diag: dict[str, Any] = {"cold_forks": table}
    longest = _longest_sleeps(table, warm, sizes)
    measured = {s: t["fork_p50_us"] - warm[s] for s, t in longest.items()}  # X: the extra at the longest sleep
    per_scattered, window, pairs = fit_cold_scatter(table)
    if per_scattered is not None:
        diag["cold_scatter_pairs"] = pairs
    # the in-order terms are fitted to the in-order images as they were, their own pages after a break included
    # (their share is the profile's reference_scatter): taking out what per_scattered_pte_us would price there
    # overshot on a box whose free lists had fragmented (12:31 and 13:05 full grids: a break every few dozen
    # pages, in-order extras corrected below zero at 64 MiB and 1 GiB), as a fragment's break costs less than a
    # far jump of the random and runs:K images
    good = [s for s in measured if measured[s] > 0.02 * warm[s]]
    if not good:
        diag["warmth_note"] = "no cold extra above 2% of the warm fork at the longest sleep: no warmth terms"
        return None, diag, math.nan
    # the empty image anchors the fixed part even when its extra is within the noise (floored at 1%)
    fitted = _rising(good + ([0] if 0 in measured and 0 not in good else []), measured)
    fell = any(g not in fitted for g in good)
    good = [g for g in good if g in fitted]  # the coldness, footprint and migration points: warm references only
    ref = _reference_gap(table)
    g, c = _coldness_points(table, warm, measured, longest, good, ref)
    tau_beta = _fit_curve(g, c)
    if tau_beta is None:
        diag["warmth_note"] = "the coldness against the gap does not fit 1-exp(-(gap/tau)^beta): no warmth terms"
        return None, diag, math.nan
    tau, beta = tau_beta

    def cold_at(gap_us: float) -> float:
        return max(float(_curve(np.array([gap_us]), tau, beta)[0]), 0.05)

    # fully cold: each size's extra at its longest sleep over the curve's coldness there (about 1 at 1 s)
    sat = {s: measured[s] / cold_at(longest[s]["gap_p50_us"]) for s in measured}
    spreads = _spreads(store.select("cold"), fitted)
    per_spread = spreads is not None
    fixed, per_pte, cap = _fully_cold_fit(table, fitted, {s: max(sat[s], 0.01 * warm[s]) for s in fitted}, fell, spreads)

    def extra(rss: int) -> float:
        p = next(t["ptes"] for t in table if t["rss_bytes"] == rss)
        return fixed + per_pte * min(p, cap) * (spreads.get(rss, 1.0) if spreads else 1.0)

    def rel(t: dict[str, Any]) -> float:
        return float(np.clip((t["fork_p50_us"] - warm[t["rss_bytes"]]) / extra(t["rss_bytes"]), 0.0, 0.999))

    footprint, migration, fp, mig = _footprint_migration(table, good, rel, tau, beta)
    layout, breaks_src, bound_src = _layout_terms(per_scattered, window, pairs, cold_at(SCATTER_GAP), fixed,
                                                  per_spread, diag)
    src = _source(runs, table, sizes, ref, len(fp)) + breaks_src + _spread_source(spreads) + bound_src
    cold_terms = {"fixed_us": round(fixed, 2), "per_pte_us": round(per_pte, 6), "pte_cap": round(cap, 0),
                  **({"per_spread": True} if per_spread else {}), **layout}
    exit_terms, exit_pairs, exit_points = _fit_exit(table, warm, sat, cold_at)
    residual = _fit_residual(table, warm, exit_pairs, exit_points)
    if exit_terms is not None or residual:
        src += _exit_source(exit_points, exit_terms, residual)
    remote, remote_points = _fit_remote(table, wake_us)
    src += _remote_source(remote, remote_points)
    warmth = {"tau_us": round(float(tau), 1), "beta": round(float(beta), 3),
              "footprint_bytes": round(float(footprint), 0), "walk_bytes_per_pte": 80.0,
              "migration": round(float(np.clip(migration, 0.0, 1.0)), 3),
              **({"residual": sorted(residual)} if residual else {}),
              "stages": {DUP_MMAP: cold_terms, **({EXIT_MMAP: exit_terms} if exit_terms is not None else {})},
              **({"remote": remote} if remote else {}), "source": src}
    diag["warmth_fit"] = {"warm_p50_us": {str(s): warm[s] for s in warm},
                          "cold_extra_us": {str(s): round(v, 1) for s, v in sat.items()},
                          "longest_sleep_extra_us": {str(s): [longest[s]["x"], round(v, 1)] for s, v in measured.items()},
                          "spread": {str(s): v for s, v in (spreads or {}).items()},
                          "coldness_points": [[round(float(a), 1), round(float(b), 3)] for a, b in zip(g, c)],
                          "footprint_estimates_bytes": [round(x) for x in fp], "migration_points": mig,
                          "exit": exit_points, "remote": remote_points}
    return warmth, diag, float(tau)
