"""Fitters of the fork path: fork() totals against the image, the split of their fixed part among
the stages of copy_process, the thread variant's setup, the thread-stack cache, and what a fork pays
after its CPU's last child exited on another CPU (remote frees).

Pinned, untraced fork() totals give the image-dependent slopes of dup_mmap (the only stage that walks
the image) and the fixed intercept; tracepoint segments (when recorded) split the intercept among the
fork-path stages. Segments: A = sys_enter(clone) -> mmap_lock acquire (copy_process up to dup_mmap),
B = the dup_mmap mmap_lock section, C = mmap_lock release -> task_newtask (copy_process's tail),
E = task_newtask -> sys_exit (wake_up_new_task and the return).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import MeasurementError
from ..kernel.stages import DO_EXIT, DUP_MMAP, EXIT_MMAP, RET_FROM_FORK, WAIT_REAP
from ..profile import CacheCurve, StageCost
from .caches import fit_cache_curve
from .layout import LayoutFit, first_images, fit_layout, runs_layout
from .fit import (WALK_TERMS, Config, LinearFit, cross_validate, fit_linear, fit_linear_through, median, residual_quantiles,
                  stage_cost, typical_quantiles)
from .jobs import THREAD_FREE
from .plan import FORK_MODE, SPAWN_MODE, THREAD_MODE, VFORK_MODE, Plan
from .samples import Evidence, fork_cfg, fork_field, group, pct, preempted_share, quantiles, seg_cfgs, vals

__all__ = ["ForkTotals", "ForkSplit", "ASSUMED", "fork_totals", "trace_segments", "fork_split", "fit_fork_path",
           "fit_thread_setup", "fit_stack_vmalloc", "fit_remote_free"]

# Shares of the fixed (image-independent) part of fork() among the fork-path stages when no
# tracepoints are available: measured by tracepoints on Linux 6.18 (Firecracker VM, AMD EPYC) with
# this same harness, pinned, 0 MiB image: A(setup+stack+dup_mm) 11.7, dup_mmap fixed ~14,
# tail 4.5, wake 5.5 us.
_NO_TRACE_SHARES = {"A": 0.33, "B": 0.39, "C": 0.13, "E": 0.15}

ASSUMED = {
    "stack_cache_hit": (0.6, "assumption: a cached vmalloc'd stack is zeroed (memset of THREAD_SIZE = 16 KiB, "
                             "~0.3 us) and charged to the memcg (~0.3 us); not separable by tracepoints"),
    "alloc_pid_hold": (0.4, "assumption: pidmap_lock is held around idr_alloc_cyclic for one pid-namespace level, "
                            "~0.2 us on bare metal, doubled for this VM's slower memory path; part of "
                            "copy_process_tail (not additive)"),
    "tasklist_fork_hold": (1.0, "assumption: tasklist_lock write section of copy_process (list insertions, "
                                "attach_pid x3-4, nr_threads++), ~0.5 us on bare metal, x2 for this VM; part of "
                                "copy_process_tail (not additive)"),
    "exit_notify_hold": (1.5, "assumption: exit_notify's tasklist_lock write section (forget_original_parent, "
                              "do_notify_parent with a SIGCHLD and a wake-up), ~0.7 us bare metal, x2 VM; part of "
                              "do_exit (not additive)"),
    "release_task_hold": (1.0, "assumption: release_task's tasklist_lock write section (__exit_signal, "
                               "__unhash_process), ~0.5 us bare metal, x2 VM; part of wait_reap (not additive)"),
}

# the traced segments of the base image kept for the fits and the diagnostics
_SEGMENTS = ("A", "B", "C", "E", "to_newtask", "first_run", "first_run_faults", RET_FROM_FORK, "child_touch",
             EXIT_MMAP, DO_EXIT, WAIT_REAP, "exit_total", "total", "child_start", "lock_wait")
BASE_KEY = {"rss": 0, "anon_vmas": 0, "file_vmas": 0, "thp": False, "pinned": True, "mode": FORK_MODE}


@dataclass
class ForkTotals:
    """The linear fit of fork() against the image, its configurations, and the held-out ones."""

    fit: LinearFit
    train: list[tuple[Config, list[dict[str, Any]]]]
    held: list[tuple[Config, list[dict[str, Any]]]]
    cache_curve: dict[str, Any] | None = None  # the curve of the fit's miss term (caches.py)
    layout: LayoutFit | None = None  # the scatter terms and the images' layout (layout.py)


@dataclass
class ForkSplit:
    """The fixed part of fork() split among segments A, B, C, E (us), and how it was split; segment A
    is then split into dup_mm, the stack (hit) and the rest of the setup (`setup_us`)."""

    shares: dict[str, float]
    how: str
    b_fit: LinearFit | None
    dup_mm_us: float = 0.0
    dup_mm_source: str = ""
    setup_us: float = 0.0


# how far apart the fitted images' walk miss shares must lie for the fit to tell a per-page cost from a per-miss cost
MISS_SPAN = 0.1


def _miss_separable(configs: list[Config]) -> bool:
    """Whether the images (with PTEs) miss the caches differently enough, MISS_SPAN apart, to fit per_pte_miss_us
    beside per_pte_us. Where they do not (the smoke plan's one image size, whose walk missed 0.24% on the
    2026-12-05 Intel host), the two columns are proportional and NNLS gives the slope to either: one smoke
    calibration of three put 15.3 us a missed page there, which priced a 64 MiB fork at 16.9 ms."""
    misses = [c.miss for c in configs if c.ptes > 0]
    return len(misses) >= 2 and max(misses) - min(misses) >= MISS_SPAN


# the ratio of the fitted configurations' largest VMA count to their smallest that fits per_vma_log_us beside
# per_vma_us: over 100x, log2 moves by ~6.6 and the two columns part (the quick plan's 26 .. 10,026 VMAs); the smoke
# plan's 26, 36 and 326 (log2 4.7 .. 8.3) leave them nearly proportional
TREE_SPAN = 100.0


def _tree_separable(configs: list[Config]) -> bool:
    """Whether the configurations' VMA counts span TREE_SPAN, over at least three counts, to fit per_vma_log_us."""
    counts = sorted({c.vmas for c in configs if c.vmas > 1})
    return len(counts) >= 3 and counts[-1] >= TREE_SPAN * counts[0]


