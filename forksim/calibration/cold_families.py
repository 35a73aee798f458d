"""Cold creations that copy no image: vfork, posix_spawn and pthread_create after the parent slept.

A fork's cold extra is measured on its image (warmth.py: the empty image's gives the fixed part). The
kinds that share the parent's mm (CLONE_VM) walk no image, yet their path cools as well: the parent's
task, mm, files and signal structs, the slabs they allocate from, the kernel's code. Measured pinned on
the 2026-12-04 zen4 host (a C loop with a sleep or a spin before each pthread_create): 7 us back to back,
16-17 after 1 ms, 40 after 5 ms, alike asleep and spinning: time, the host's other work, cools it, not
the halt. forkbench's thread, vfork and spawn modes take -s (a sleep before each recorded call); each
family's p50 after a gap less its back-to-back p50 of the same round is its extra at that gap
(pthread_create / vfork / posix_spawn, 2026-12-04 20:15, 2 rounds: +3..+7 / +7..+15 / +21..+44 us after
1 ms, +40 / +45..+61 / +77..+139 after 10 ms, +52..+77 / +74..+93 / +146..+203 from 100 ms on). The
profile's FamilyCold is full_us * (1 - exp(-gap/tau_us)): the time scale the fit takes from the gaps
(scipy's bounded scalar minimisation of the squared error from a third of the shortest gap up, the height by
least squares at each time scale), the image curve's tau where a single gap leaves it open (said in the source).
The rest of the round trip, from the call's return to the wait's (the child's start, exec and exit, the reap),
cools too (same runs, 2 rounds, after 10 ms / from 30 ms on: pthread_create +34..+37 / +39..+75 us, posix_spawn
+23..+43 / +40..+74, vfork +13..+16 / +16..+24): its p50 over back to back gives FamilyCold.rest_full_us on the
call's time scale. The model charges both by the time since the parent's last creation (kernel/warmth.py; the rest in
the child's exit, kernel/clone.py). Back to back (cycles of 20-110 us) that is about 1% of it or less: the
stage costs hold their own warmth.

Where the call's extra falls decides where the child goes: a vCPU-packing kernel keeps it on the parent's CPU while that
CPU has been awake under a few tens of us (profile.placement_room), and wake_up_new_task places it. The same kinds
run traced (sys_enter to task_newtask, the end of copy_process, against the call), back to back and after 10 ms asleep:
on the zen4 haltpoll host (2026-12-05, 6 pairs of each kind in 4 runs over 22 minutes, the call's extra after 10 ms
+13 to +186 us) the part before task_newtask took 0.45-0.53 of vfork's call extra, 0.60-0.67 of pthread_create's and
0.17-0.21 of posix_spawn's; the rest comes after the placement (the child's run to its exit or exec, the return).
The load generator's 10 ms think loops, traced the same day, placed 30 of 30 vfork and 47 of 47 thread children with
the parent's CPU awake 27 / 23 us (p50), where the whole extra before the placement put the model's at 53-64 us, past
the room, and sent 22-63% of them to the idle CPU. FamilyCold.before_wakeup is that share (the median over rounds of
the ratio of the two extras).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar

from ..kernel.flags import POSIX_SPAWN, THREAD, VFORK
from . import bench, tracefs
from .plan import BENCH_MODES, Plan, Store, measured_segments
from .samples import tail_residual

__all__ = ["COLD_FAMILY", "COLD_FAMILY_TRACED", "family_jobs", "family_traced_jobs", "fit_families"]

COLD_FAMILY = "cold_family"  # the store kind of these runs
COLD_FAMILY_TRACED = "cold_family_traced"  # ... and of their traced pairs (before_wakeup)
_MS = 1000
_KINDS = (VFORK, POSIX_SPAWN, THREAD)
_TAU_MIN_US = 0.3 * _MS  # the time scale's lower bound whatever the gaps
_TAU_MAX_US = 1000 * _MS  # ... and its upper bound
_TAU_SPAN = 10.0  # ... at most this many times the longest gap measured
# plan name -> rounds, back-to-back reps, [(sleep us, reps)] per round: from the first millisecond to where the
# extra holds (the full plan's gaps: ~15 s in all; the quick plan's: about a second)
GAPS: dict[str, tuple[int, int, tuple[tuple[int, int], ...]]] = {
    "smoke": (1, 50, ((1 * _MS, 3), (10 * _MS, 3))),
    # quick: two gaps where the extra rises (a step within the first ms, +21..+47 us for posix_spawn at 1 ms on
    # 2026-12-04, put a two-gap fit with 1 ms at tau 3.5-4.7 ms against the full plan's 8.8-11.0) and one where it
    # holds: with 10 and 30 ms alone a rise that had not bent by 30 ms set the height (the 2026-12-05 07:40 quick
    # calibration: pthread_create +13.7 / +44.4 us -> fully cold +461 us over 300 ms, the time scale's bound; the
    # full plan's that morning +56 us over 28 ms, its points +46..+63 from 100 ms on)
    "quick": (1, 200, ((10 * _MS, 6), (30 * _MS, 4), (100 * _MS, 4))),
    "full": (2, 400, ((1 * _MS, 15), (3 * _MS, 12), (10 * _MS, 10), (30 * _MS, 8), (100 * _MS, 6), (300 * _MS, 4))),
}
# the traced pairs: plan name -> rounds, back-to-back reps, reps after TRACED_GAP_US asleep (~0.2 s a kind and round)
TRACED: dict[str, tuple[int, int, int]] = {"smoke": (1, 30, 4), "quick": (1, 40, 8), "full": (2, 100, 12)}
TRACED_GAP_US = 10 * _MS
_MIN_CALL_EXTRA_US = 3.0  # a pair whose call cooled less than this says nothing of where its extra fell
_MIN_SPREAD_EXTRA_US = 10.0  # a run's median extra below this: its calls' spread is the warm call's own
_MIN_SPREAD_SAMPLES = 12  # fewer cooled calls than this: no spread (a quantile of a handful is not a tail)


def family_jobs(plan: Plan, fb: str, helper: list[str], store: Store, cpu: int) -> list[tuple[str, Callable[[], None]]]:
    """Each family back to back and after each gap, pinned; rounds alternate the order of the gaps."""
    rounds, b2b, gaps = GAPS[plan.name]
    jobs: list[tuple[str, Callable[[], None]]] = []
    for rnd in range(rounds):
        order = [(0, b2b), *gaps]
        for gap, reps in (order if rnd % 2 == 0 else order[::-1]):
            for kind in _KINDS:
                jobs.append((_label("cold", kind, gap, rnd, rounds),
                             _job(fb, helper, store, cpu, kind, gap, reps, rnd)))
    return jobs


def family_traced_jobs(plan: Plan, fb: str, helper: list[str], store: Store, cpu: int,
                       trace: tracefs.TraceInstance) -> list[tuple[str, Callable[[], None]]]:
    """Each family traced back to back and after TRACED_GAP_US asleep, pinned (rounds alternate the order): where
    in the call its cold extra falls (FamilyCold.before_wakeup)."""
    rounds, b2b, cold = TRACED.get(plan.name, TRACED["quick"])
    jobs: list[tuple[str, Callable[[], None]]] = []
    for rnd in range(rounds):
        pair = [(0, b2b), (TRACED_GAP_US, cold)]
        for kind in _KINDS:
            for gap, reps in (pair if rnd % 2 == 0 else pair[::-1]):
                jobs.append((_label("traced", kind, gap, rnd, rounds),
                             _job(fb, helper, store, cpu, kind, gap, reps, rnd, trace)))
    return jobs


def _label(what: str, kind: str, gap: int, rnd: int, rounds: int) -> str:
    return (f"{what} {kind} " + ("back to back" if gap == 0 else f"after {gap / _MS:g} ms asleep")
            + f" (round {rnd + 1}/{rounds})")


def _job(fb: str, helper: list[str], store: Store, cpu: int, kind: str, gap: int, reps: int, rnd: int,
         trace: tracefs.TraceInstance | None = None) -> Callable[[], None]:
    """One forkbench run of `kind`, pinned to `cpu`, `gap` us asleep before each recorded call, into `store`:
    COLD_FAMILY, or with `trace` COLD_FAMILY_TRACED with its per-call segments."""
    def run() -> None:
        argv = [fb, BENCH_MODES[kind], "-n", str(reps), "-w", "5", "-c", str(cpu), "-s", str(gap),
                *(helper if kind == POSIX_SPAWN else [])]
        shape, samples, events, pid = bench.run_bench(argv, trace)
        key = {"kind": kind, "x": gap, "round": rnd, "pinned": True}
        if trace is None:
            store.add(COLD_FAMILY, key, shape, samples)
            return
        segs = measured_segments(tracefs.fork_segments(events, pid), samples) if events is not None else None
        store.add(COLD_FAMILY_TRACED, {**key, "traced": True}, shape, samples, segs)

    return run


def _before_wakeup(store: Store, kind: str) -> tuple[float, list[list[float]]] | None:
    """The share of `kind`'s call extra after TRACED_GAP_US asleep that came before task_newtask (the end of
    copy_process, just before wake_up_new_task places the child): the median over rounds of (to_newtask extra) /
    (call extra), each over back to back in the same round, clipped to [0, 1]; with each round's (call extra,
    to_newtask extra) us. None where no round cooled the call by _MIN_CALL_EXTRA_US."""
    by: dict[int, dict[int, tuple[float, float]]] = {}
    for r in store.select(COLD_FAMILY_TRACED):
        k = r["key"]
        segs = [s["to_newtask"] for s in (r.get("segments") or []) if "to_newtask" in s]
        if k["kind"] == kind and r["samples"] and segs:
            by.setdefault(k["round"], {})[k["x"]] = (_p50_us(r), statistics.median(segs))
    pairs = [[round(c[0] - w[0], 2), round(c[1] - w[1], 2)] for got in by.values()
             if (w := got.get(0)) is not None and (c := got.get(TRACED_GAP_US)) is not None]
    ratios = [min(1.0, max(0.0, pre / call)) for call, pre in pairs if call >= _MIN_CALL_EXTRA_US]
    return (round(statistics.median(ratios), 3), pairs) if ratios else None


def _p50_us(run: dict[str, Any]) -> float:
    return statistics.median(x["fork_ns"] for x in run["samples"]) / 1e3


def _rest_p50_us(run: dict[str, Any]) -> float | None:
    """The p50 of the rest of each round trip: from the call's return to the wait's (None: no round trips)."""
    rests = [x["rt_ns"] - x["fork_ns"] for x in run["samples"] if "rt_ns" in x]
    return statistics.median(rests) / 1e3 if rests else None


def _fit_kind(pts: list[tuple[float, float]], tau_img: float) -> tuple[dict[str, float], bool] | None:
    """FamilyCold's terms through one kind's (gap us, extra us) points, and whether the time scale was fitted
    (two gaps or more) rather than taken from the image curve; None for one gap and no image curve."""
    g = np.array([p[0] for p in pts], dtype=float)
    e = np.array([p[1] for p in pts], dtype=float)
    fitted = len(set(g.tolist())) >= 2
    if not fitted and not math.isfinite(tau_img):
        return None
    # Not sought below a third of the shortest gap, where the curve is 95% of the way there already: the points
    # cannot tell shorter time scales apart, and a noisy pair that falls from the first gap to the next (posix_spawn
    # +108 then +73 us after 10 and 30 ms, 2026-12-05) drove the fit to 0.3 ms, cold at a back-to-back loop's gaps.
    # Nor above ten times the longest gap, where the curve is still a straight line through them: a rise that had
    # not bent by 10 ms, extrapolated to a 1 s time scale, put a smoke plan's posix_spawn fully cold at 15 ms.
    lo = max(_TAU_MIN_US, float(g.min()) / 3.0)
    hi = min(_TAU_MAX_US, _TAU_SPAN * float(g.max()))
    tau = (float(np.exp(minimize_scalar(lambda lt: _height(g, e, float(np.exp(lt)))[1], bounds=(np.log(lo),
                                        np.log(max(hi, lo))), method="bounded").x)) if fitted else tau_img)
    return {"full_us": round(_height(g, e, tau)[0], 2), "tau_us": round(tau, 0)}, fitted


def _height(g: np.ndarray, e: np.ndarray, tau: float) -> tuple[float, float]:
    """The height h of h * (1 - exp(-g/tau)) through the (gap us, extra us) points by least squares through the
    origin, floored at 0, and its squared error."""
    c = 1.0 - np.exp(-g / tau)
    h = max(0.0, float(c @ e / (c @ c)))
    return h, float(np.sum((e - h * c) ** 2))


def fit_families(store: Store, tau_img: float) -> tuple[dict[str, dict[str, float]], str, dict[str, Any]]:
    """Warmth.families (kind -> FamilyCold's terms), its source sentence and its diagnostics; empty where the
    calibration has no such runs (a raw file older than them). `tau_img`: the image curve's time scale (us; nan
    where there is none: a kind measured at one gap only is then left out)."""
    runs = store.select(COLD_FAMILY)
    out: dict[str, dict[str, float]] = {}
    points: dict[str, list[list[float]]] = {}
    rest_points: dict[str, list[list[float]]] = {}
    before_points: dict[str, list[list[float]]] = {}  # kind -> each round's [call extra, to_newtask extra] us
    said: list[str] = []
    for kind in _KINDS:
        mine = [r for r in runs if r["key"]["kind"] == kind and r["samples"]]
        warm = {r["key"]["round"]: _p50_us(r) for r in mine if r["key"]["x"] == 0}
        pts = [(r["key"]["x"], _p50_us(r) - warm[r["key"]["round"]]) for r in mine
               if r["key"]["x"] > 0 and r["key"]["round"] in warm]
        fit = _fit_kind(pts, tau_img) if pts else None
        if fit is None:
            continue
        out[kind], fitted = fit
        points[kind] = [[g / _MS, round(e, 2)] for g, e in pts]
        t = out[kind]
        said.append(f"{kind} {', '.join(f'{e:+.1f} us after {g / _MS:g} ms' for g, e in pts)} -> fully cold "
                    f"{t['full_us']:.1f} us over " + (f"{t['tau_us'] / _MS:.1f} ms (fitted)" if fitted else
                    f"the image curve's tau {t['tau_us'] / _MS:.1f} ms (an assumption: one gap cannot fit it)"))
        rest = _rest_points(mine)
        if rest:
            t["rest_full_us"] = round(_height(np.array([p[0] for p in rest], float),
                                              np.array([p[1] for p in rest], float), t["tau_us"])[0], 2)
            rest_points[kind] = [[g / _MS, round(e, 2)] for g, e in rest]
            said[-1] += (f"; the rest of the round trip {', '.join(f'{e:+.1f}' for _, e in rest)} us -> fully cold "
                         f"{t['rest_full_us']:.1f} us on the call's time scale (an assumption: one cooling for both)")
        split = _before_wakeup(store, kind)
        if split is not None:
            t["before_wakeup"], before_points[kind] = split
            said[-1] += (f"; traced after {TRACED_GAP_US / _MS:g} ms asleep, the part before task_newtask took "
                         + ", ".join(f"{pre:+.1f} of {call:+.1f}" for call, pre in split[1])
                         + f" us -> before_wakeup {split[0]:g} (the median ratio)")
    if not out:
        return {}, "", {}
    src = (f"; families: vfork, posix_spawn and pthread_create pinned, each after sleeps (forkbench -s) against "
           f"back to back in the same round (rounds alternate the order), the call's p50 extra fitted as full * "
           f"(1 - exp(-gap/tau)) by least squares: " + "; ".join(said))
    ratios = _spread_ratios([r for r in runs if r["samples"] and r["key"]["kind"] in out])
    if ratios.size >= _MIN_SPREAD_SAMPLES:
        # beyond the p99 the calls held interruptions (the tick, the host), which the model adds on its own
        residual = tail_residual(np.minimum(ratios, np.quantile(ratios, 0.99)))
        for t in out.values():
            t["residual"] = residual
        q = np.quantile(ratios, [0.1, 0.9, 0.99])
        src += (f"; their spread (FamilyCold.residual, one for the three kinds): each call's extra over its run's "
                f"median extra, {ratios.size} calls of the runs whose median extra was at least "
                f"{_MIN_SPREAD_EXTRA_US:g} us: p10 / p90 / p99 {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} (kept up to the "
                f"p99: beyond it the calls held interruptions, which the model adds on its own)")
    return out, src, {"families_extra_us": points, "families_rest_extra_us": rest_points,
                      **({"families_before_wakeup_us": before_points} if before_points else {})}


def _spread_ratios(runs: list[dict[str, Any]]) -> np.ndarray:
    """Each cooled call's extra over its run's median extra (both over back to back in the same round), from the
    runs whose median extra is at least _MIN_SPREAD_EXTRA_US (below it the warm call's own noise is the spread)."""
    warm = {(r["key"]["kind"], r["key"]["round"]): _p50_us(r) for r in runs if r["key"]["x"] == 0}
    out: list[float] = []
    for r in runs:
        base = warm.get((r["key"]["kind"], r["key"]["round"]))
        if r["key"]["x"] <= 0 or base is None:
            continue
        extras = np.array([x["fork_ns"] / 1e3 - base for x in r["samples"]])
        mid = float(np.median(extras))
        if mid >= _MIN_SPREAD_EXTRA_US:
            out.extend(extras / mid)
    return np.asarray(out, dtype=float)


def _rest_points(runs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(gap us, extra us) of the rest of the round trip (_rest_p50_us) over back to back in the same round."""
    warm = {r["key"]["round"]: w for r in runs if r["key"]["x"] == 0 and (w := _rest_p50_us(r)) is not None}
    return [(r["key"]["x"], p - warm[r["key"]["round"]]) for r in runs
            if r["key"]["x"] > 0 and r["key"]["round"] in warm and (p := _rest_p50_us(r)) is not None]
