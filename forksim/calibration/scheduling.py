"""Fitters of the scheduler's costs (tick, slice, idle wake-up, IPI, context switch), of placement
(does a new task stay on its parent's CPU while another is idle) and of do_exit's head share (how much
of a vfork child's exit runs before the parent it released gets the CPU)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..lab import debugfs_base_slice
from ..model import slice_factor
from ..profile import StageCost
from ..profile_terms import DEFAULT_TIMER_SLACK_US
from .fit import median, stage_cost
from .plan import FORK_MODE, SPAWN_MODE, THREAD_MODE, VFORK_MODE, Store
from .samples import Evidence, pct, quantiles, tail_residual, vals

__all__ = ["fit_scheduler", "fit_placement", "fit_recent_idle", "exit_head_share", "RECENT_IDLE_BELOW_US"]


def _idle_wake_curve(wakes: list[dict[str, Any]], ref_us: float) -> dict[str, Any] | None:
    """The wake-up latency's median after each idle time the wakee's CPU had (the waker's spin before
    FUTEX_WAKE), over the 200 us reference's, and its shape there: the profile's scheduler.idle_wake_curve."""
    by: dict[float, list[float]] = {}
    for r in wakes:
        lat = [v for v in vals([r], "lat_ns") + vals([r], "lat_back_ns") if v < 1000.0]
        by.setdefault(float(r["key"].get("spin", 200)), []).extend(lat)
    pts = sorted((s, median(v), pct(v)["p99"], tail_residual(np.asarray(v) / median(v)))
                 for s, v in by.items() if len(v) >= 10)
    if len(pts) < 2 or ref_us <= 0:
        return None
    return {"idle_us": [s for s, *_ in pts], "scale": [round(m / ref_us, 4) for _, m, *_ in pts],
            "residuals": [r for *_, r in pts],
            "source": "measured: futex ping-pong across CPUs, the waker spinning "
                      + ", ".join(f"{s:g}" for s, *_ in pts)
                      + " us before FUTEX_WAKE (the wakee's CPU idle about as long): wake-up latency p50 "
                      + ", ".join(f"{m:.1f}" for _, m, *_ in pts) + " us, over idle_wake's median (the 200 us run); "
                      "p99 " + ", ".join(f"{p:.1f}" for _, _, p, _ in pts) + " us: each idle time's shape (sample / "
                      "median) is its residual; samples over 1 ms dropped (the other CPU was busy)"}


# A same-CPU FUTEX_WAKE whose waker's call took longer than this switched to its wakee before returning (the wakee
# preempted it: the call then holds the wakee's run and two context switches). On the Intel host (2026-12-03) the call
# p50 came out 0.16-0.24 us in 4 quick calibrations and 22 us in 3 others: the reference of the cross-CPU call
# (13.6-14.5 us in all 7), that put the IPI cost at 0 in those 3 (K1-rss0's fork p50 -34% against -6%).
UNSWITCHED_WAKE_US = 5.0


def _local_wake_call(calls: list[float]) -> float | None:
    """The same-CPU wake's call p50 over the calls that did not switch to the wakee (under UNSWITCHED_WAKE_US)."""
    quick = [c for c in calls if c < UNSWITCHED_WAKE_US]
    return median(quick) if len(quick) >= 10 else None


def _ipi_cost(wakes: list[dict[str, Any]], call_x: list[float], call_local: list[float],
              d: dict[str, Any]) -> StageCost:
    """ipi_send, the waker's cost of a cross-CPU wake-up (its calls `call_x` less the same-CPU wake that did not
    switch), and in `d` that reference and the ipi_send_curve by the wakee's idle time."""
    local_ref = _local_wake_call(call_local)
    d["futex_wake_call_local_unswitched_us"] = local_ref
    if local_ref is not None and (ipi_curve := _ipi_send_curve(wakes, local_ref)) is not None:
        d["ipi_send_curve"] = ipi_curve  # derive.py puts it into the profile's scheduler section
    ipi = median(call_x) - local_ref if call_x and local_ref is not None else float("nan")
    if not (math.isfinite(ipi) and ipi > 0):
        return stage_cost(fixed_us=3.0, source="assumption: 3 us (an APIC ICR write exits to the hypervisor)")
    return stage_cost(fixed_us=ipi, quantiles=quantiles([c - local_ref for c in call_x if c - local_ref > 0]), source=(
        f"measured: FUTEX_WAKE of a task on the halted other CPU ({len(call_x)} calls) minus a same-CPU wake "
        f"that did not switch to its wakee ({local_ref:.2f} us, p50): the waker's cost of the remote wake-up and "
        f"its reschedule IPI"))


