"""Each creation family's fixed cost fitted to its own untraced loop; the traced runs only apportion it.

Why: every tracepoint the calibration records costs the traced task about a microsecond on a VM
(2026-12-02 quick calibration, pinned, RSS 0: vfork 28.5 us traced against 17.5 untraced, about 12
events a call; pthread_create 15.1 against 11.6, about 5 events; posix_spawn 251 against 106, its
execve recording every page fault and mmap_lock event). A short path is inflated far more, relative
to its length, than fork of an image, whose copy outweighs its dozen events. The fork path's fixed
parts are scaled from fork's traced segments to fork's untraced intercept (fork_path.fork_split):
that ratio describes a long path, and applied to the short stages every family shares it left the
families' calls up to 2x too slow (vfork 35 us against 17.5 measured).

The rule (`fit_families`): the model charges a family's pinned call as a sum of stage costs plus the
scheduler's context switches (measured apart: scheduler.context_switch); the untraced p50 of the
family's own loop, pinned and at the empty image, is what that sum must come to.

- vfork's call is the shortest path and holds only stages every family shares (copy_process setup and
  tail, wake_up_new_task, the child's ret_from_fork and do_exit's head): the stages measured as short
  traced segments (those, and do_exit, wait_reap, wait_reap_vfork) are scaled by one factor k_short
  so that vfork's call comes to its untraced p50; their traced medians keep their proportions;
- each other family's own stage is what its untraced call leaves after the shared stages:
  pthread_create -> copy_process_setup_thread, posix_spawn -> exec; fork's base call -> dup_mm (the
  fork path's fixed parts add up to fork's untraced intercept, as before; dup_mmap keeps its fit);
- fork's round trip at the base image -> fork_child_touch (the child's first writes: COW faults).

A remainder below a quarter of the traced-and-scaled value it replaces (the two loops measured at
moments a drifting host made far apart) keeps that value, and the diagnostics say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernel.stages import DO_EXIT, DUP_MMAP, RET_FROM_FORK, WAIT_REAP
from ..profile import ImageShape, StageCost
from .fit import median, stage_cost
from .plan import FORK_MODE, SPAWN_MODE, THREAD_MODE, VFORK_MODE
from .samples import Evidence, fork_cfg, fork_field, vals

__all__ = ["SHORT_STAGES", "MERGED_STAGES", "fit_families", "family_paths", "merge_into", "exec_split"]

# the stages measured as short traced segments: scaled together by vfork's untraced loop
SHORT_STAGES = ("copy_process_setup", "copy_process_tail", "wake_up_new_task", RET_FROM_FORK, DO_EXIT, WAIT_REAP)
_SHARED = ("copy_process_setup", "stack_cache_hit", "copy_process_tail", "wake_up_new_task")
# the stages fork_split scaled by fork's traced-to-untraced ratio (Evidence.trace_scale)
_FORK_SCALED = ("copy_process_setup", "copy_process_tail", "wake_up_new_task")
_START_SIGMA = 0.15  # thread_start's and exec_start's lognormal residual (not separable from the loop's spread)
_FLOOR = 0.25  # a remainder below this share of the value it replaces is refused (drift between loops)


def _fx(st: dict[str, StageCost], name: str) -> float:
    return float(st[name].fixed_us)


def _at(cost: StageCost, shape: dict[str, Any]) -> float:
    """The stage's median at a measured image (its cache-miss term included)."""
    return float(cost.median_us(ImageShape(int(shape["vmas"]), int(shape["anon_vmas"]), int(shape["ptes"]),
                                           int(shape["pmds"]))))