def fork_totals(ev: Evidence, plan: Plan) -> ForkTotals:
    """Pinned, untraced fork(): the ground truth of fork() latency, fitted against the image."""
    held = set(plan.held_out)
    train, held_cfgs = [], []
    for lab, runs in group(ev.store, FORK_MODE, pinned=True, traced=False, mode=FORK_MODE).items():
        # the parent's CPU time in fork() (= its wall time when nothing preempted it): the intrinsic cost
        c = fork_cfg(runs, fork_field(runs), lab)
        k = runs[0]["key"]
        is_held = (k["rss"] in held and not k["thp"] and not k["anon_vmas"] and not k["file_vmas"])
        (held_cfgs if is_held else train).append((c, runs))
    if len(train) < 2:
        raise MeasurementError("too few fork configurations were measured to fit (memory refused?)")
    # the per-page cost bends where the walk outgrows the caches (caches.py): each image's miss share
    curve_d = fit_cache_curve(ev.store)
    curve = CacheCurve.model_validate(curve_d)
    for c, runs in train + held_cfgs:
        c.miss = curve.walk_miss(int(runs[0]["shape"]["ptes"]), int(runs[0]["shape"]["pmds"]))
    ev.diag["cache_curve"] = curve_d
    layout = ev.layout = _correct_for_layout(ev, plan, train, held_cfgs)
    # through the base image (its p50 exactly): every family's and the fork path's fixed parts build on it
    base = next((c for c, runs in train if _is_base(runs[0]["key"])), None)
    terms = ((WALK_TERMS if _miss_separable([c for c, _ in train]) else WALK_TERMS[:5])
             + (("per_vma_log_us",) if _tree_separable([c for c, _ in train]) else ()))
    total_fit = (fit_linear_through([c for c, _ in train], base, terms) if base is not None
                 else fit_linear([c for c, _ in train], terms))
    ev.diag["fork_total_fit"] = {"coef": total_fit.coef, "r2": round(total_fit.r2, 5),
                                 "through": base.label if base is not None else None,
                                 "rel_errors": {k: round(v, 4) for k, v in total_fit.rel_errors.items()},
                                 "n_samples": total_fit.n_samples,
                                 "cross_validation": cross_validate([c for c, _ in train], terms)}
    ev.diag["fork_p50_us"] = {c.label: pct(c.samples) for c, _ in train + held_cfgs}
    ev.diag["fork_wall_p50_us"] = {c.label: pct(vals(runs, "fork_ns")) for c, runs in train + held_cfgs}
    ev.diag["fork_preempted_share"] = {c.label: preempted_share(runs) for c, runs in train + held_cfgs}
    return ForkTotals(total_fit, train, held_cfgs, curve_d, layout)


