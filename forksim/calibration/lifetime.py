"""Fitters of a child's lifetime after fork(): its first run (ret_from_fork and its first writes),
exec, its exit and the parent's reap, and the per-page costs of COW and page faults.

Traced runs give the child-side and exit-side stages directly; without tracepoints the untraced child
start and exit times are split by explicit assumptions (said in each stage's `source`).
"""

from __future__ import annotations

from ..kernel.stages import DO_EXIT, EXIT_MMAP, RET_FROM_FORK, WAIT_REAP
from ..profile import StageCost
from .fit import cross_validate, fit_linear, median, residual_quantiles, stage_cost, typical_quantiles
from .layout import runs_layout
from .plan import FORK_MODE, SPAWN_MODE, VFORK_MODE
from .samples import Evidence, context_switch, fork_cfg, group, pct, quantiles, seg_cfgs, vals

__all__ = ["fit_child_start", "fit_exec", "fit_exit", "fit_faults", "fit_vfork_wait_reap"]


def _positive(ev: Evidence, name: str) -> list[float]:
    return [v for v in ev.seg.get(name, []) if v > 0] if ev.traced else []


def _child_start_untraced(ev: Evidence) -> dict[str, StageCost]:
    """No tracepoints: the untraced child start less a context switch, the parent's wait4 entry and
    ret_from_fork (assumed)."""
    base_unt = [r for r in ev.store.select(FORK_MODE, pinned=True, traced=False, mode=FORK_MODE) if r["key"]["rss"] == 0
                and not r["key"]["anon_vmas"] and not r["key"]["file_vmas"] and not r["key"]["thp"]]
    ctx = context_switch(ev.store)
    cs = [x["child_ns"] / 1e3 - x["fork_ns"] / 1e3 for r in base_unt for x in r["samples"]]
    v = max(1.0, median(cs) - (ctx or 3.0) - 3.0 - 1.5) if cs else 10.0
    return {
        RET_FROM_FORK: stage_cost(fixed_us=1.5, sigma=0.2, source=(
            "assumption: the bare return through ret_from_fork/schedule_tail (~1.5 us, a syscall exit plus "
            "switch_mm bookkeeping); no tracepoints")),
        "fork_child_touch": stage_cost(fixed_us=v, sigma=0.2, source=(
            "derived: untraced child start (child's first clock - parent's fork return) minus a context switch, "
            "~3 us of the parent's wait4 entry and ret_from_fork: glibc's child-side work and its COW faults")),
    }


def fit_child_start(ev: Evidence) -> dict[str, StageCost]:
    """The child's first run: ret_from_fork, then its switch to the fresh mm and first COW writes."""
    pin_txt, seg = ev.pin_txt, ev.seg
    rff, touch = _positive(ev, RET_FROM_FORK), _positive(ev, "child_touch")
    # A CLONE_VM child (posix_spawn's) returns to user space without switching to a new mm; a fork
    # child's first run adds the switch to its fresh mm and the COW faults of its first writes.
    rff_vm = [s[RET_FROM_FORK] for r in ev.store.select(SPAWN_MODE, traced=True, pinned=True) for s in r["segments"]
              if (s.get(RET_FROM_FORK) or 0) > 0] if ev.traced else []
    first = _positive(ev, "first_run")
    faults = median(seg.get("first_run_faults") or [float("nan")])
    if ev.traced and len(rff_vm) >= 5 and len(first) >= 5:
        base = median(rff_vm)
        extra = [max(0.1, v - base) for v in first]
        return {
            RET_FROM_FORK: stage_cost(fixed_us=base, quantiles=quantiles(rff_vm), source=(
                f"measured: traced posix_spawn (CLONE_VM) child's first sched_switch-in -> its first user page "
                f"fault, i.e. ret_from_fork/schedule_tail without an mm switch ({len(rff_vm)} children, {pin_txt})")),
            "fork_child_touch": stage_cost(fixed_us=median(extra), quantiles=quantiles(extra), source=(
                f"derived: traced fork child's first sched_switch-in -> sys_enter(exit_group) ({len(first)} forks, "
                f"{pin_txt}) minus ret_from_fork: the switch to its fresh mm, glibc's child-side fork work and the "
                f"COW faults of its first writes ({faults:.0f} user page faults, p50, before _exit)")),
        }
    if ev.traced and len(rff) >= 5 and touch:
        return {
            RET_FROM_FORK: stage_cost(fixed_us=median(rff), quantiles=quantiles(rff), source=(
                f"measured: traced child's first sched_switch-in -> its first user page fault "
                f"(exceptions:page_fault_user), i.e. ret_from_fork/schedule_tail up to the first user instructions "
                f"({len(rff)} forks, {pin_txt})")),
            "fork_child_touch": stage_cost(fixed_us=median(touch), quantiles=quantiles(touch), source=(
                f"measured: traced child's first user page fault -> sys_enter(exit_group) ({len(touch)} forks, "
                f"{pin_txt}): glibc's child-side fork work and its COW faults (stack, libc data, TLS): "
                f"{faults:.0f} user page faults (p50) before _exit")),
        }
    if ev.traced and seg.get("first_run"):
        fr = seg["first_run"]
        return {
            RET_FROM_FORK: stage_cost(fixed_us=1.5, sigma=0.2, source=(
                "assumption: the bare return through ret_from_fork/schedule_tail (~1.5 us); no user page-fault "
                "tracepoint to split the child's first run")),
            "fork_child_touch": stage_cost(fixed_us=max(0.1, median(fr) - 1.5), quantiles=quantiles(fr), source=(
                f"derived: traced child's first switch-in -> sys_enter(exit_group) ({len(fr)} forks, {pin_txt}) "
                f"minus ret_from_fork (1.5 us, assumed)")),
        }
    return _child_start_untraced(ev)