def family_paths(st: dict[str, StageCost], ctx: float, head: float, shape: dict[str, Any],
                 reap_vfork: float | None = None, thread_start: float = 0.0, exec_start: float = 0.0,
                 spawn_prep: float = 0.0, exec_tail: float = 0.0) -> dict[str, float]:
    """The pinned, one-CPU p50 of each family's call and round trip as the model composes them from stage
    medians (kernel/clone.py): the sum of the stages each runs, and `ctx` per context switch.

    vfork: the parent sleeps (a switch), the child runs ret_from_fork and do_exit up to its first
    preemption point (`head` of its body, exit_notify's hold aside), the parent is switched back;
    posix_spawn: the same with the child's glibc work (spawn_prep) and its exec up to exec_mmap's release instead
    of the exit's head, the rest of the exec (exec_tail) after the parent has run; fork: the parent returns before
    the child runs; a round trip adds the parent's sleep in wait4 (two switches), the child's life and
    the reap. A thread's joiner, woken at mm_release without a sync wake-up, runs after the thread's whole
    exit; an exec'd child's exit tears down the empty image's exit_mmap (the fixed part)."""
    f = lambda n: _fx(st, n)  # noqa: E731
    shared = sum(f(n) for n in _SHARED)
    body = f(DO_EXIT) - f("exit_notify_hold")
    fork_call = shared + f("dup_mm") + _at(st[DUP_MMAP], shape)
    reap_v = f(WAIT_REAP) if reap_vfork is None else reap_vfork
    vfork_call = shared + 2 * ctx + f(RET_FROM_FORK) + head * body
    thread_call = f("copy_process_setup_thread") + f("stack_cache_hit") + f("copy_process_tail") + f("wake_up_new_task")
    spawn_call = shared + 2 * ctx + f(RET_FROM_FORK) + spawn_prep + f("exec")
    return {
        "fork call": fork_call,
        "fork round trip": fork_call + 2 * ctx + f(RET_FROM_FORK) + f("fork_child_touch") + f(DO_EXIT)
        + _at(st["exit_mmap"], shape) + f(WAIT_REAP),
        "vfork call": vfork_call,
        "vfork round trip": vfork_call + 2 * ctx + (1 - head) * body + f("exit_notify_hold") + reap_v,
        "thread call": thread_call,
        "thread round trip": thread_call + 2 * ctx + f(RET_FROM_FORK) + thread_start + f(DO_EXIT),
        "posix_spawn call": spawn_call,
        "posix_spawn round trip": spawn_call + 2 * ctx + exec_tail + exec_start + f(DO_EXIT) + f("exit_mmap")
        + f(WAIT_REAP),
        "fork_exec round trip": fork_call + 2 * ctx + f(RET_FROM_FORK) + f("fork_child_touch") + f("exec") + exec_tail
        + _at(st["exit_mmap"], shape) + exec_start + f(DO_EXIT) + f("exit_mmap") + f(WAIT_REAP),
    }


def _untraced(ev: Evidence, mode: str) -> tuple[float | None, float | None, dict[str, Any] | None]:
    """The untraced pinned loop of a family at the empty image: call p50, round-trip p50 (us), shape."""
    runs = [r for r in ev.store.select(mode, pinned=True, traced=False, mode=mode) if r["key"]["rss"] == 0
            and not r["key"]["anon_vmas"] and not r["key"]["file_vmas"] and not r["key"]["thp"]]
    if not runs or not any(r["samples"] for r in runs):
        return None, None, None
    if mode == FORK_MODE:  # the parent's CPU time in fork(), as the fork sweep fits it
        call = fork_cfg(runs, fork_field(runs), "base").median
    else:
        call = median(vals(runs, "fork_ns"))
    rt = vals(runs, "rt_ns")
    return call, (median(rt) if rt else None), runs[0]["shape"]


def _set(st: dict[str, StageCost], name: str, value: float, why: str) -> None:
    """A stage's fixed part (its residual kept), its source saying how the family fit changed it."""
    old = st[name]
    src = old.source
    kind = "derived" if src.startswith(("measured", "derived")) else src.split(":", 1)[0]
    st[name] = old.model_copy(update={"fixed_us": float(f"{max(0.0, value):.6g}"),
                                      "source": f"{kind}: {why}; apportioned by: {src}"})


def _remainder(st: dict[str, StageCost], name: str, value: float, why: str, diag: dict[str, Any]) -> None:
    before = _fx(st, name)
    if value < _FLOOR * before:
        diag["refused"].append(f"{name}: the untraced loop leaves {value:.2f} us, under {_FLOOR:.0%} of the "
                               f"traced {before:.2f} us (loops measured far apart on a drifting host?): kept")
        return
    _set(st, name, value, why)
    diag["stages"][name] = {"before_us": round(before, 3), "after_us": round(_fx(st, name), 3)}