def _correct_for_layout(ev: Evidence, plan: Plan, train: list, held: list) -> LayoutFit | None:
    """Each configuration's measured scatter (the median of its runs'); the fitted configurations' samples
    less their scatter term (dup_mmap's per_pte_scatter_us at that scatter, layout.py), so that the linear
    terms are those of an image in physical order and the scatter term alone prices the layout (the
    held-out ones stay as measured: their prediction carries the term)."""
    lay = fit_layout(ev.store, plan.layout_held_out)
    corrected = {}
    for c, runs in train + held:
        c.scatter, c.after_break = runs_layout(runs)
    for c, runs in train:
        sh = runs[0]["shape"]
        corr = lay.term_us(DUP_MMAP, int(sh["ptes"]), int(sh["pmds"]), c.scatter, c.after_break) if lay else 0.0
        if corr > 0:
            c.samples = [max(x - corr, 0.05 * x) for x in c.samples]
            corrected[c.label] = round(corr, 3)
    if lay is not None:
        ev.diag["image_layout"] = {
            "sweep_scatter": {c.label: round(c.scatter, 4) for c, runs in train + held if c.scatter},
            "first_images_scatter": [[rss, round(s, 4)] for rss, s in first_images(ev.store)],
            "dup_mmap_scatter_term_taken_out_us": corrected, "scatter_curve": lay.curve, "slopes": lay.slope,
            "ab": lay.rows}
    return lay


def _is_base(key: dict[str, Any]) -> bool:
    """The base image: RSS 0, no extra VMAs, THP off (what the families are measured at)."""
    return not key["rss"] and not key["anon_vmas"] and not key["file_vmas"] and not key["thp"]


def trace_segments(ev: Evidence) -> None:
    """The traced segments of the base image into `ev.seg`; without all of A, B, C, E the fits fall
    back to the untraced split (`ev.traced` turns False)."""
    if ev.traced:
        for name in _SEGMENTS:
            cf = seg_cfgs(ev.store, name, **BASE_KEY)
            ev.seg[name] = cf[0].samples if cf else []
        if not all(ev.seg.get(s) for s in ("A", "B", "C", "E")):
            ev.store.notes.append("tracepoint segments incomplete: falling back to the untraced split")
            ev.traced = False
    ev.diag["tracefs"] = ev.traced