def _ipi_send_curve(wakes: list[dict[str, Any]], local_us: float) -> dict[str, Any] | None:
    """The waker's FUTEX_WAKE of a task on the halted other CPU, minus a same-CPU wake, after each idle
    time the wakee's CPU had: the profile's scheduler.ipi_send_curve (whole distributions: the host's
    stalls come at one idle time only)."""
    by: dict[float, list[float]] = {}
    for r in wakes:
        calls = vals([r], "call_ns") + vals([r], "call_back_ns")
        by.setdefault(float(r["key"].get("spin", 200)), []).extend(c - local_us for c in calls)
    pts = sorted((s, v) for s, v in by.items() if len(v) >= 20)
    if len(pts) < 2:
        return None
    costs = []
    for s, v in pts:
        med = max(median(v), 0.01)
        costs.append({"fixed_us": round(med, 4), "residual": tail_residual(np.asarray(v) / med),
            "source": f"measured: {len(v)} FUTEX_WAKEs of a task on the other CPU, halted {s:g} us, minus a same-CPU "
                      f"wake ({local_us:.2f} us); {sum(c > 100.0 for c in v)} over 100 us"})
    return {"idle_us": [s for s, _ in pts], "costs": costs,
            "source": "measured: futex ping-pong across CPUs, the waker spinning " + ", ".join(f"{s:g}" for s, _ in pts)
                      + " us before FUTEX_WAKE (the wakee's CPU idle about as long): the waker's call p50 "
                      + ", ".join(f"{median(v):.1f}" for _, v in pts) + " us over a same-CPU wake"}


def _timer_slack() -> StageCost:
    """How late a user task's timer sleep ends on an idle CPU: this process's timer_slack_ns (what a SCHED_OTHER task
    inherits unless it sets its own: the kernel's 50 us default)."""
    try:
        ns = int(Path("/proc/self/timerslack_ns").read_text())
    except (OSError, ValueError):
        return stage_cost(fixed_us=DEFAULT_TIMER_SLACK_US, source=(
            f"assumption: the kernel's default timer_slack_ns, {DEFAULT_TIMER_SLACK_US:g} us (/proc/self/timerslack_ns "
            f"unreadable)"))
    return stage_cost(fixed_us=ns / 1e3, source=(
        "measured: /proc/self/timerslack_ns of the calibrating process (a SCHED_OTHER task's hrtimer sleeps end up to "
        "this much late, and on an idle CPU that late: 2026-12-04, pinned clock_nanosleep of 0.1 / 1 / 10 ms woke "
        "71 / 81 / 129 us late at 50 us of slack, 17 / 33 / 75 us at 1 ns)"))


