"""From raw measurements to a profile: the stage costs, the scheduler section and the diagnostics.

Pinned, untraced fork() totals give the image-dependent slopes of dup_mmap (the only stage that
walks the image) and the fixed intercept; tracepoint segments (when recorded) split the intercept
among the fork-path stages and give the exit-side and child-side stages; the microbenchmarks give
COW, page-fault, stack-cache and scheduler costs. What cannot be separated is an explicit
assumption with its reasoning in `source`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import MeasurementError
from ..lab import debugfs_base_slice as _debugfs_base_slice
from .fit import TERMS, Config, cross_validate, fit_linear, median, residual_quantiles, stage_cost
from .plan import Plan, Store, label as _label
from .warmth import fit_warmth

__all__ = ["build_profile"]


def _clean(x: dict[str, Any]) -> bool:
    """A fork() sample that kept its CPU (wall time within 5 us and 2% of its CPU time)."""
    return "fork_cpu_ns" in x and x["fork_ns"] - x["fork_cpu_ns"] <= max(5000, 0.02 * x["fork_cpu_ns"])


def _fork_cfg(runs: list[dict[str, Any]], field_: str, label: str, source: str = "samples") -> Config:
    shape = runs[0]["shape"]
    vals: list[float] = []
    rows_all = [x for r in runs for x in r[source] if field_ in x]
    if field_ == "fork_cpu_ns":
        # samples that were preempted inside fork() resume with cold caches: their CPU time is inflated
        # too, so the samples that kept their CPU are used when there are enough of them
        clean = [x for x in rows_all if _clean(x)]
        if len(clean) >= max(5, 0.1 * len(rows_all)):
            rows_all = clean
        elif len(rows_all) >= 8:
            # too few: the CPU time grows with the time spent preempted (cold caches on resumption);
            # take each sample back along a robust (Theil-Sen) slope to zero time preempted
            from scipy.stats import theilslopes

            cpu = np.array([x["fork_cpu_ns"] for x in rows_all], dtype=float)
            offt = np.array([max(0.0, x["fork_ns"] - x["fork_cpu_ns"]) for x in rows_all], dtype=float)
            if np.ptp(offt) > 0:
                slope = float(theilslopes(cpu, offt)[0])
                if slope > 0:
                    return Config(vmas=shape["vmas"], anon_vmas=shape["anon_vmas"], ptes=shape["ptes"],
                                  pmds=shape["pmds"], samples=list(np.maximum(cpu - slope * offt, 0.05 * cpu) / 1000.0),
                                  label=label)
    vals = [x[field_] / (1000.0 if source == "samples" else 1.0) for x in rows_all]
    return Config(vmas=shape["vmas"], anon_vmas=shape["anon_vmas"], ptes=shape["ptes"], pmds=shape["pmds"],
                  samples=vals, label=label)



# Shares of the fixed (image-independent) part of fork() among the fork-path stages when no
# tracepoints are available: measured by tracepoints on Linux 6.18 (Firecracker VM, AMD EPYC) with
# this same harness, pinned, 0 MiB image: A(setup+stack+dup_mm) 11.7, dup_mmap fixed ~14,
# tail 4.5, wake 5.5 us.
_NO_TRACE_SHARES = {"A": 0.33, "B": 0.39, "C": 0.13, "E": 0.15}

_ASSUMED = {
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


def _seg_cfgs(store: Store, seg: str, kind: str = "fork", **key: Any) -> list[Config]:
    """Per traced configuration: a Config of one segment's samples."""
    out = []
    for r in store.select(kind, traced=True, **key):
        vals = [s[seg] for s in r["segments"] if seg in s and s[seg] >= 0]
        if vals:
            sh = r["shape"]
            out.append(Config(sh["vmas"], sh["anon_vmas"], sh["ptes"], sh["pmds"], 1, vals, _label(r["key"])))
    return out


def _group(store: Store, kind: str, **key: Any) -> dict[str, list[dict[str, Any]]]:
    g: dict[str, list[dict[str, Any]]] = {}
    for r in store.select(kind, **key):
        g.setdefault(_label(r["key"]), []).append(r)
    return g


def _vals(runs: list[dict[str, Any]], f: str, scale: float = 1e-3) -> list[float]:
    return [x[f] * scale for r in runs for x in r["samples"] if f in x]


def _q(samples: list[float]) -> list[float]:
    return residual_quantiles([Config(samples=samples)])


def _pct(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, dtype=float)
    if not a.size:
        return {}
    return {"n": int(a.size), "p50": round(float(np.median(a)), 3), "p90": round(float(np.quantile(a, 0.9)), 3),
            "p99": round(float(np.quantile(a, 0.99)), 3)}