def _traced_dup_mmap(ev: Evidence) -> LinearFit | None:
    """dup_mmap from the traced B segments (cross-check of the slopes), with the segments' diagnostics."""
    b_fit = None
    b_cfgs = [c for c in seg_cfgs(ev.store, "B", pinned=True, mode=FORK_MODE) if c.samples]
    if len(b_cfgs) >= 2:
        b_fit = fit_linear(b_cfgs)
        ev.diag["dup_mmap_traced_fit"] = {"coef": b_fit.coef, "r2": round(b_fit.r2, 5),
                                          "rel_errors": {k: round(v, 4) for k, v in b_fit.rel_errors.items()},
                                          "cross_validation": cross_validate(b_cfgs)}
    ev.diag["segments_base_us"] = {k: pct(v) for k, v in ev.seg.items() if v}
    ev.diag["segments_by_config_us"] = {
        c.label: {s: round(median(cc.samples), 3) for s in ("A", "B", "C", "E", EXIT_MMAP, DO_EXIT, WAIT_REAP)
                  for cc in seg_cfgs(ev.store, s, pinned=True, mode=FORK_MODE) if cc.label == c.label}
        for c in seg_cfgs(ev.store, "total", pinned=True, mode=FORK_MODE)}
    return b_fit


def fork_split(ev: Evidence, totals: ForkTotals) -> ForkSplit:
    """Split the untraced fork() intercept among A, B, C, E: by the traced segments' medians (scaled so
    that they add up to the untraced call), else by the shares measured on the reference VM."""
    b_fit = _traced_dup_mmap(ev) if ev.traced else None
    t_fixed = totals.fit.coef["fixed_us"]
    if ev.traced and b_fit is not None:
        seg = ev.seg
        A0, C0, E0 = median(seg["A"]), median(seg["C"]), median(seg["E"])
        B_fix = b_fit.coef["fixed_us"]
        traced_fixed = A0 + B_fix + C0 + E0
        k = t_fixed / traced_fixed if traced_fixed > 0 else 1.0
        ev.diag["trace_scale_k"] = round(k, 4)
        shares = {"A": A0 * k, "B": B_fix * k, "C": C0 * k, "E": E0 * k}
        how = (f"derived: untraced fork() intercept {t_fixed:.1f} us split by tracepoint segments "
               f"(base image, {len(seg['A'])} traced forks, {ev.pin_txt}; traced medians x{k:.3f} so that the "
               f"fork-path stages add up to the user-visible, untraced fork(): glibc wrapper, syscall entry/exit, "
               f"tracing overhead)")
    else:
        shares = {s: f * t_fixed for s, f in _NO_TRACE_SHARES.items()}
        how = (f"assumption: untraced fork() intercept {t_fixed:.1f} us split in fixed shares "
               f"{_NO_TRACE_SHARES} (shares measured by tracepoints on a Linux 6.18 VM; no tracefs here)")
    split = ForkSplit(shares, how, b_fit)
    split.dup_mm_us, split.dup_mm_source = _dup_mm(ev, split)
    split.setup_us = max(0.1, shares["A"] - ASSUMED["stack_cache_hit"][0] - split.dup_mm_us)
    return split


def _dup_mm(ev: Evidence, split: ForkSplit) -> tuple[float, str]:
    """dup_mm: fork's (A + C) minus vfork's enter->task_newtask (same setup, stack and tail, no mm)."""
    dup_mm = None
    if ev.traced:
        seg = ev.seg
        vf = [s["to_newtask"] for r in ev.store.select(VFORK_MODE, traced=True, pinned=True) for s in r["segments"]
              if "to_newtask" in s]
        if vf:
            raw = median(seg["A"]) + median(seg["C"]) - median(vf)
            dup_mm = max(0.3, raw) * ev.trace_scale
            ev.diag["dup_mm_derivation"] = {"fork_A_plus_C_us": round(median(seg["A"]) + median(seg["C"]), 3),
                                            "vfork_to_newtask_us": round(median(vf), 3), "raw_us": round(raw, 3)}
    if dup_mm is None:
        dup_mm = 0.2 * split.shares["A"]
        src = "assumption: 20% of the setup segment (mm_alloc, mm_init, pgd_alloc)"
    else:
        src = ("derived: traced fork (enter->mmap_lock + released->task_newtask) minus traced vfork "
               "(enter->task_newtask), scaled like the other fixed parts")
    return min(dup_mm, 0.8 * split.shares["A"]), src