def _scale_short(ev: Evidence, st: dict[str, StageCost], ctx: float, head: float, v_call: float,
                 diag: dict[str, Any]) -> float:
    """Scale the SHORT_STAGES together, from their traced medians, so that vfork's call as the model
    composes it comes to its untraced p50; returns the factor (1 when the loop leaves no room)."""
    # fork_split scaled three of them to fork's untraced intercept: undone here; stack_cache_hit and the
    # lock holds are assumptions, the context switches measured apart: not scaled
    traced = {n: _fx(st, n) / (ev.trace_scale if n in _FORK_SCALED else 1.0) for n in SHORT_STAGES}
    fixed = _fx(st, "stack_cache_hit") + 2 * ctx - head * _fx(st, "exit_notify_hold")
    short = (traced["copy_process_setup"] + traced["copy_process_tail"] + traced["wake_up_new_task"]
             + traced[RET_FROM_FORK] + head * traced[DO_EXIT])
    k = (v_call - fixed) / short if short > 0 else 1.0
    if k <= 0:
        diag["refused"].append(f"vfork's untraced call {v_call:.2f} us is shorter than the context switches and "
                               f"assumed parts ({fixed:.2f} us): short stages kept")
        return 1.0
    why = (f"the short traced stages scaled together (x{k:.4f}; a stage fork_split had scaled by fork's "
           f"x{ev.trace_scale:.3f} taken back to its traced median first) so that vfork's pinned call as the model "
           f"composes it (the shared stages, two context switches of {ctx:.2f} us, ret_from_fork, {head:.2f} of "
           f"do_exit) comes to its untraced p50 {v_call:.2f} us (calibration.families)")
    for name in SHORT_STAGES:
        b = _fx(st, name)
        _set(st, name, traced[name] * k, why)
        diag["stages"][name] = {"before_us": round(b, 3), "traced_us": round(traced[name], 3),
                                "after_us": round(_fx(st, name), 3)}
    return k


def _own_stages(ev: Evidence, st: dict[str, StageCost], ctx: float, head: float, loops: dict[str, Any],
                diag: dict[str, Any]) -> dict[str, StageCost]:
    """Each family's own stage, what its untraced call (fork: also its round trip) leaves after the shared
    stages: pthread_create -> copy_process_setup_thread, posix_spawn -> exec (with the traced split: spawn_prep,
    exec up to exec_mmap's release, exec_tail, returned), fork -> dup_mm, fork_child_touch."""
    shared = sum(_fx(st, n) for n in _SHARED)
    t_call = loops[THREAD_MODE][0]
    if t_call is not None:
        rest = _fx(st, "stack_cache_hit") + _fx(st, "copy_process_tail") + _fx(st, "wake_up_new_task")
        _remainder(st, "copy_process_setup_thread", t_call - rest, (
            f"pthread_create's untraced pinned p50 {t_call:.2f} us less the stack, copy_process_tail and "
            f"wake_up_new_task (calibration.families)"), diag)
    s_call = loops[SPAWN_MODE][0]
    extra: dict[str, StageCost] = {}
    if s_call is not None:
        rest = s_call - shared - 2 * ctx - _fx(st, RET_FROM_FORK)
        why = (f"posix_spawn's untraced pinned p50 {s_call:.2f} us less the shared stages, ret_from_fork and two "
               f"context switches")
        split = exec_split(ev)
        if split is None:
            _remainder(st, "exec", rest, f"{why} (calibration.families)", diag)
        else:
            extra = _split_exec(st, rest, why, split, diag)
    f_call, f_rt, f_shape = loops[FORK_MODE]
    if f_call is None or f_shape is None:
        return extra
    _remainder(st, "dup_mm", f_call - shared - _at(st[DUP_MMAP], f_shape), (
        f"fork()'s untraced pinned p50 at the base image {f_call:.2f} us (the parent's CPU time) less the "
        f"shared stages and dup_mmap there: what fork adds to a CLONE_VM creation besides the copy "
        f"(mm_alloc, pgd_alloc, and glibc's fork bookkeeping in the parent) (calibration.families)"), diag)
    if f_rt is not None:
        paths = family_paths(st, ctx, head, f_shape)
        rest = paths["fork round trip"] - _fx(st, "fork_child_touch") - paths["fork call"]
        _remainder(st, "fork_child_touch", f_rt - f_call - rest, (
            f"fork()'s untraced pinned round trip at the base image {f_rt:.2f} us less its call, two context "
            f"switches and the child's other stages and the reap (calibration.families)"), diag)
    return extra