def fit_exec(ev: Evidence) -> dict[str, StageCost]:
    """exec of a static no-libc helper: traced posix_spawn children, else posix_spawn minus vfork."""
    store = ev.store
    spawn_tr = [s["exec"] for r in store.select(SPAWN_MODE, traced=True, pinned=True) for s in r["segments"]
                if "exec" in s]
    spawn_u = vals(store.select(SPAWN_MODE, pinned=True, traced=False), "fork_ns")
    vfork_u = vals(store.select(VFORK_MODE, pinned=True, traced=False), "fork_ns")
    if spawn_tr:
        return {"exec": stage_cost(fixed_us=median(spawn_tr), quantiles=quantiles(spawn_tr), source=(
            f"measured: traced posix_spawn child's execve (sys_enter->sys_exit) of a static no-libc helper "
            f"({len(spawn_tr)} samples, {ev.pin_txt}); CLONE_VM, so no old-mm teardown inside"))}
    v = max(5.0, median(spawn_u) - median(vfork_u)) if spawn_u and vfork_u else 50.0
    return {"exec": stage_cost(fixed_us=v, sigma=0.2, source=(
        "derived: untraced posix_spawn (clone + child's execve until it releases the parent) minus vfork+_exit"))}


# pooled, one configuration's hiccups set every image's tail (fit.typical_quantiles)
_TYPICAL = "the median over the configurations of each one's sample / median quantiles"


def _exit_traced(ev: Evidence, exit_cfgs: list) -> dict[str, StageCost]:
    ef = fit_linear(exit_cfgs)
    ev.diag["exit_mmap_fit"] = {"coef": ef.coef, "r2": round(ef.r2, 5),
                                "rel_errors": {kk: round(v, 4) for kk, v in ef.rel_errors.items()},
                                "cross_validation": cross_validate(exit_cfgs)}
    pin_txt, seg = ev.pin_txt, ev.seg
    return {
        EXIT_MMAP: stage_cost(ef.coef, quantiles=typical_quantiles(exit_cfgs) or residual_quantiles(exit_cfgs), source=(
            f"measured: traced child's exit, first -> last mmap_lock event after exit_group (exit_mmap: "
            f"unmap_vmas under the read lock, free_pgtables under the write lock), {len(exit_cfgs)} configurations, "
            f"{ef.n_samples} samples, {pin_txt}, NNLS on medians (R^2 {ef.r2:.4f}); residual: {_TYPICAL}")),
        DO_EXIT: stage_cost(fixed_us=median(seg[DO_EXIT]), quantiles=quantiles(seg[DO_EXIT]), source=(
            f"measured: traced exit_group -> the dead child's last switch-out, minus exit_mmap "
            f"({len(seg[DO_EXIT])} samples, {pin_txt})")),
        WAIT_REAP: stage_cost(fixed_us=median(seg[WAIT_REAP]), quantiles=quantiles(seg[WAIT_REAP]), source=(
            f"measured: traced parent's wait4 outside its sleep (enter->switch-out + switch-in->exit) "
            f"({len(seg[WAIT_REAP])} samples, {pin_txt})")),
    }


def _exit_untraced(ev: Evidence) -> dict[str, StageCost]:
    ex = []
    for lab, runs in group(ev.store, FORK_MODE, pinned=True, traced=False, mode=FORK_MODE).items():
        ex.append(c := fork_cfg(runs, "exit_ns", lab))
        c.scatter, c.after_break = runs_layout(runs)
    ex = _without_scatter(ev, ex)
    ef = fit_linear(ex)
    fx = ef.coef["fixed_us"]
    coef = dict(ef.coef)
    coef["fixed_us"] = 0.35 * fx
    ev.diag["exit_total_fit"] = {"coef": ef.coef, "r2": round(ef.r2, 5)}
    return {
        EXIT_MMAP: stage_cost(coef, quantiles=typical_quantiles(ex) or residual_quantiles(ex), source=(
            f"measured: untraced child exit -> parent's waitpid return against the image ({ef.n_configs} "
            f"configurations, {ef.n_samples} samples, {ev.pin_txt}); all image-dependent cost attributed to "
            f"exit_mmap; fixed part: assumption 35% of the intercept; residual: {_TYPICAL}")),
        DO_EXIT: stage_cost(fixed_us=0.45 * fx, sigma=0.2, source=(
            "assumption: 45% of the untraced exit intercept (do_exit without exit_mmap, incl. the final switch)")),
        WAIT_REAP: stage_cost(fixed_us=0.20 * fx, sigma=0.2, source=(
            "assumption: 20% of the untraced exit intercept (wait4 entry/exit and release_task)")),
    }