def fit_scheduler(ev: Evidence, facts: dict[str, Any]) -> tuple[dict[str, StageCost], StageCost]:
    """The scheduler section (tick, slice, idle wake-up, context switch, migration, wake-up granularity)
    and ipi_send, the waker's cost of a remote wake-up; the figures behind them go to diag['scheduler']."""
    store, cpu = ev.store, ev.cpu
    out: dict[str, StageCost] = {}
    d: dict[str, Any] = {}
    hz = facts.get("hz")
    if hz:
        out["tick"] = stage_cost(fixed_us=1e6 / hz, source=f"measured: CONFIG_HZ={hz} in /proc/config.gz")
    else:
        out["tick"] = stage_cost(fixed_us=4000.0, source="assumption: HZ=250 (no kernel config readable)")
    out["timer_slack"] = _timer_slack()
    ncpu = facts.get("cpus") or 1
    slice_us, why = debugfs_base_slice()
    if slice_us:
        out["slice"] = stage_cost(fixed_us=slice_us, source=why)
    else:
        f = slice_factor(ncpu)
        out["slice"] = stage_cost(fixed_us=750.0 * f, source=(
            f"assumption: EEVDF base slice 0.75 ms x (1 + ilog2(min({ncpu} CPUs, 8))) = {0.75 * f} ms "
            f"(SCHED_TUNABLESCALING_LOG); {why}"))
    wakes = [r for r in store.select("sched", mode="wake") if r["key"]["a"] != r["key"]["b"]]
    cross = [r for r in wakes if "spin" not in r["key"]]  # the reference: the wakee idle 200 us
    local = [r for r in store.select("sched", mode="wake") if r["key"]["a"] == r["key"]["b"]]
    nowake = store.select("sched", mode="nowake")
    lat = vals(cross, "lat_ns") + vals(cross, "lat_back_ns")
    call_x = vals(cross, "call_ns") + vals(cross, "call_back_ns")
    call_local = vals(local, "call_back_ns")
    d["futex_wake_cross_cpu_latency_us"] = pct(lat)
    d["futex_wake_call_cross_cpu_us"] = pct(call_x)
    d["futex_wake_call_local_us"] = pct(call_local)
    d["futex_wake_call_no_waiter_us"] = pct(vals(nowake, "call_ns"))
    d["same_cpu_wake_to_run_us"] = pct(vals(local, "lat_ns") + vals(local, "lat_back_ns"))
    # a wake-up that took over 1 ms found the other CPU busy (this machine is shared): the wakee waited
    # for a slice or a tick, which the model's runqueues represent; it is not an idle wake-up
    idle_lat = [v for v in lat if v < 1000.0]
    d["idle_wake_samples_over_1ms_dropped"] = len(lat) - len(idle_lat)
    if idle_lat:
        out["idle_wake"] = stage_cost(fixed_us=median(idle_lat), quantiles=quantiles(idle_lat), source=(
            f"measured: futex ping-pong across CPUs, the wakee's CPU halted (waker spins 200 us first): waker's clock "
            f"before FUTEX_WAKE -> wakee's clock after FUTEX_WAIT ({len(idle_lat)} wake-ups; {len(lat) - len(idle_lat)} "
            f"over 1 ms dropped: the other CPU was busy, not idle)"))
        curve = _idle_wake_curve(wakes, median(idle_lat))
        if curve is not None:
            d["idle_wake_curve"] = curve  # derive.py puts it into the profile's scheduler section
    else:
        out["idle_wake"] = stage_cost(fixed_us=25.0, source="assumption: 25 us (no cross-CPU measurement)")
    ipi_cost = _ipi_cost(wakes, call_x, call_local, d)
    same = [r for r in store.select("sched", mode="pipe") if r["key"]["a"] == r["key"]["b"]]
    xpipe = [r for r in store.select("sched", mode="pipe") if r["key"]["a"] != r["key"]["b"]]
    p1 = median(vals(store.select("sched", mode="pipe1"), "rtt_ns"))
    cs = [v / 2 - p1 for v in vals(same, "rtt_ns")]
    d["pipe_rtt_same_cpu_us"] = pct(vals(same, "rtt_ns"))
    d["pipe_rtt_cross_cpu_us"] = pct(vals(xpipe, "rtt_ns"))
    d["pipe_write_read_no_switch_us"] = round(p1, 3) if math.isfinite(p1) else None
    if cs:
        out["context_switch"] = stage_cost(fixed_us=max(0.1, median(cs)), quantiles=quantiles([max(0.01, c) for c in cs]), source=(
            f"measured: same-CPU pipe ping-pong, half a round trip minus one write+read without blocking "
            f"({len(cs)} round trips, CPU {cpu})"))
    else:
        out["context_switch"] = stage_cost(fixed_us=2.5, source="assumption: 2.5 us")
    out["migration"] = stage_cost(fixed_us=3.0, sigma=0.3, source=(
        "assumption: 3 us to move a task between runqueues (dequeue + enqueue under both rq locks, cache refill); "
        "sched_migration_cost (0.5 ms) is a balancing heuristic, not a cost; not measured"))
    local_lat = vals(local, "lat_ns")
    out["wakeup_granularity"] = stage_cost(fixed_us=0.0, source=(
        "derived: EEVDF (Linux 6.6+) has no wake-up granularity; a woken task preempts when eligible with an earlier "
        "deadline. Measured: on one CPU a futex-woken task ran "
        + (f"{median(local_lat):.1f} us after the wake (it preempted the waker at once)" if local_lat else "n/a")))
    ev.diag["scheduler"] = d
    return out, ipi_cost