# The share of a fork() call its image walk must take for the call's own spread to stand for dup_mmap's. Traced,
# the walk of a large image shows a slow mode the untraced one lacks (2026-12-02 Intel quick calibration: 256 MiB,
# traced dup_mmap segment p90 1.86x its median, 15% of the forks about 2x; the same size untraced, same run, p99
# 1.11x; the validation's untraced 256 MiB loop p99 1.23x), so the model's dup_mmap spread comes from untraced
# calls where the walk dominates them.
DOMINATED = 0.8


def _walk_dominated(totals: ForkTotals) -> list[Config]:
    """The untraced training configurations whose image-dependent part (the fit's prediction less its fixed
    part) is at least DOMINATED of their median."""
    terms = [t for t in totals.fit.coef if t != "fixed_us"]
    coef = [totals.fit.coef[t] for t in terms]
    return [c for c, _ in totals.train
            if c.median > 0 and float(c.features(terms) @ coef) >= DOMINATED * c.median]


def _dup_mmap(ev: Evidence, totals: ForkTotals, split: ForkSplit) -> StageCost:
    """dup_mmap: slopes from the untraced totals (only dup_mmap scales with the image), fixed from the split."""
    fit = totals.fit
    dm = dict(fit.coef)
    dm["fixed_us"] = split.shares["B"]
    measured = (f"measured: fork() against RSS / VMA count / THP ({fit.n_configs} configurations, "
                f"{fit.n_samples} samples, {ev.pin_txt}, ")
    if ev.traced:
        big = _walk_dominated(totals)
        typical = typical_quantiles(big)
        dm_q = typical or residual_quantiles(seg_cfgs(ev.store, "B", pinned=True, mode=FORK_MODE))
        res = (f"residual: the median over the untraced configurations where the walk is {DOMINATED:.0%} or more "
               f"of the call ({', '.join(c.label for c in big)}) of each one's sample / median quantiles (the traced "
               f"segment's spread holds tracing's own; pooled, one configuration's hiccups set the tail)" if typical
               else "residual from the traced segment")
        dm_src = (measured + f"untraced, the parent's CPU time in fork()), NNLS on medians (R^2 {fit.r2:.4f}); "
                  f"slopes cross-checked against the traced dup_mmap segment (mmap_lock acquire->release); "
                  f"{res}; fixed part " + split.how.split(":", 1)[0])
    else:
        dm_q = residual_quantiles([c for c, _ in totals.train])
        dm_src = (measured + f"the parent's CPU time in fork()), NNLS on medians (R^2 {fit.r2:.4f}); "
                  f"all image-dependent cost attributed to dup_mmap; no tracefs")
    if dm.get("per_vma_log_us", 0.0) > 0.0:
        dm_src += ("; per_vma_log_us: per VMA times log2 of the image's VMAs (each copied VMA linked into the "
                   "anon_vma's or the file's interval tree, O(log n); calibrate's extra VMAs share one tree), NNLS "
                   "with the other terms over VMA counts spanning 100x or more")
    if dm.get("per_pte_miss_us", 0.0) > 0.0:
        dm_src += ("; per_pte_miss_us: what a page costs more when the walk misses the caches, times the share of "
                   "the walk (80 B per page) that misses by the measured cache_curve, NNLS with the other terms")
    return stage_cost(dm, quantiles=dm_q, source=dm_src, cache_curve=totals.cache_curve)


# Where an image-independent segment of the fork path is traced: A and C in every traced fork image, E
# (task_newtask -> the call's return) in every family's creating call too.
_SEGMENT_MODES = {"A": (FORK_MODE,), "C": (FORK_MODE,), "E": (FORK_MODE, VFORK_MODE, THREAD_MODE, SPAWN_MODE)}