def _without_scatter(ev: Evidence, cfgs: list) -> list:
    """The configurations' samples less exit_mmap's scatter term at their image's measured scatter
    (layout.py), so that the linear terms are those of an image in physical order."""
    if ev.layout is None:
        return cfgs
    taken = {}
    for c in cfgs:
        corr = ev.layout.term_us(EXIT_MMAP, int(c.ptes), int(c.pmds), c.scatter, c.after_break)
        if corr > 0:
            c.samples = [max(x - corr, 0.05 * x) for x in c.samples]
            taken[c.label] = round(corr, 3)
    if taken:
        ev.diag.setdefault("image_layout", {})["exit_mmap_scatter_term_taken_out_us"] = taken
    return cfgs


def fit_exit(ev: Evidence) -> dict[str, StageCost]:
    """The child's exit (exit_mmap against the image, the rest of do_exit) and the parent's reap."""
    exit_cfgs = _without_scatter(ev, seg_cfgs(ev.store, EXIT_MMAP, pinned=True, mode=FORK_MODE)) if ev.traced else []
    st = _exit_traced(ev, exit_cfgs) if ev.traced and len(exit_cfgs) >= 2 else _exit_untraced(ev)
    ev.diag["exit_ns_p50_us"] = {lab: round(median(vals(runs, "exit_ns")), 3) for lab, runs in
                                 group(ev.store, FORK_MODE, pinned=True, traced=False, mode=FORK_MODE).items()}
    return st


def fit_faults(ev: Evidence) -> dict[str, StageCost]:
    """Per page: a COW copy (child or parent writing), a COW reuse, a fresh anonymous page fault."""
    store, pin_txt = ev.store, ev.pin_txt
    cow = store.select("cow", pinned=True)
    pages = cow[0]["samples"][0]["pages"] if cow and cow[0]["samples"] else 1
    copy = [(x["copy_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in cow for x in r["samples"]]
    pcopy = [(x["pcopy_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in cow for x in r["samples"]]
    reuse = [(x["reuse_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in cow for x in r["samples"]]
    flt = [(x["fault_ns"] - x["base_ns"]) / x["pages"] / 1e3 for r in store.select("fault", pinned=True)
           for x in r["samples"]]
    ev.diag["cow_per_page_us"] = {"copy_child": pct(copy), "copy_parent": pct(pcopy), "reuse": pct(reuse),
                                  "page_fault": pct(flt)}
    return {
        "cow_fault_copy": stage_cost(fixed_us=median(copy + pcopy), quantiles=quantiles(copy + pcopy), source=(
            f"measured: passes writing one byte to each of {pages} inherited pages, by the child while the parent "
            f"maps them and by the parent while a child maps them ({len(copy) + len(pcopy)} passes, {pin_txt}), per "
            f"page; residual of pass averages (per-fault spread is wider)")),
        "cow_fault_reuse": stage_cost(fixed_us=median(reuse), quantiles=quantiles(reuse), source=(
            f"measured: the parent's write pass over {pages} pages after the child exited ({len(reuse)} passes, "
            f"{pin_txt}), per page")),
        "page_fault": stage_cost(fixed_us=median(flt), quantiles=quantiles(flt), source=(
            f"measured: first write to {pages} fresh anonymous 4 KiB pages (MADV_NOHUGEPAGE) ({len(flt)} passes, "
            f"{pin_txt}), per fault")),
    }


def fit_vfork_wait_reap(store) -> StageCost | None:
    """wait4 reaping a vfork child that exited without exec (it never had an mm of its own): the traced
    pinned vfork runs' wait_reap, as wait_reap is measured on fork's (the profile's wait_reap_vfork). None
    without 20 such samples (the model then uses wait_reap)."""
    seg = [s[WAIT_REAP] for r in store.select(VFORK_MODE, traced=True, pinned=True) for s in r["segments"]
           if WAIT_REAP in s]
    if len(seg) < 20:
        return None
    return stage_cost(fixed_us=median(seg), quantiles=quantiles(seg), source=(
        f"measured: traced vfork parent's wait4 outside its sleep (enter->switch-out + switch-in->exit), the "
        f"child _exit()ed still sharing the parent's mm ({len(seg)} samples, pinned)"))