_FAMILIES = {  # profile key: (forkbench modes, what, fallback key when too few creations found another CPU idle)
    "fork_local_when_idle": ((FORK_MODE,), "fork()", None),
    "vfork_local_when_idle": ((VFORK_MODE,), "vfork()", None),
    "spawn_local_when_idle": ((SPAWN_MODE,), "posix_spawn()", "vfork_local_when_idle"),
    "thread_local_when_idle": ((THREAD_MODE,), "pthread_create()", "fork_local_when_idle"),
}


def _pack_warning() -> str:
    try:
        cmdline = open("/proc/cmdline").read()
    except OSError:
        cmdline = ""
    m = re.search(r"\bsched_\w*pack\w*=\S+", cmdline)
    return (f"; this kernel boots with {m.group(0)} (not upstream), so its placement may differ: measure "
            f"it on a quiet machine" if m else "")


def fit_placement(store: Store) -> dict[str, dict[str, Any]]:
    """P(child stays on the parent's CPU although another CPU is idle), by creation family, from unpinned
    traced runs with every CPU's sched_switch recorded (idle = the CPU's last switch went to pid 0); and
    sched_exec's share that moves an exec'ing child to an idle CPU (exec_moves_when_idle); where a child's exit
    from the other CPU wakes a parent whose CPU is busy (wake_prev_when_busy). A family with
    too few creations that found another CPU idle: the older families get upstream's rule (0), the
    newer ones (spawn, thread) are left out so that the model falls back as the profile documents."""
    out = {}
    for key, (kinds, what, fallback) in _FAMILIES.items():
        tot = {"other_cpu_idle": 0, "stayed_local": 0, "unknown": 0, "creations": 0}
        for kind in kinds:
            for r in store.select(kind, traced=True, pinned=False):
                for k in tot:
                    tot[k] += (r.get("placement") or {}).get(k, 0)
        n, loc = tot["other_cpu_idle"], tot["stayed_local"]
        if n >= 10:
            out[key] = {"value": round(loc / n, 3), "source": (
                f"measured: unpinned traced {what}: of {n} creations made while another CPU was idle (its last "
                f"sched_switch went to the idle task), {loc} put the child on the parent's CPU "
                f"(sched_wakeup_new target_cpu); {tot['creations']} creations traced"), "_counts": tot}
        elif fallback is None:
            out[key] = {"value": 0.0, "source": (
                f"assumption: upstream select_task_rq_fair (SD_BALANCE_FORK) puts a new task on an idle CPU; only "
                f"{n} traced {what} creations found another CPU idle (a busy shared machine, or no tracefs)"
                + _pack_warning()), "_counts": tot}
    moves = _exec_moves(store)
    if moves is not None:
        out["exec_moves_when_idle"] = moves
    stays = _exit_wake_stays(store)
    if stays is not None:
        out["wake_prev_when_busy"] = stays
    return out


# Fewest exit wake-ups for the share (at 30 the binomial 95% interval is at most +-0.18)
MIN_EXIT_WAKES = 30