def build_profile(store: Store, plan: Plan, facts: dict[str, Any], traced: bool, cpu: int,
                  extra_prov: dict[str, Any]) -> dict[str, Any]:
    st: dict[str, dict[str, Any]] = {}
    diag: dict[str, Any] = {
        "plan": plan.name, "refused": store.refused, "notes": list(store.notes),
        "about": ("fits: NNLS on per-configuration medians weighted by 1/median; cross_validation: leave one "
                  "configuration out, refit, predict its p50 (a configuration that alone determines a term, e.g. the "
                  "only THP or VMA-count size in a traced fit, cannot be predicted without it: errors near -1 there "
                  "mean 'unidentifiable', not a bad fit); residual quantiles: sample / median of its configuration "
                  "at p = 0.005, 0.05, ..., 0.95, 0.995; held_out: sizes measured in the same rounds but never "
                  "fitted, with the fork() p50 the profile predicts (sum of the fork-path stage medians, pinned, so "
                  "without ipi_send); fork times: the parent's time inside fork(), pinned, taken as its thread CPU "
                  "time over the call (CLOCK_THREAD_CPUTIME_ID), which equals the wall time when nothing preempted "
                  "it and stays the intrinsic cost when other load on this shared machine preempts a long copy at "
                  "its cond_resched points; only the samples that kept their CPU are used when there are enough, "
                  "else each sample's CPU time is taken back to zero time preempted along a Theil-Sen slope "
                  "(preempted copies resume with cold caches); fork_wall_p50_us and preempted_share give the "
                  "wall-clock view")}
    pin_txt = f"pinned to CPU {cpu}"
    held = set(plan.held_out)

    # ---- fork totals (untraced, pinned): the ground truth of fork() latency
    fork_groups = {k: v for k, v in _group(store, "fork", pinned=True, traced=False, mode="fork").items()}
    train, held_cfgs = [], []
    for lab, runs in fork_groups.items():
        # the parent's CPU time in fork() (= its wall time when nothing preempted it): the intrinsic cost
        c = _fork_cfg(runs, _FORK_FIELD(runs), lab)
        k = runs[0]["key"]
        is_held = (k["rss"] in held and not k["thp"] and not k["anon_vmas"] and not k["file_vmas"])
        (held_cfgs if is_held else train).append((c, runs))
    if len(train) < 2:
        raise MeasurementError("too few fork configurations were measured to fit (memory refused?)")
    total_fit = fit_linear([c for c, _ in train])
    diag["fork_total_fit"] = {"coef": total_fit.coef, "r2": round(total_fit.r2, 5),
                              "rel_errors": {k: round(v, 4) for k, v in total_fit.rel_errors.items()},
                              "n_samples": total_fit.n_samples,
                              "cross_validation": cross_validate([c for c, _ in train])}
    diag["fork_p50_us"] = {c.label: _pct(c.samples) for c, _ in train + held_cfgs}
    diag["fork_wall_p50_us"] = {c.label: _pct(_vals(runs, "fork_ns")) for c, runs in train + held_cfgs}
    diag["fork_preempted_share"] = {c.label: _preempted_share(runs) for c, runs in train + held_cfgs}

    # ---- segments from tracepoints
    seg = {}
    base_key = {"rss": 0, "anon_vmas": 0, "file_vmas": 0, "thp": False, "pinned": True, "mode": "fork"}
    if traced:
        for name in ("A", "B", "C", "E", "to_newtask", "first_run", "first_run_faults", "ret_from_fork",
                     "child_touch", "exit_mmap", "do_exit", "wait_reap",
                     "exit_total", "total", "child_start", "lock_wait"):
            cf = _seg_cfgs(store, name, **base_key)
            seg[name] = cf[0].samples if cf else []
        seg_ok = all(seg.get(s) for s in ("A", "B", "C", "E"))
        if not seg_ok:
            store.notes.append("tracepoint segments incomplete: falling back to the untraced split")
            traced = False
    diag["tracefs"] = traced

    # dup_mmap from the traced B segments (cross-check of the slopes)
    b_fit = None
    if traced:
        b_cfgs = _seg_cfgs(store, "B", pinned=True, mode="fork")
        b_cfgs = [c for c in b_cfgs if c.samples]
        if len(b_cfgs) >= 2:
            b_fit = fit_linear(b_cfgs)
            diag["dup_mmap_traced_fit"] = {"coef": b_fit.coef, "r2": round(b_fit.r2, 5),
                                           "rel_errors": {k: round(v, 4) for k, v in b_fit.rel_errors.items()},
                                           "cross_validation": cross_validate(b_cfgs)}
        diag["segments_base_us"] = {k: _pct(v) for k, v in seg.items() if v}
        diag["segments_by_config_us"] = {
            c.label: {s: round(median(cc.samples), 3) for s in ("A", "B", "C", "E", "exit_mmap", "do_exit", "wait_reap")
                      for cc in _seg_cfgs(store, s, pinned=True, mode="fork") if cc.label == c.label}
            for c in _seg_cfgs(store, "total", pinned=True, mode="fork")}

    # ---- split of the fixed part of fork() among the stages
    T = total_fit.coef
    t_fixed = T["fixed_us"]
    if traced and b_fit is not None:
        A0, C0, E0 = median(seg["A"]), median(seg["C"]), median(seg["E"])
        B_fix = b_fit.coef["fixed_us"]
        traced_fixed = A0 + B_fix + C0 + E0
        k = t_fixed / traced_fixed if traced_fixed > 0 else 1.0
        diag["trace_scale_k"] = round(k, 4)
        shares = {"A": A0 * k, "B": B_fix * k, "C": C0 * k, "E": E0 * k}
        how = (f"derived: untraced fork() intercept {t_fixed:.1f} us split by tracepoint segments "
               f"(base image, {len(seg['A'])} traced forks, {pin_txt}; traced medians x{k:.3f} so that the "
               f"fork-path stages add up to the user-visible, untraced fork(): glibc wrapper, syscall entry/exit, "
               f"tracing overhead)")
    else:
        shares = {s: f * t_fixed for s, f in _NO_TRACE_SHARES.items()}
        how = (f"assumption: untraced fork() intercept {t_fixed:.1f} us split in fixed shares "
               f"{_NO_TRACE_SHARES} (shares measured by tracepoints on a Linux 6.18 VM; no tracefs here)")

    stack_hit = _ASSUMED["stack_cache_hit"][0]
    # dup_mm: fork's (A + C) minus vfork's enter->task_newtask (same setup, stack and tail, no mm)
    dup_mm = None
    if traced:
        vf = [s["to_newtask"] for r in store.select("vfork", traced=True, pinned=True) for s in r["segments"] if "to_newtask" in s]
        if vf:
            raw = median(seg["A"]) + median(seg["C"]) - median(vf)
            dup_mm = max(0.3, raw) * diag.get("trace_scale_k", 1.0)
            diag["dup_mm_derivation"] = {"fork_A_plus_C_us": round(median(seg["A"]) + median(seg["C"]), 3),
                                         "vfork_to_newtask_us": round(median(vf), 3), "raw_us": round(raw, 3)}
    if dup_mm is None:
        dup_mm = 0.2 * shares["A"]
        dup_mm_src = "assumption: 20% of the setup segment (mm_alloc, mm_init, pgd_alloc)"
    else:
        dup_mm_src = ("derived: traced fork (enter->mmap_lock + released->task_newtask) minus traced vfork "
                      "(enter->task_newtask), scaled like the other fixed parts")
    dup_mm = min(dup_mm, 0.8 * shares["A"])
    setup = max(0.1, shares["A"] - stack_hit - dup_mm)

    a_q = _q(seg["A"]) if traced else None
    st["copy_process_setup"] = stage_cost(fixed_us=setup, quantiles=a_q, sigma=0.1, source=(
        how + "; minus stack_cache_hit and dup_mm"))
    st["stack_cache_hit"] = stage_cost(fixed_us=stack_hit, sigma=0.1, source=_ASSUMED["stack_cache_hit"][1])
    st["dup_mm"] = stage_cost(fixed_us=dup_mm, sigma=0.15, source=dup_mm_src)

    # dup_mmap: slopes from the untraced totals (only dup_mmap scales with the image), fixed from the split
    dm = dict(T)
    dm["fixed_us"] = shares["B"]
    if traced:
        b_cfgs = _seg_cfgs(store, "B", pinned=True, mode="fork")
        dm_q = residual_quantiles(b_cfgs)
        dm_src = (f"measured: fork() against RSS / VMA count / THP ({total_fit.n_configs} configurations, "
                  f"{total_fit.n_samples} samples, {pin_txt}, untraced, the parent's CPU time in fork()), NNLS on medians (R^2 {total_fit.r2:.4f}); "
                  f"slopes cross-checked against the traced dup_mmap segment (mmap_lock acquire->release); "
                  f"residual from the traced segment; fixed part " + how.split(":", 1)[0])
    else:
        dm_q = residual_quantiles([c for c, _ in train])
        dm_src = (f"measured: fork() against RSS / VMA count / THP ({total_fit.n_configs} configurations, "
                  f"{total_fit.n_samples} samples, {pin_txt}, the parent's CPU time in fork()), NNLS on medians (R^2 {total_fit.r2:.4f}); "
                  f"all image-dependent cost attributed to dup_mmap; no tracefs")
    st["dup_mmap"] = stage_cost(dm, quantiles=dm_q, source=dm_src)
    st["copy_process_tail"] = stage_cost(fixed_us=shares["C"], quantiles=_q(seg["C"]) if traced else None,
                                         sigma=0.15, source=how + " (segment: mmap_lock released -> task_newtask)")
    st["wake_up_new_task"] = stage_cost(fixed_us=shares["E"], quantiles=_q(seg["E"]) if traced else None,
                                        sigma=0.15, source=how + " (segment: task_newtask -> sys_exit; pinned, so "
                                        "no IPI: ipi_send is added when the child goes to a halted CPU)")
    for name in ("alloc_pid_hold", "tasklist_fork_hold", "exit_notify_hold", "release_task_hold"):
        v, src = _ASSUMED[name]
        st[name] = stage_cost(fixed_us=v, sigma=0.2, source=src)

    # ---- threads
    thr = store.select("thread", pinned=True, traced=False)
    thr_create = _vals(thr, "fork_ns")
    if traced:
        tt = [s["to_newtask"] for r in store.select("thread", traced=True, pinned=True) for s in r["segments"] if "to_newtask" in s]
    else:
        tt = []
    if tt:
        k = diag.get("trace_scale_k", 1.0)
        v = max(0.1, median(tt) * k - stack_hit - shares["C"])
        src = (f"derived: traced pthread_create clone3 enter->task_newtask ({len(tt)} samples, {pin_txt}) x{k:.3f}, "
               f"minus stack_cache_hit and copy_process_tail")
        st["copy_process_setup_thread"] = stage_cost(fixed_us=v, quantiles=_q(tt), source=src)
    else:
        v = max(0.1, 0.5 * median(thr_create) - stack_hit - shares["C"]) if thr_create else 0.5 * setup
        st["copy_process_setup_thread"] = stage_cost(fixed_us=v, sigma=0.2, source=(
            "assumption: half of the untraced pthread_create time (the other half is glibc's stack mmap, guard "
            "page, TLS set-up) minus stack and tail"))
    diag["thread_create_us"] = _pct(thr_create)

    # ---- stack cache: bursts of 8 forks before any reap; index 0-1 hit, 2+ miss (NR_CACHED_STACKS = 2)
    burst = store.select("burst", pinned=True)
    bf = _FORK_FIELD(burst)
    hit = [x[bf] / 1e3 for r in burst for x in r["samples"] if x["j"] < 2]
    miss = [x[bf] / 1e3 for r in burst for x in r["samples"] if x["j"] >= 2]
    by_j = {str(j): round(median([x[bf] / 1e3 for r in burst for x in r["samples"] if x["j"] == j]), 3)
            for j in range(8)} if burst else {}
    diag["burst_fork_p50_by_index_us"] = by_j
    diff = (median(miss) - median(hit)) if hit and miss else float("nan")
    diag["stack_miss_minus_hit_us"] = round(diff, 3) if math.isfinite(diff) else None
    tb = [s for r in store.select("burst", traced=True) for s in r["segments"] if "A" in s]
    a_v = [s["A"] for s in tb if s.get("vmalloc", 0) > 0]
    a_h = [s["A"] for s in tb if s.get("vmalloc", 0) == 0]
    if tb:
        diag["stack_traced"] = {"forks": len(tb), "with_vmalloc": len(a_v), "A_vmalloc_p50_us": round(median(a_v), 3)
                                if a_v else None, "A_cached_p50_us": round(median(a_h), 3) if a_h else None}
    if len(a_v) >= 5 and len(a_h) >= 5:
        dv = median(a_v) - median(a_h)
        st["stack_vmalloc"] = stage_cost(fixed_us=stack_hit + max(0.0, dv), sigma=0.3, source=(
            f"measured: traced bursts of 8 forks before any reap ({pin_txt}): enter->mmap_lock segment of forks "
            f"with a vmalloc:alloc_vmap_area event ({len(a_v)}) minus those without ({len(a_h)}) = {dv:.2f} us, "
            f"plus stack_cache_hit"))
    elif math.isfinite(diff) and diff > 0.5:
        st["stack_vmalloc"] = stage_cost(fixed_us=stack_hit + diff, sigma=0.3, source=(
            f"measured: bursts of 8 forks before any reap ({len(burst[0]['samples']) // 8 if burst else 0} bursts, "
            f"{pin_txt}): p50 of forks 3..8 minus forks 1..2 = {diff:.2f} us, plus stack_cache_hit"))
    else:
        st["stack_vmalloc"] = stage_cost(fixed_us=stack_hit + 2.0, sigma=0.3, source=(
            f"assumption: stack_cache_hit + 2 us (__vmalloc_node_range of 4 pages + vmap area + memcg charge); the "
            f"burst benchmark could not resolve a miss penalty (forks 3..8 minus 1..2 = "
            f"{diff:.2f} us, within noise)"))

    # ---- child start, exec, exit, wait
    k = diag.get("trace_scale_k", 1.0)
    base_unt = [r for r in store.select("fork", pinned=True, traced=False, mode="fork") if r["key"]["rss"] == 0
                and not r["key"]["anon_vmas"] and not r["key"]["file_vmas"] and not r["key"]["thp"]]
    ctx = _context_switch(store)
    rff = [v for v in seg.get("ret_from_fork", []) if v > 0] if traced else []
    touch = [v for v in seg.get("child_touch", []) if v > 0] if traced else []
    # A CLONE_VM child (posix_spawn's) returns to user space without switching to a new mm; a fork
    # child's first run adds the switch to its fresh mm and the COW faults of its first writes.
    rff_vm = [s["ret_from_fork"] for r in store.select("spawn", traced=True, pinned=True) for s in r["segments"]
              if (s.get("ret_from_fork") or 0) > 0] if traced else []
    first = [v for v in seg.get("first_run", []) if v > 0] if traced else []
    if traced and len(rff_vm) >= 5 and len(first) >= 5:
        base = median(rff_vm)
        extra = [max(0.1, v - base) for v in first]
        st["ret_from_fork"] = stage_cost(fixed_us=base, quantiles=_q(rff_vm), source=(
            f"measured: traced posix_spawn (CLONE_VM) child's first sched_switch-in -> its first user page fault, "
            f"i.e. ret_from_fork/schedule_tail without an mm switch ({len(rff_vm)} children, {pin_txt})"))
        st["fork_child_touch"] = stage_cost(fixed_us=median(extra), quantiles=_q(extra), source=(
            f"derived: traced fork child's first sched_switch-in -> sys_enter(exit_group) ({len(first)} forks, "
            f"{pin_txt}) minus ret_from_fork: the switch to its fresh mm, glibc's child-side fork work and the COW "
            f"faults of its first writes ({median(seg.get('first_run_faults') or [float('nan')]):.0f} user page "
            f"faults, p50, before _exit)"))
    elif traced and len(rff) >= 5 and touch:
        st["ret_from_fork"] = stage_cost(fixed_us=median(rff), quantiles=_q(rff), source=(
            f"measured: traced child's first sched_switch-in -> its first user page fault (exceptions:page_fault_user), "
            f"i.e. ret_from_fork/schedule_tail up to the first user instructions ({len(rff)} forks, {pin_txt})"))
        st["fork_child_touch"] = stage_cost(fixed_us=median(touch), quantiles=_q(touch), source=(
            f"measured: traced child's first user page fault -> sys_enter(exit_group) ({len(touch)} forks, {pin_txt}): "
            f"glibc's child-side fork work and its COW faults (stack, libc data, TLS): "
            f"{median(seg.get('first_run_faults') or [float('nan')]):.0f} user page faults (p50) before _exit"))
    elif traced and seg.get("first_run"):
        fr = seg["first_run"]
        st["ret_from_fork"] = stage_cost(fixed_us=1.5, sigma=0.2, source=(
            "assumption: the bare return through ret_from_fork/schedule_tail (~1.5 us); no user page-fault "
            "tracepoint to split the child's first run"))
        st["fork_child_touch"] = stage_cost(fixed_us=max(0.1, median(fr) - 1.5), quantiles=_q(fr), source=(
            f"derived: traced child's first switch-in -> sys_enter(exit_group) ({len(fr)} forks, {pin_txt}) minus "
            f"ret_from_fork (1.5 us, assumed)"))
    else:
        cs = [x["child_ns"] / 1e3 - x["fork_ns"] / 1e3 for r in base_unt for x in r["samples"]]
        v = max(1.0, median(cs) - (ctx or 3.0) - 3.0 - 1.5) if cs else 10.0
        st["ret_from_fork"] = stage_cost(fixed_us=1.5, sigma=0.2, source=(
            "assumption: the bare return through ret_from_fork/schedule_tail (~1.5 us, a syscall exit plus switch_mm "
            "bookkeeping); no tracepoints"))
        st["fork_child_touch"] = stage_cost(fixed_us=v, sigma=0.2, source=(
            "derived: untraced child start (child's first clock - parent's fork return) minus a context switch, "
            "~3 us of the parent's wait4 entry and ret_from_fork: glibc's child-side work and its COW faults"))

    spawn_tr = [s["exec"] for r in store.select("spawn", traced=True, pinned=True) for s in r["segments"] if "exec" in s]
    spawn_u = _vals(store.select("spawn", pinned=True, traced=False), "fork_ns")
    vfork_u = _vals(store.select("vfork", pinned=True, traced=False), "fork_ns")
    if spawn_tr:
        st["exec"] = stage_cost(fixed_us=median(spawn_tr), quantiles=_q(spawn_tr), source=(
            f"measured: traced posix_spawn child's execve (sys_enter->sys_exit) of a static no-libc helper "
            f"({len(spawn_tr)} samples, {pin_txt}); CLONE_VM, so no old-mm teardown inside"))
    else:
        v = max(5.0, median(spawn_u) - median(vfork_u)) if spawn_u and vfork_u else 50.0
        st["exec"] = stage_cost(fixed_us=v, sigma=0.2, source=(
            "derived: untraced posix_spawn (clone + child's execve until it releases the parent) minus vfork+_exit"))

    exit_cfgs = _seg_cfgs(store, "exit_mmap", pinned=True, mode="fork") if traced else []
    if traced and len(exit_cfgs) >= 2:
        ef = fit_linear(exit_cfgs)
        diag["exit_mmap_fit"] = {"coef": ef.coef, "r2": round(ef.r2, 5),
                                 "rel_errors": {kk: round(v, 4) for kk, v in ef.rel_errors.items()},
                                 "cross_validation": cross_validate(exit_cfgs)}
        st["exit_mmap"] = stage_cost(ef.coef, quantiles=residual_quantiles(exit_cfgs), source=(
            f"measured: traced child's exit, first -> last mmap_lock event after exit_group (exit_mmap: "
            f"unmap_vmas under the read lock, free_pgtables under the write lock), {len(exit_cfgs)} configurations, "
            f"{ef.n_samples} samples, {pin_txt}, NNLS on medians (R^2 {ef.r2:.4f})"))
        st["do_exit"] = stage_cost(fixed_us=median(seg["do_exit"]), quantiles=_q(seg["do_exit"]), source=(
            f"measured: traced exit_group -> the dead child's last switch-out, minus exit_mmap ({len(seg['do_exit'])} "
            f"samples, {pin_txt})"))
        st["wait_reap"] = stage_cost(fixed_us=median(seg["wait_reap"]), quantiles=_q(seg["wait_reap"]), source=(
            f"measured: traced parent's wait4 outside its sleep (enter->switch-out + switch-in->exit) "
            f"({len(seg['wait_reap'])} samples, {pin_txt})"))
    else:
        ex = []
        for lab, runs in _group(store, "fork", pinned=True, traced=False, mode="fork").items():
            ex.append(_fork_cfg(runs, "exit_ns", lab))
        ef = fit_linear(ex)
        fx = ef.coef["fixed_us"]
        coef = dict(ef.coef)
        coef["fixed_us"] = 0.35 * fx
        diag["exit_total_fit"] = {"coef": ef.coef, "r2": round(ef.r2, 5)}
        st["exit_mmap"] = stage_cost(coef, quantiles=residual_quantiles(ex), source=(
            f"measured: untraced child exit -> parent's waitpid return against the image ({ef.n_configs} "
            f"configurations, {ef.n_samples} samples, {pin_txt}); all image-dependent cost attributed to exit_mmap; "
            f"fixed part: assumption 35% of the intercept"))
        st["do_exit"] = stage_cost(fixed_us=0.45 * fx, sigma=0.2, source=(
            "assumption: 45% of the untraced exit intercept (do_exit without exit_mmap, incl. the final switch)"))
        st["wait_reap"] = stage_cost(fixed_us=0.20 * fx, sigma=0.2, source=(
            "assumption: 20% of the untraced exit intercept (wait4 entry/exit and release_task)"))
    diag["exit_ns_p50_us"] = {lab: round(median(_vals(runs, "exit_ns")), 3) for lab, runs in
                              _group(store, "fork", pinned=True, traced=False, mode="fork").items()}

    # ---- COW and page faults (per page)
    cow = store.select("cow", pinned=True)
    pages = cow[0]["samples"][0]["pages"] if cow and cow[0]["samples"] else 1
    copy = [(x["copy_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in cow for x in r["samples"]]
    pcopy = [(x["pcopy_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in cow for x in r["samples"]]
    reuse = [(x["reuse_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in cow for x in r["samples"]]
    flt = [(x["fault_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in store.select("fault", pinned=True)
           for x in r["samples"]]
    diag["cow_per_page_us"] = {"copy_child": _pct(copy), "copy_parent": _pct(pcopy), "reuse": _pct(reuse),
                               "page_fault": _pct(flt)}
    st["cow_fault_copy"] = stage_cost(fixed_us=median(copy + pcopy), quantiles=_q(copy + pcopy), source=(
        f"measured: passes writing one byte to each of {pages} inherited pages, by the child while the parent maps "
        f"them and by the parent while a child maps them ({len(copy) + len(pcopy)} passes, {pin_txt}), per page; "
        f"residual of pass averages (per-fault spread is wider)"))
    st["cow_fault_reuse"] = stage_cost(fixed_us=median(reuse), quantiles=_q(reuse), source=(
        f"measured: the parent's write pass over {pages} pages after the child exited ({len(reuse)} passes, "
        f"{pin_txt}), per page"))
    st["page_fault"] = stage_cost(fixed_us=median(flt), quantiles=_q(flt), source=(
        f"measured: first write to {pages} fresh anonymous 4 KiB pages (MADV_NOHUGEPAGE) ({len(flt)} passes, "
        f"{pin_txt}), per fault"))

    # ---- scheduler
    sched = _scheduler(store, facts, cpu)
    st["ipi_send"] = sched.pop("_ipi_send")
    diag["scheduler"] = sched.pop("_diag")

    # ---- pinned vs unpinned, variants
    cmp_ = {}
    for lab, runs in _group(store, "fork", traced=False, mode="fork").items():
        pinned = [r for r in runs if r["key"]["pinned"]]
        unp = [r for r in runs if not r["key"]["pinned"]]
        if unp:
            cmp_[lab] = {"pinned_fork_p50_us": round(median(_vals(pinned, "fork_ns")), 2),
                         "unpinned_fork_p50_us": round(median(_vals(unp, "fork_ns")), 2),
                         "pinned_rt_p50_us": round(median(_vals(pinned, "rt_ns")), 2),
                         "unpinned_rt_p50_us": round(median(_vals(unp, "rt_ns")), 2),
                         "pinned_child_start_p50_us": round(median(_vals(pinned, "child_ns")), 2),
                         "unpinned_child_start_p50_us": round(median(_vals(unp, "child_ns")), 2)}
    diag["pinned_vs_unpinned"] = cmp_
    var = {}
    for mode in ("vfork", "spawn", "forkexec", "thread"):
        for pinned in (True, False):
            runs = [r for r in store.select(mode, pinned=pinned, traced=False) if r["key"]["rss"] == 0]
            if runs:
                shape = {k: runs[0]["shape"].get(k) for k in ("rss_bytes", "vmas", "anon_vmas")}
                var[f"{mode} {'pinned' if pinned else 'unpinned'}"] = {"call": _pct(_vals(runs, "fork_ns")),
                                                                       "roundtrip": _pct(_vals(runs, "rt_ns")),
                                                                       "mode": mode, "shape": shape}
    fe = [r for r in store.select("forkexec", pinned=True) if r["key"]["rss"]]
    if fe:
        var[f"forkexec {_label(fe[0]['key'])} pinned"] = {"call": _pct(_vals(fe, "fork_ns")),
                                                          "roundtrip": _pct(_vals(fe, "rt_ns"))}
    diag["variants_us"] = var
    if traced:
        un = [s for r in store.select("fork", traced=True, pinned=False) for s in r["segments"]]
        cross = [s for s in un if s.get("child_cross_cpu") == 1.0]
        diag["unpinned_traced"] = {"forks": len(un), "child_on_other_cpu": len(cross),
                                   "E_cross_cpu_p50_us": round(median([s["E"] for s in cross if "E" in s]), 3) if cross else None,
                                   "child_start_cross_cpu_p50_us": round(median([s["child_start"] for s in cross
                                                                                 if "child_start" in s]), 3) if cross else None}
        diag["thp_traced"] = {c.label: round(c.median, 3) for c in _seg_cfgs(store, "B", thp=True)}

    # ---- held-out: the profile's own prediction vs measured
    def predict(shape: dict[str, Any]) -> float:
        c = Config(shape["vmas"], shape["anon_vmas"], shape["ptes"], shape["pmds"])
        s = sum(st[n]["fixed_us"] for n in ("copy_process_setup", "stack_cache_hit", "dup_mm", "copy_process_tail",
                                              "wake_up_new_task"))
        return s + sum(st["dup_mmap"][t] * v for t, v in zip(TERMS, c.features(TERMS)))

    ho = []
    for c, runs in held_cfgs:
        sh = runs[0]["shape"]
        p = predict(sh)
        ho.append({"rss_bytes": int(runs[0]["key"]["rss"]), "vmas": int(sh["vmas"]), "anon_vmas": int(sh["anon_vmas"]),
                   "thp": False, "fork_p50_us": round(c.median, 3), "n": len(c.samples),
                   "fork_wall_p50_us": round(median(_vals(runs, "fork_ns")), 3),
                   "preempted_share": _preempted_share(runs),
                   "profile_predicted_p50_us": round(p, 3), "rel_error": round((p - c.median) / c.median, 4)})
    diag["held_out"] = ho
    diag["fit_in_sample"] = [
        {"config": c.label, "fork_p50_us": round(c.median, 3), "profile_predicted_p50_us": round(predict(runs[0]["shape"]), 3)}
        for c, runs in train]

    placement = _placement(store)
    diag["placement_counts"] = {k: v.pop("_counts") for k, v in placement.items()}

    exit_head = _exit_head_share(store)
    warmth, warmth_diag = fit_warmth(store)
    diag.update(warmth_diag)

    missing = [s for s in _stage_names() if s not in st]
    if missing:
        raise MeasurementError(f"internal: stages not produced: {missing}")
    prov = dict(facts)
    prov.update(extra_prov)
    prov["tracefs"] = traced
    prov["measured_cpu"] = cpu
    return {
        "format": "forksim-profile",
        "version": 1,
        "name": extra_prov.get("profile_name", "calibrated"),
        "description": (f"calibrated on {facts['kernel']} ({facts['cpu_model']}, {facts['cpus']} CPUs), "
                        f"{plan.name} mode, {'with' if traced else 'without'} tracepoints"),
        "provenance": prov,
        "stages": {s: st[s] for s in _stage_names()},
        "scheduler": sched,
        "stack_cache_per_cpu": 2,
        "placement": placement,
        **({"exit_head_share": exit_head} if exit_head else {}),
        **({"warmth": warmth} if warmth else {}),
        "diagnostics": diag,
    }


def _exit_head_share(store: Store) -> dict[str, Any] | None:
    """Share of a vfork child's exit (on-CPU, exit_group to its last switch-out) run before the
    parent it released at mm_release gets the CPU: do_exit's first preemption point. None without
    traced vfork children that were preempted in their exit (the profile's default then applies)."""
    pairs = [(s["exit_head"], s["exit_total"]) for r in store.select("vfork", traced=True, pinned=True)
             for s in r["segments"] if "exit_head" in s and s.get("exit_total", 0) > 0]
    if len(pairs) < 20:
        return None
    share = median([h / t for h, t in pairs])
    return {"value": round(min(1.0, max(0.0, share)), 4), "source": (
        f"measured: traced vfork children, pinned: on-CPU exit_group -> first switch-out while runnable (to the "
        f"parent woken at mm_release; p50 {median([h for h, _ in pairs]):.2f} us) over exit_group -> last "
        f"switch-out (p50 {median([t for _, t in pairs]):.2f} us), median of the ratio over {len(pairs)} children")}


def _FORK_FIELD(runs: list[dict[str, Any]]) -> str:
    """fork_cpu_ns when the benchmark recorded it (CPU time: robust to other load), else fork_ns."""
    ok = runs and all(any("fork_cpu_ns" in x for x in r["samples"]) for r in runs if r["samples"])
    return "fork_cpu_ns" if ok else "fork_ns"


def _preempted_share(runs: list[dict[str, Any]]) -> float | None:
    """Share of fork() calls whose wall time exceeds their CPU time (by > 5 us and 2%): preempted."""
    pairs = [(x["fork_ns"], x["fork_cpu_ns"]) for r in runs for x in r["samples"] if "fork_cpu_ns" in x]
    if not pairs:
        return None
    return round(sum(1 for w, c in pairs if w - c > max(5000, 0.02 * c)) / len(pairs), 4)


def _placement(store: Store) -> dict[str, dict[str, Any]]:
    """P(child stays on the parent's CPU although another CPU is idle), from unpinned traced runs with
    every CPU's sched_switch recorded (idle = the CPU's last switch went to pid 0)."""
    out = {}
    fams = {"fork_local_when_idle": (("fork",), "fork()"),
            "vfork_local_when_idle": (("vfork", "spawn"), "vfork() and posix_spawn()")}
    for key, (kinds, what) in fams.items():
        tot = {"other_cpu_idle": 0, "stayed_local": 0, "unknown": 0, "creations": 0}
        for kind in kinds:
            for r in store.select(kind, traced=True, pinned=False):
                for k, v in (r.get("placement") or {}).items():
                    tot[k] += v
        n, loc = tot["other_cpu_idle"], tot["stayed_local"]
        if n >= 10:
            out[key] = {"value": round(loc / n, 3), "source": (
                f"measured: unpinned traced {what}: of {n} creations made while another CPU was idle (its last "
                f"sched_switch went to the idle task), {loc} put the child on the parent's CPU "
                f"(sched_wakeup_new target_cpu); {tot['creations']} creations traced"), "_counts": tot}
        else:
            try:
                cmdline = open("/proc/cmdline").read()
            except OSError:
                cmdline = ""
            m = re.search(r"\bsched_\w*pack\w*=\S+", cmdline)
            warn = (f"; this kernel boots with {m.group(0)} (not upstream), so its placement may differ: measure "
                    f"it on a quiet machine" if m else "")
            out[key] = {"value": 0.0, "source": (
                f"assumption: upstream select_task_rq_fair (SD_BALANCE_FORK) puts a new task on an idle CPU; only "
                f"{n} traced {what} creations found another CPU idle (a busy shared machine, or no tracefs){warn}"),
                "_counts": tot}
    return out


def _stage_names() -> list[str]:
    from ..profile import STAGES

    return list(STAGES)


def _context_switch(store: Store) -> float | None:
    same = [r for r in store.select("sched", mode="pipe") if r["key"]["a"] == r["key"]["b"]]
    p1 = store.select("sched", mode="pipe1")
    if not same or not p1:
        return None
    return max(0.1, median(_vals(same, "rtt_ns")) / 2 - median(_vals(p1, "rtt_ns")))


def _scheduler(store: Store, facts: dict[str, Any], cpu: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    d: dict[str, Any] = {}
    hz = facts.get("hz")
    if hz:
        out["tick"] = stage_cost(fixed_us=1e6 / hz, source=f"measured: CONFIG_HZ={hz} in /proc/config.gz")
    else:
        out["tick"] = stage_cost(fixed_us=4000.0, source="assumption: HZ=250 (no kernel config readable)")
    ncpu = facts.get("cpus") or 1
    slice_us, why = _debugfs_base_slice()
    if slice_us:
        out["slice"] = stage_cost(fixed_us=slice_us, source=why)
    else:
        f = 1 + int(math.log2(min(ncpu, 8)))
        out["slice"] = stage_cost(fixed_us=750.0 * f, source=(
            f"assumption: EEVDF base slice 0.75 ms x (1 + ilog2(min({ncpu} CPUs, 8))) = {0.75 * f} ms "
            f"(SCHED_TUNABLESCALING_LOG); {why}"))
    cross = [r for r in store.select("sched", mode="wake") if r["key"]["a"] != r["key"]["b"]]
    local = [r for r in store.select("sched", mode="wake") if r["key"]["a"] == r["key"]["b"]]
    nowake = store.select("sched", mode="nowake")
    lat = _vals(cross, "lat_ns") + _vals(cross, "lat_back_ns")
    call_x = _vals(cross, "call_ns") + _vals(cross, "call_back_ns")
    call_local = _vals(local, "call_back_ns")
    d["futex_wake_cross_cpu_latency_us"] = _pct(lat)
    d["futex_wake_call_cross_cpu_us"] = _pct(call_x)
    d["futex_wake_call_local_us"] = _pct(call_local)
    d["futex_wake_call_no_waiter_us"] = _pct(_vals(nowake, "call_ns"))
    d["same_cpu_wake_to_run_us"] = _pct(_vals(local, "lat_ns") + _vals(local, "lat_back_ns"))
    # a wake-up that took over 1 ms found the other CPU busy (this machine is shared): the wakee waited
    # for a slice or a tick, which the model's runqueues represent; it is not an idle wake-up
    idle_lat = [v for v in lat if v < 1000.0]
    d["idle_wake_samples_over_1ms_dropped"] = len(lat) - len(idle_lat)
    if idle_lat:
        out["idle_wake"] = stage_cost(fixed_us=median(idle_lat), quantiles=_q(idle_lat), source=(
            f"measured: futex ping-pong across CPUs, the wakee's CPU halted (waker spins 200 us first): waker's clock "
            f"before FUTEX_WAKE -> wakee's clock after FUTEX_WAIT ({len(idle_lat)} wake-ups; {len(lat) - len(idle_lat)} "
            f"over 1 ms dropped: the other CPU was busy, not idle)"))
    else:
        out["idle_wake"] = stage_cost(fixed_us=25.0, source="assumption: 25 us (no cross-CPU measurement)")
    ipi = median(call_x) - median(call_local) if call_x and call_local else float("nan")
    if math.isfinite(ipi) and ipi > 0:
        ipi_cost = stage_cost(fixed_us=ipi, quantiles=_q([c - median(call_local) for c in call_x
                                                          if c - median(call_local) > 0]), source=(
            f"measured: FUTEX_WAKE of a task on the halted other CPU ({len(call_x)} calls) minus a same-CPU wake "
            f"({len(call_local)} calls): the waker's cost of the remote wake-up and its reschedule IPI"))
    else:
        ipi_cost = stage_cost(fixed_us=3.0, source="assumption: 3 us (an APIC ICR write exits to the hypervisor)")
    out["_ipi_send"] = ipi_cost
    same = [r for r in store.select("sched", mode="pipe") if r["key"]["a"] == r["key"]["b"]]
    xpipe = [r for r in store.select("sched", mode="pipe") if r["key"]["a"] != r["key"]["b"]]
    p1 = median(_vals(store.select("sched", mode="pipe1"), "rtt_ns"))
    cs = [v / 2 - p1 for v in _vals(same, "rtt_ns")]
    d["pipe_rtt_same_cpu_us"] = _pct(_vals(same, "rtt_ns"))
    d["pipe_rtt_cross_cpu_us"] = _pct(_vals(xpipe, "rtt_ns"))
    d["pipe_write_read_no_switch_us"] = round(p1, 3) if math.isfinite(p1) else None
    if cs:
        out["context_switch"] = stage_cost(fixed_us=max(0.1, median(cs)), quantiles=_q([max(0.01, c) for c in cs]), source=(
            f"measured: same-CPU pipe ping-pong, half a round trip minus one write+read without blocking "
            f"({len(cs)} round trips, CPU {cpu})"))
    else:
        out["context_switch"] = stage_cost(fixed_us=2.5, source="assumption: 2.5 us")
    out["migration"] = stage_cost(fixed_us=3.0, sigma=0.3, source=(
        "assumption: 3 us to move a task between runqueues (dequeue + enqueue under both rq locks, cache refill); "
        "sched_migration_cost (0.5 ms) is a balancing heuristic, not a cost; not measured"))
    local_lat = _vals(local, "lat_ns")
    out["wakeup_granularity"] = stage_cost(fixed_us=0.0, source=(
        "derived: EEVDF (Linux 6.6+) has no wake-up granularity; a woken task preempts when eligible with an earlier "
        "deadline. Measured: on one CPU a futex-woken task ran "
        + (f"{median(local_lat):.1f} us after the wake (it preempted the waker at once)" if local_lat else "n/a")))
    out["_diag"] = d
    return out