def _segment_residual(ev: Evidence, seg: str) -> tuple[list[float] | None, str]:
    """A fixed fork-path segment's residual: the typical configuration's (typical_quantiles over every traced,
    pinned configuration that has the segment), so that one configuration's hiccup does not set the tail of a
    stage every creation runs (2026-12-02 quick calibrations: wake_up_new_task's p99.5 52.5x, 6.0x and 8.1x
    from the base image's 60 forks alone; 3.4-3.9x typical over nine configurations); the base image's own
    where fewer than two configurations have it. (None, "") untraced."""
    if not ev.traced:
        return None, ""
    cfgs = [c for m in _SEGMENT_MODES[seg] for c in seg_cfgs(ev.store, seg, kind=m, pinned=True) if c.samples]
    typical = typical_quantiles(cfgs)
    if typical is None:
        return quantiles(ev.seg[seg]), "; residual: the base image's traced segment"
    return typical, (f"; residual: the median over {len(cfgs)} traced configurations of each one's sample / median "
                     "quantiles (one configuration's hiccups do not set the tail)")


def fit_fork_path(ev: Evidence, totals: ForkTotals, split: ForkSplit) -> dict[str, StageCost]:
    """The stages of fork() itself: setup, stack (hit), dup_mm, dup_mmap, the tail, the wake-up, and
    the lock hold times inside them (assumed)."""
    stack_hit = ASSUMED["stack_cache_hit"][0]
    shares, how = split.shares, split.how
    (qa, ra), (qc, rc), (qe, re_) = (_segment_residual(ev, s) for s in ("A", "C", "E"))
    st = {
        "copy_process_setup": stage_cost(fixed_us=split.setup_us, quantiles=qa, sigma=0.1,
                                         source=how + "; minus stack_cache_hit and dup_mm" + ra),
        "stack_cache_hit": stage_cost(fixed_us=stack_hit, sigma=0.1, source=ASSUMED["stack_cache_hit"][1]),
        "dup_mm": stage_cost(fixed_us=split.dup_mm_us, sigma=0.15, source=split.dup_mm_source),
        DUP_MMAP: _dup_mmap(ev, totals, split),
        "copy_process_tail": stage_cost(fixed_us=shares["C"], quantiles=qc, sigma=0.15,
                                        source=how + " (segment: mmap_lock released -> task_newtask)" + rc),
        "wake_up_new_task": stage_cost(fixed_us=shares["E"], quantiles=qe, sigma=0.15,
                                       source=how + " (segment: task_newtask -> sys_exit; pinned, so "
                                       "no IPI: ipi_send is added when the child goes to a halted CPU)" + re_),
    }
    for name in ("alloc_pid_hold", "tasklist_fork_hold", "exit_notify_hold", "release_task_hold"):
        v, src = ASSUMED[name]
        st[name] = stage_cost(fixed_us=v, sigma=0.2, source=src)
    return st


def fit_thread_setup(ev: Evidence, split: ForkSplit) -> dict[str, StageCost]:
    """A thread's copy_process up to the tail: traced pthread_create, else half the untraced call."""
    stack_hit = ASSUMED["stack_cache_hit"][0]
    tail = split.shares["C"]
    thr_create = vals(ev.store.select(THREAD_MODE, pinned=True, traced=False), "fork_ns")
    tt = [s["to_newtask"] for r in ev.store.select(THREAD_MODE, traced=True, pinned=True) for s in r["segments"]
          if "to_newtask" in s] if ev.traced else []
    if tt:
        k = ev.trace_scale
        v = max(0.1, median(tt) * k - stack_hit - tail)
        cost = stage_cost(fixed_us=v, quantiles=quantiles(tt), source=(
            f"derived: traced pthread_create clone3 enter->task_newtask ({len(tt)} samples, {ev.pin_txt}) x{k:.3f}, "
            f"minus stack_cache_hit and copy_process_tail"))
    else:
        v = max(0.1, 0.5 * median(thr_create) - stack_hit - tail) if thr_create else 0.5 * split.setup_us
        cost = stage_cost(fixed_us=v, sigma=0.2, source=(
            "assumption: half of the untraced pthread_create time (the other half is glibc's stack mmap, guard "
            "page, TLS set-up) minus stack and tail"))
    ev.diag["thread_create_us"] = pct(thr_create)
    return {"copy_process_setup_thread": cost}