def _exit_wake_stays(store: Store) -> dict[str, Any] | None:
    """wake_prev_when_busy in the case the model applies it: a child alone on the other CPU exits and wakes its
    parent, whose own CPU runs a hog (schedbench exitwake). Upstream's wake_affine_weight would move the parent
    to the child's CPU; a kernel that packs vCPUs keeps it. None under MIN_EXIT_WAKES."""
    runs = store.select("sched", mode="exitwake")
    cpus = [(s["cpu"], s["prev_cpu"]) for r in runs for s in r["samples"] if "cpu" in s]
    if len(cpus) < MIN_EXIT_WAKES:
        return None
    stayed = sum(c == prev for c, prev in cpus)
    return {"value": round(stayed / len(cpus), 3), "source": (
        f"measured: a child alone on the other CPU exiting (schedbench exitwake, the parent's CPU running a pinned "
        f"hog): of {len(cpus)} wake-ups of its parent in waitpid, {stayed} left it on its busy CPU (sched_getcpu "
        f"after waitpid)" + _pack_warning()), "_counts": {"exit_wakes": len(cpus), "stayed_on_prev": stayed}}


# Fewest execs that found another CPU idle for a share: at 50 the binomial 95% interval is at most +-0.14
# (at 10 it was +-0.31, and a busy box's quick run gave 1.0 from 10 execs).
MIN_IDLE_EXECS = 50


def _exec_moves(store: Store) -> dict[str, Any] | None:
    """sched_exec: of the traced unpinned posix_spawn children whose execve began while another CPU was
    idle, the share that left execve on another CPU than they entered it on (None: under MIN_IDLE_EXECS)."""
    n = moved = total = 0
    for r in store.select(SPAWN_MODE, traced=True, pinned=False):
        pl = r.get("placement") or {}
        n += pl.get("exec_other_cpu_idle", 0)
        moved += pl.get("exec_moved", 0)
        total += pl.get("execs", 0)
    if n < MIN_IDLE_EXECS:
        return None
    return {"value": round(moved / n, 3), "source": (
        f"measured: unpinned traced posix_spawn(): of {n} execve calls of the child begun while another CPU was "
        f"idle, {moved} returned on another CPU (sched_exec: select_task_rq(WF_EXEC), stop_one_cpu); "
        f"{total} execs traced"), "_counts": {"exec_other_cpu_idle": n, "exec_moved": moved, "execs": total}}


# The boundary between sched_vcpu_pack's two regimes for a vfork child: the other CPU idle under it (it went
# idle just now, the previous child's) spreads the loop, idle longer keeps the child local. Measured on the
# AMD EPYC host with tools/vfork_trace.py (2026-12-01 23:05 UTC, forksim/profiles/default.json's
# placement_recent_idle); a quick calibration's ~200 traced creations cannot place it, so it is kept.
RECENT_IDLE_BELOW_US = 500.0


def _derived_idle_us(segs: list[dict[str, Any]]) -> list[float | None]:
    """For raw files recorded before the segments carried other_idle_us (2026-12-02): the other CPU's idle
    time at each vfork creation, derived on 2 CPUs from the previous child there: a vfork child ends at about
    its parent's return (complete_vfork_done at mm_release), which is t_wakeup_new - to_newtask + total_wall
    (the parent's call, on its own CPU). None where not derivable (the parent moved, or no child ran there)."""
    out: list[float | None] = []
    end_on: dict[int, float] = {}
    last_cpu = None
    for s in segs:
        if "t_wakeup_new" not in s or "total_wall" not in s:
            out.append(None)
            continue
        w = int(s["waker_cpu"])
        if w != last_cpu:
            end_on, last_cpu = {}, w  # the parent moved: what ran on the other CPU since is unknown
        t = s["t_wakeup_new"]
        out.append((t - end_on[1 - w]) * 1e-3 if (1 - w) in end_on and t > end_on[1 - w] else None)
        if int(s["target_cpu"]) != w:
            end_on[int(s["target_cpu"])] = t + (s["total_wall"] - s.get("to_newtask", 0.0)) * 1e3
    return out