# The traced posix_spawn loop gives the split when its parent preempted the child inside execve in most
# iterations (traced 2026-12-04, AMD zen4 host, pinned: 209 of 210; the released parent preempts the child
# as soon as it is woken, forksim.sched's requeue of a delayed sleeper): fewer, and no split is fitted.
MIN_EXEC_SPLIT = 20
MIN_EXEC_PREEMPTED = 0.8


def exec_split(ev: Evidence) -> dict[str, float] | None:
    """From the traced pinned posix_spawn children (segments.py): the medians, in traced microseconds, of the
    child's work before its execve beyond ret_from_fork (prep), its execve up to the first preemption, which is
    exec_mmap's release of the parent (head), and the execve's remainder (tail); None where too few children
    were preempted inside execve to tell."""
    segs = [s for r in ev.store.select(SPAWN_MODE, traced=True, pinned=True) for s in r["segments"] if "exec" in s]
    split = [s for s in segs if "exec_head" in s and "exec_prep" in s]
    if len(split) < MIN_EXEC_SPLIT or len(split) < MIN_EXEC_PREEMPTED * len(segs):
        return None
    prep = median([max(0.0, s["exec_prep"] - s.get(RET_FROM_FORK, 0.0)) for s in split])
    head = median([s["exec_head"] for s in split])
    tail = median([max(0.0, s["exec"] - s["exec_head"]) for s in split])
    if head <= 0.0 or prep + head <= 0.0:
        return None
    return {"prep": prep, "head": head, "tail": tail, "n": len(split), "of": len(segs)}


def _split_exec(st: dict[str, StageCost], rest: float, why: str, split: dict[str, float],
                diag: dict[str, Any]) -> dict[str, StageCost]:
    """posix_spawn's call remainder `rest` is the child's glibc work (spawn_prep) and its execve up to exec_mmap's
    release (exec), apportioned by the traced split; the execve's tail after the release is exec_tail, at the
    traced tail-to-head ratio of the untraced head. Returns spawn_prep and exec_tail (none if exec was refused)."""
    share = split["head"] / (split["prep"] + split["head"])
    traced = (f"the traced split of {split['n']} of {split['of']} posix_spawn children (pinned): before the execve "
              f"{split['prep']:.2f} us, execve up to the parent's preemption (exec_mmap's release) {split['head']:.2f}, "
              f"after it {split['tail']:.2f} (traced us, medians)")
    n_refused = len(diag["refused"])
    _remainder(st, "exec", rest * share, f"{why}, times {share:.3f}: the execve's share of it up to exec_mmap's "
                                         f"release by {traced} (calibration.families)", diag)
    if len(diag["refused"]) > n_refused:  # kept the traced whole execve: no split
        return {}
    head = _fx(st, "exec")
    prep, tail = rest - head, head * split["tail"] / split["head"]
    diag["exec_split"] = {k: round(float(v), 3) for k, v in split.items()}
    diag["stages"]["spawn_prep"] = {"before_us": 0.0, "after_us": round(prep, 3)}
    diag["stages"]["exec_tail"] = {"before_us": 0.0, "after_us": round(tail, 3)}
    return {
        "spawn_prep": stage_cost(fixed_us=prep, sigma=_START_SIGMA, source=(
            f"derived: posix_spawn's child-side work in glibc before its execve (__spawni_child: signal mask and "
            f"dispositions, file actions): {why}, less the execve's share ({head:.2f} us) by {traced} "
            f"(calibration.families); sigma {_START_SIGMA}: assumption")),
        "exec_tail": stage_cost(fixed_us=tail, sigma=_START_SIGMA, source=(
            f"derived: the execve after exec_mmap's release of a vfork parent (begin_new_exec's rest, the binary's "
            f"load): the untraced exec ({head:.2f} us) times the traced tail-to-head ratio "
            f"{split['tail'] / split['head']:.3f}, by {traced} (calibration.families); sigma {_START_SIGMA}: "
            f"assumption")),
    }