def fit_stack_vmalloc(ev: Evidence) -> dict[str, StageCost]:
    """A thread-stack cache miss: bursts of 8 forks before any reap; index 0-1 hit, 2+ miss
    (NR_CACHED_STACKS = 2); traced, the forks with a vmalloc event against those without."""
    stack_hit = ASSUMED["stack_cache_hit"][0]
    burst = ev.store.select("burst", pinned=True)
    bf = fork_field(burst)
    hit = [x[bf] / 1e3 for r in burst for x in r["samples"] if x["j"] < 2]
    miss = [x[bf] / 1e3 for r in burst for x in r["samples"] if x["j"] >= 2]
    by_j = {str(j): round(median([x[bf] / 1e3 for r in burst for x in r["samples"] if x["j"] == j]), 3)
            for j in range(8)} if burst else {}
    ev.diag["burst_fork_p50_by_index_us"] = by_j
    diff = (median(miss) - median(hit)) if hit and miss else float("nan")
    ev.diag["stack_miss_minus_hit_us"] = round(diff, 3) if math.isfinite(diff) else None
    tb = [s for r in ev.store.select("burst", traced=True) for s in r["segments"] if "A" in s]
    a_v = [s["A"] for s in tb if s.get("vmalloc", 0) > 0]
    a_h = [s["A"] for s in tb if s.get("vmalloc", 0) == 0]
    if tb:
        ev.diag["stack_traced"] = {"forks": len(tb), "with_vmalloc": len(a_v), "A_vmalloc_p50_us": round(median(a_v), 3)
                                   if a_v else None, "A_cached_p50_us": round(median(a_h), 3) if a_h else None}
    if len(a_v) >= 5 and len(a_h) >= 5:
        dv = median(a_v) - median(a_h)
        cost = stage_cost(fixed_us=stack_hit + max(0.0, dv), sigma=0.3, source=(
            f"measured: traced bursts of 8 forks before any reap ({ev.pin_txt}): enter->mmap_lock segment of forks "
            f"with a vmalloc:alloc_vmap_area event ({len(a_v)}) minus those without ({len(a_h)}) = {dv:.2f} us, "
            f"plus stack_cache_hit"))
    elif math.isfinite(diff) and diff > 0.5:
        cost = stage_cost(fixed_us=stack_hit + diff, sigma=0.3, source=(
            f"measured: bursts of 8 forks before any reap ({len(burst[0]['samples']) // 8 if burst else 0} bursts, "
            f"{ev.pin_txt}): p50 of forks 3..8 minus forks 1..2 = {diff:.2f} us, plus stack_cache_hit"))
    else:
        cost = stage_cost(fixed_us=stack_hit + 2.0, sigma=0.3, source=(
            f"assumption: stack_cache_hit + 2 us (__vmalloc_node_range of 4 pages + vmap area + memcg charge); the "
            f"burst benchmark could not resolve a miss penalty (forks 3..8 minus 1..2 = "
            f"{diff:.2f} us, within noise)"))
    return {"stack_vmalloc": cost}


_REMOTE_SIGMA = 0.3  # the extra's lognormal residual: not separable from the fork's own spread


def _diffs(ev: Evidence, files: bool, anon: bool, thread: bool = False) -> tuple[list[float], dict[str, Any]] | None:
    """Per round, fork() p50 (`thread`: pthread_create's) with the children exiting on the other CPU minus
    with them exiting on the parent's (us), for the image with extra file VMAs, anonymous VMAs or
    neither; and its shape."""
    def pick(kind: str) -> list[dict[str, Any]]:
        return [r for r in ev.store.select(THREAD_FREE[kind] if thread else kind)
                if bool(r["key"]["file_vmas"]) == files and bool(r["key"]["anon_vmas"]) == anon]

    rem, loc = pick("free_remote"), pick("free_local")
    rounds = sorted({r["key"].get("round", 0) for r in rem} & {r["key"].get("round", 0) for r in loc})
    if not rounds:
        return None
    f = fork_field(rem + loc)

    def p50(runs: list[dict[str, Any]], rnd: int) -> float:
        return median(vals([r for r in runs if r["key"].get("round", 0) == rnd], f))

    return [p50(rem, r) - p50(loc, r) for r in rounds], loc[0]["shape"]