def _idle_placements(store: Store, mode: str) -> tuple[list[tuple[float, bool]], bool]:
    """(the other CPU's idle time us, child kept on the parent's CPU) per traced unpinned creation of `mode`
    made while another CPU was idle; and whether any were derived (_derived_idle_us) rather than traced."""
    pts: list[tuple[float, bool]] = []
    derived = False
    for r in store.select(mode, traced=True, pinned=False):
        segs = r.get("segments") or []
        if any("other_idle_us" in s for s in segs):
            pts += [(s["other_idle_us"], int(s["target_cpu"]) == int(s["waker_cpu"])) for s in segs if "other_idle_us" in s]
        elif mode == VFORK_MODE and segs and (r.get("placement") or {}).get("other_cpu_idle"):
            idle = _derived_idle_us(segs)
            pts += [(i, int(s["target_cpu"]) == int(s["waker_cpu"])) for i, s in zip(idle, segs) if i is not None]
            derived = True
    return pts, derived


def fit_recent_idle(store: Store) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The vfork spread rule (profile.placement_recent_idle): of the traced unpinned vfork() creations made
    while the other CPU had been idle under RECENT_IDLE_BELOW_US, the share kept on the parent's CPU; and
    placement.vfork_local_when_idle again from the CLONE_VFORK creations (vfork() and posix_spawn()) that found
    it idle longer, when at least 10 did. (None, None) with under 10 recent-idle vfork creations."""
    below = RECENT_IDLE_BELOW_US
    vf, derived = _idle_placements(store, VFORK_MODE)
    sp, _ = _idle_placements(store, SPAWN_MODE)
    recent = [loc for i, loc in vf if i < below]
    if len(recent) < 10:
        return None, None
    how = ("its idle time derived from the previous child's end there (the parent's vfork return: raw file "
           "without other_idle_us)" if derived else "its idle time from the CPU's last sched_switch to the idle task")
    bins = [0, 25, 100, below, 1e9]
    hist = "; ".join(f"[{a:g}, {b:g}) us {sum(k for i, k in vf if a <= i < b)} of {sum(a <= i < b for i, _ in vf)}"
                     for a, b in zip(bins, bins[1:]))
    sec = {"below_us": below, "vfork_local": round(sum(recent) / len(recent), 3), "source": (
        f"measured: unpinned traced vfork(): of {len(recent)} creations made while the other CPU had been idle "
        f"under {below:g} us ({how}), {sum(recent)} kept the child on the parent's CPU (sched_wakeup_new "
        f"target_cpu); kept local by idle time: {hist}. below_us: the boundary measured on the AMD EPYC host "
        f"(tools/vfork_trace.py, 2026-12-01; forksim/profiles/default.json), kept")}
    long_ = [loc for i, loc in vf + sp if i >= below]
    if len(long_) < 10:
        return sec, None
    local = {"value": round(sum(long_) / len(long_), 3), "source": (
        f"measured: unpinned traced vfork() and posix_spawn(): of {len(long_)} creations made while the other CPU "
        f"had been idle {below:g} us or more, {sum(long_)} kept the child on the parent's CPU (sched_wakeup_new "
        f"target_cpu); under {below:g} us: placement_recent_idle")}
    return sec, local

def exit_head_share(store: Store) -> dict[str, Any] | None:
    """Share of a vfork child's exit (on-CPU, exit_group to its last switch-out) run before the
    parent it released at mm_release gets the CPU: do_exit's first preemption point. None without
    traced vfork children that were preempted in their exit (the profile's default then applies)."""
    pairs = [(s["exit_head"], s["exit_total"]) for r in store.select(VFORK_MODE, traced=True, pinned=True)
             for s in r["segments"] if "exit_head" in s and s.get("exit_total", 0) > 0]
    if len(pairs) < 20:
        return None
    share = median([h / t for h, t in pairs])
    return {"value": round(min(1.0, max(0.0, share)), 4), "source": (
        f"measured: traced vfork children, pinned: on-CPU exit_group -> first switch-out while runnable (to the "
        f"parent woken at mm_release; p50 {median([h for h, _ in pairs]):.2f} us) over exit_group -> last "
        f"switch-out (p50 {median([t for _, t in pairs]):.2f} us), median of the ratio over {len(pairs)} children")}