def _start_stages(st: dict[str, StageCost], ctx: float, head: float, shape: dict[str, Any], loops: dict[str, Any],
                  diag: dict[str, Any], split: dict[str, StageCost]) -> dict[str, StageCost]:
    """The profile's optional thread_start and exec_start: what the thread's and posix_spawn's untraced round
    trips leave after every stage the model charges on them (no stage of the model stood for them before;
    `split`: spawn_prep and exec_tail where fitted)."""
    paths = family_paths(st, ctx, head, shape, **_split_us(split))
    out: dict[str, StageCost] = {}
    for name, mode, path, what in (
            ("thread_start", THREAD_MODE, "thread round trip", "a thread's own work in glibc's start_thread around "
             "its function (signal mask, rseq, robust list; TLS destructors, the stack's MADV_DONTNEED) up to its "
             "exit"),
            ("exec_start", SPAWN_MODE, "posix_spawn round trip", "the exec'd program's start in its new image "
             "(first return, page faults of its text and stack) and its exit's teardown beyond an empty image's")):
        rt = loops[mode][1]
        if rt is None:
            continue
        v = rt - paths[path]
        if v <= 0.0:
            diag["refused"].append(f"{name}: the untraced {path} {rt:.2f} us leaves nothing ({v:.2f} us): not set")
            continue
        out[name] = stage_cost(fixed_us=v, sigma=_START_SIGMA, source=(
            f"derived: {what}: the untraced pinned {path} p50 {rt:.2f} us less every stage and context switch the "
            f"model charges on it ({paths[path]:.2f} us) (calibration.families); sigma {_START_SIGMA}: assumption"))
        diag["stages"][name] = {"before_us": 0.0, "after_us": round(v, 3)}
    return out


def fit_families(ev: Evidence, st: dict[str, StageCost], ctx: float, head: float,
                 reap_vfork: StageCost | None) -> tuple[dict[str, StageCost], StageCost | None, dict[str, StageCost]]:
    """The stage costs with each family's fixed cost fitted to its untraced loop (see the module
    docstring), wait_reap_vfork scaled with the short stages, and the optional thread_start and
    exec_start; unchanged (and no optional stages) when the calibration has no untraced vfork loop.
    Diagnostics under ev.diag['families']: each family's untraced p50s, the model's sums before and after."""
    st = dict(st)
    loops = {m: _untraced(ev, m) for m in (VFORK_MODE, THREAD_MODE, SPAWN_MODE, FORK_MODE)}
    v_call, v_rt, shape = loops[VFORK_MODE]
    if v_call is None or shape is None:
        return st, reap_vfork, {}
    diag: dict[str, Any] = {"context_switch_us": round(ctx, 3), "exit_head_share": round(head, 4), "stages": {},
                            "refused": []}
    before = family_paths(st, ctx, head, shape, None if reap_vfork is None else float(reap_vfork.fixed_us))
    k = _scale_short(ev, st, ctx, head, v_call, diag)
    if reap_vfork is not None:
        reap_vfork = reap_vfork.model_copy(update={
            "fixed_us": float(f"{reap_vfork.fixed_us * k:.6g}"),
            "source": f"derived: x{k:.4f}, the short path's scale (calibration.families); apportioned by: "
                      f"{reap_vfork.source}"})
    diag["k_short"] = round(k, 4)
    split = _own_stages(ev, st, ctx, head, loops, diag)
    extra = {**_start_stages(st, ctx, head, shape, loops, diag, split), **split}
    after = family_paths(st, ctx, head, shape, None if reap_vfork is None else float(reap_vfork.fixed_us),
                         *(float(extra[n].fixed_us) if n in extra else 0.0 for n in ("thread_start", "exec_start")),
                         **_split_us(split))
    diag["untraced_p50_us"] = {
        f"{name} {what}": loops[m][i] for m, name in ((VFORK_MODE, "vfork"), (THREAD_MODE, "thread"),
                                                     (SPAWN_MODE, "posix_spawn"), (FORK_MODE, "fork"))
        for i, what in ((0, "call"), (1, "round trip"))}
    diag["model_sum_before_us"] = before
    diag["model_sum_after_us"] = after
    diag["about"] = ("each family's pinned p50 at the empty image as the model composes it (sum of stage medians "
                     "and context switches) before and after fitting to the untraced loops; see "
                     "forksim/calibration/families.py")
    ev.diag["families"] = _rounded(diag)
    return st, reap_vfork, extra