def fit_remote_free(ev: Evidence, st: dict[str, StageCost]) -> dict[str, Any] | None:
    """The profile's `remote_free` (kernel/slab.py), from forkbench -R runs (pinned; both sides' children
    call sched_setaffinity): per image and round, fork() p50 with the children exiting on the other CPU
    minus with them exiting on the parent's; the median over rounds, less the stack-cache miss those
    forks also take (stack_vmalloc - stack_cache_hit: StackCache prices it), is the base image's extra;
    the images with extra file and anonymous VMAs give its slopes per VMA and per anonymous VMA.
    None when the calibration has no such runs (one CPU, or a raw file older than them)."""
    base = _diffs(ev, False, False)
    if base is None:
        return None
    stack = st["stack_vmalloc"].fixed_us - st["stack_cache_hit"].fixed_us
    d0, sh0 = median(base[0]) - stack, base[1]
    per_vma = per_anon = 0.0
    files, anon = _diffs(ev, True, False), _diffs(ev, False, True)
    if files is not None and files[1]["vmas"] > sh0["vmas"]:
        per_vma = max(0.0, (median(files[0]) - stack - d0) / (files[1]["vmas"] - sh0["vmas"]))
    if anon is not None and anon[1]["anon_vmas"] > sh0["anon_vmas"]:
        rest = median(anon[0]) - stack - d0 - per_vma * (anon[1]["vmas"] - sh0["vmas"])
        per_anon = max(0.0, rest / (anon[1]["anon_vmas"] - sh0["anon_vmas"]))
    fixed = max(0.0, d0 - per_vma * sh0["vmas"] - per_anon * sh0["anon_vmas"])
    runs = {"base": base, "file VMAs": files, "anon VMAs": anon}
    txt = "; ".join(f"{k} ({v[1]['vmas']} VMAs, {v[1]['anon_vmas']} anon): {', '.join(f'{d:.1f}' for d in v[0])}"
                    for k, v in runs.items() if v is not None)
    ev.diag["remote_free"] = {k: {"vmas": v[1]["vmas"], "anon_vmas": v[1]["anon_vmas"],
                                  "remote_minus_local_us": [round(d, 2) for d in v[0]]}
                              for k, v in runs.items() if v is not None}
    ev.diag["remote_free"]["stack_miss_us"] = round(stack, 3)
    out = {"fixed_us": round(fixed, 3), "per_vma_us": round(per_vma, 4), "per_anon_vma_us": round(per_anon, 4),
           "sigma": _REMOTE_SIGMA, "source": (
               f"measured: fork() {ev.pin_txt}, each child pinning itself to the other CPU before it exits, "
               f"against the same loop with its pin to the parent's CPU (rounds alternate the order); p50 "
               f"remote - local per round, {txt} us; medians less the stack-cache miss those forks take "
               f"({stack:.2f} us, stack_vmalloc - stack_cache_hit), solved for the fixed part and the slopes per "
               f"VMA and per anonymous VMA (floored at 0); sigma {_REMOTE_SIGMA} is an assumption (the extra's "
               f"spread is not separable from the fork's own)")}
    thread = _diffs(ev, False, False, thread=True)
    if thread is not None:
        ev.diag["remote_free"]["thread_remote_minus_local_us"] = [round(d, 2) for d in thread[0]]
        out["thread_us"] = round(max(0.0, median(thread[0]) - stack), 3)
        out["source"] += (
            f"; thread_us: the same A/B with pthread_create (the thread pins itself before it returns; it releases "
            f"its task and pid on the CPU it exits on), p50 remote - local per round "
            f"{', '.join(f'{d:.1f}' for d in thread[0])} us, their median less the same stack-cache miss")
    return out