def _split_us(split: dict[str, StageCost]) -> dict[str, float]:
    """family_paths' spawn_prep and exec_tail from the fitted stages (0 where absent)."""
    return {n: float(split[n].fixed_us) if n in split else 0.0 for n in ("spawn_prep", "exec_tail")}


def _rounded(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, (float, np.floating)):
        return round(float(d), 4)
    if isinstance(d, list):
        return [_rounded(v) for v in d]
    return d


# what the families' fit (and the fork sweep's fit through the base image) changes in a profile
MERGED_STAGES = SHORT_STAGES + ("copy_process_setup_thread", "exec", "dup_mm", "fork_child_touch", DUP_MMAP)
_OPTIONAL = ("thread_start", "exec_start", "spawn_prep", "exec_tail")
_MERGED_DIAG = ("families", "fork_total_fit", "held_out", "fit_in_sample")


def merge_into(raw: str, profile_path: str, note: str = "") -> dict[str, Any]:
    """Refit a calibration's raw file (calibrate --raw) and put the stages the families' fit changes
    (MERGED_STAGES, wait_reap_vfork) and their diagnostics into a profile file; every other number stays.
    provenance.merged_families says from what and when. Returns the refitted profile."""
    import json
    import tempfile
    from pathlib import Path

    from .calibrate import refit
    from .merge import write_merged

    with tempfile.TemporaryDirectory() as tmp:
        new = refit(raw, Path(tmp) / "refit.json")
    prof = json.loads(Path(profile_path).read_text())
    for name in MERGED_STAGES:
        prof["stages"][name] = new["stages"][name]
    for k in ("wait_reap_vfork",) + _OPTIONAL:
        if new.get(k) is not None:
            prof[k] = new[k]
    for k in _MERGED_DIAG:
        if k in new["diagnostics"]:
            prof.setdefault("diagnostics", {})[k] = new["diagnostics"][k]
    write_merged(profile_path, prof, "merged_families", {
        "stages": list(MERGED_STAGES) + ["wait_reap_vfork", *_OPTIONAL], "from": str(raw),
        "note": "python -m forksim.calibration.families: each family's fixed cost fitted to its untraced loop, "
                "the fork sweep fitted through the base image" + (f"; {note}" if note else "")})
    return new


def main(argv: list[str] | None = None) -> int:
    """`python -m forksim.calibration.families RAW PROFILE... [--note TEXT]`: refit RAW and merge the stages
    the families' fit changes into each profile file (see merge_into)."""
    import argparse
    import sys

    from ..errors import ForksimError

    ap = argparse.ArgumentParser(prog="python -m forksim.calibration.families", description=main.__doc__)
    ap.add_argument("raw")
    ap.add_argument("profiles", nargs="+")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    try:
        for p in a.profiles:
            new = merge_into(a.raw, p, a.note)
            fam = new["diagnostics"].get("families", {})
            print(f"merged into {p}: k_short {fam.get('k_short')}, model sums {fam.get('model_sum_after_us')}")
    except (ForksimError, OSError, ValueError, KeyError) as exc:
        print(f"python -m forksim.calibration.families: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m forksim.calibration.families RAW PROFILE...
    raise SystemExit(main())
