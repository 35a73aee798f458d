"""Fit of a vCPU-packing kernel's placement room rule (profile.PlacementRoom) from traced creations.

Each point is one creation made while another CPU was idle and the parent's CPU had nothing else to run:
(family, how long the parent's CPU had been awake: since its first task began after its last idle spell,
how long the idle CPU had been idle, whether sched_wakeup_new's target_cpu was the parent's). The rule: kept
local while the parent's CPU has been awake under `room_us`, else by the idle CPU's idle time. `room_us` is
the one threshold (shared by the families: the kernel's, not a family's) that maximises the likelihood of
the points under that rule; the shares are the observed ones in each part.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.stats import chi2

from ..profile import ROOM_FAMILIES

__all__ = ["RoomPoint", "WakePoint", "TraceEvent", "IDLE_EDGES_US", "AWAKE_EDGES_US", "ROOM_CANDIDATES_US", "MIN_BIN",
           "TICK_EVENT", "fit_room", "fit_wake_away", "picked_off", "trace_points", "exec_points"]

RoomPoint = tuple[str, float, float, bool]  # (family, parent CPU awake us, idle CPU idle us, kept local)

# Upper edges of the idle CPU's idle-time bins (us): the bins tools/vfork_trace.py reports, where the loops'
# two regimes sit (the previous child's CPU idle tens of us; an idle CPU idle over 1 ms).
IDLE_EDGES_US = (25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 1e9)
# Upper edges of the waker CPU's awake-time bins (us) for the wake-ups of a parent a pick dequeued
# (WakeAway.after_pick): traced on the zen4 haltpoll host (2026-12-05, the load generator's unpinned fork loops),
# 0.03 of 67 went to the idle CPU with the waker's CPU awake 1-2 ms (64 MiB, 1 ms asleep after each), 0.23 of 26
# at 2-3 ms, 0.98 of 226 at 3-5 ms (128 MiB) and 0.98-0.99 of 445 at 5-10 ms (256 MiB, with and without 1 ms asleep).
AWAKE_EDGES_US = (1000.0, 2000.0, 3000.0, 5000.0, 10000.0, 1e9)
# The tick's event: a wake-up whose waker CPU ticked at least the child's protected slice after the parent left it
# came after a pick that could dequeue the parent (eevdf.pick_over_delayed); x86's local APIC timer interrupt.
TICK_EVENT = "local_timer_entry"
# Candidate room thresholds (us): 1 us apart (the trace clock's resolution) up to 200 us.
ROOM_CANDIDATES_US = tuple(float(x) for x in range(2, 201))
LR_ALPHA = 1e-3  # the likelihood-ratio test's level for a room to be said to exist
MIN_BIN = 10  # fewest points for a bin's own share: a sparser bin joins its right-hand neighbour


def _loglik(k: int, n: int) -> float:
    """Bernoulli log-likelihood of k successes in n at the MLE k/n."""
    if n == 0 or k == 0 or k == n:
        return 0.0
    p = k / n
    return k * math.log(p) + (n - k) * math.log(1.0 - p)


def _bins(idle: np.ndarray, local: np.ndarray,
          bin_edges: tuple[float, ...] = IDLE_EDGES_US) -> tuple[list[float], list[float], list[int]]:
    """(upper edges, local shares, counts) over `bin_edges` (the last: beyond any value), a bin under MIN_BIN
    points merged into the next (the last such one into its left neighbour)."""
    idx = np.searchsorted(np.asarray(bin_edges), idle, side="left")
    n = np.bincount(idx, minlength=len(bin_edges))[: len(bin_edges)]
    k = np.bincount(idx, weights=local, minlength=len(bin_edges))[: len(bin_edges)]
    edges, kk, nn = [], [], []
    acc_k = acc_n = 0.0
    for e, ki, ni in zip(bin_edges, k, n):
        acc_k, acc_n = acc_k + ki, acc_n + ni
        if acc_n >= MIN_BIN:
            edges.append(e)
            kk.append(acc_k)
            nn.append(acc_n)
            acc_k = acc_n = 0.0
    if acc_n and nn:
        edges[-1] = bin_edges[-1]
        kk[-1] += acc_k
        nn[-1] += acc_n
    return [float(e) for e in edges], [round(float(a / b), 3) for a, b in zip(kk, nn)], [int(b) for b in nn]


def _family_loglik(awake: np.ndarray, idle: np.ndarray, local: np.ndarray, room: float) -> float:
    inside = awake < room
    ll = _loglik(int(local[inside].sum()), int(inside.sum()))
    out = ~inside
    idx = np.searchsorted(np.asarray(IDLE_EDGES_US), idle[out], side="left")
    for b in np.unique(idx):
        sel = idx == b
        ll += _loglik(int(local[out][sel].sum()), int(sel.sum()))
    return ll


def _best_room(lls: list[float]) -> float:
    """The threshold of greatest likelihood: the middle of the candidates that tie for it (a threshold anywhere in
    the gap between two clusters of awake times explains them alike; the middle is the least committed)."""
    top = max(lls)
    tied = [r for r, ll in zip(ROOM_CANDIDATES_US, lls) if ll >= top - 1e-9]
    run = tied[:1]  # the first contiguous run of tied candidates (1 us apart)
    for r in tied[1:]:
        if r - run[-1] > 1.0:
            break
        run.append(r)
    return float(run[len(run) // 2])


def fit_room(points: Iterable[RoomPoint], what: str, min_points: int = 50) -> dict[str, Any] | None:
    """The profile's placement_room section from `points` (`what`: the runs they came from, for the source), or
    None when no family has `min_points` points, no creation came early enough after a halt to show a room, or
    no family's placements are explained better than by its one share (the placement section's shares stand).

    `room_us` is the one threshold shared by the families; a family whose own threshold explains its points
    better (a likelihood-ratio test) keeps its own (on the Intel host a fork's room came out 112-118 us against
    ~15 us for vfork and threads: a fork's copy runs before wake_up_new_task, and the rule sees the CPU's
    awake time then). A family is listed only where its rule beats its one share (the model's alternative)."""
    by: dict[str, list[RoomPoint]] = {}
    for p in points:
        if p[0] in ROOM_FAMILIES and math.isfinite(p[1]) and math.isfinite(p[2]):
            by.setdefault(p[0], []).append(p)
    arrays = {f: (np.array([p[1] for p in v]), np.array([p[2] for p in v]), np.array([p[3] for p in v], float))
              for f, v in by.items() if len(v) >= min_points}
    if not arrays:
        return None
    own_lls = {f: [_family_loglik(a, i, loc, r) for r in ROOM_CANDIDATES_US] for f, (a, i, loc) in arrays.items()}
    room = _best_room([sum(x) for x in zip(*own_lls.values())])
    fams: dict[str, Any] = {}
    notes: list[str] = []
    for f, (a, i, loc) in sorted(arrays.items()):
        own = _best_room(own_lls[f])
        # the family's own threshold where it beats the shared one (one extra parameter; the best of many: 0.1%)
        shared_ll, own_ll = _family_loglik(a, i, loc, room), _family_loglik(a, i, loc, own)
        r = own if 2.0 * (own_ll - shared_ll) >= chi2.ppf(1.0 - LR_ALPHA, 1) else room
        inside = a < r
        flat = _loglik(int(loc.sum()), len(loc))
        edges, shares, counts = _bins(i[~inside], loc[~inside])
        df = len(edges) + 1  # the idle-time shares, the room's share and the threshold, less the one share
        gain = 2.0 * (_family_loglik(a, i, loc, r) - flat)
        if inside.sum() < MIN_BIN or (~inside).sum() < MIN_BIN or gain < chi2.ppf(1.0 - LR_ALPHA, df):
            notes.append(f"{f}: left out ({int(inside.sum())} of {len(a)} creations awake under {r:g} us; the rule "
                         f"does not explain its placements better than its one share: likelihood-ratio {gain:.1f}), "
                         f"its placement share stands")
            continue
        fams[f] = {"room_local": round(float(loc[inside].mean()), 3), "idle_us": edges, "local": shares,
                   **({"room_us": r} if r != room else {})}
        notes.append(f"{f}: {int(loc[inside].sum())} of {int(inside.sum())} local awake under {r:g} us"
                     + (" (its own threshold)" if r != room else "") + "; beyond, by idle time "
                     + ", ".join(f"<= {e:g} us {s:g} of {c}" for e, s, c in zip(edges, shares, counts)))
    if not fams:
        return None
    return {"room_us": room, "families": fams, "source": (
        f"measured: {what}: creations made while another CPU was idle and the parent's CPU ran nothing else, "
        f"by how long the parent's CPU had been awake (since its first task after its last idle spell) and how "
        f"long the idle CPU had been idle, child kept on the parent's CPU or not (sched_wakeup_new target_cpu); "
        f"room_us: the one threshold (2-200 us) of greatest likelihood over the families; " + "; ".join(notes))}


# ---------------------------------------------------------------------------------------------
# the points, from a tracefs text's events

TraceEvent = tuple[float, int, int, str, dict[str, str]]  # (time us, cpu, emitting pid, event, fields)
# (the idle CPU's idle time us at the wake-up, the wakee went there, how long after the parent left its CPU that
# CPU last ticked before the wake-up (us; None: not since, or no tick events), how long the waker's CPU had been
# awake (us; None: unknown))
WakePoint = tuple[float, bool, float | None, float | None]


class _Cpus:
    """Each CPU's state from unfiltered sched_switch events: its current pid, when its idle spell began,
    and since when it has been awake; None where the trace missed the switch that would say (a switch
    away from the idle task that tracefs did not record leaves the awake time unknown until the next)."""

    def __init__(self) -> None:
        self.cur: dict[int, int] = {}
        self.idle_from: dict[int, float] = {}
        self.awake_from: dict[int, float | None] = {}
        self.last_tick: dict[int, float] = {}

    def switch(self, t: float, c: int, prev: int, nxt: int) -> None:
        if nxt == 0:
            self.idle_from[c] = t
            self.awake_from[c] = None
        elif prev == 0:
            self.awake_from[c] = t
        elif self.cur.get(c) == 0:  # the switch away from idle was not recorded
            self.awake_from[c] = None
        self.cur[c] = nxt

    def first_idle_other(self, c: int) -> int | None:
        idle = [o for o, p in self.cur.items() if o != c and p == 0]
        return min(idle) if idle else None


def _loop_parent(evs: list[TraceEvent], settle_us: float) -> tuple[int, float] | None:
    """The loop's parent (the pid that emits the most sched_wakeup_new) and the time its loop has settled: its
    first creation plus `settle_us`; None without a creation."""
    counts: dict[int, int] = {}
    for _t, _c, p, e, _f in evs:
        if e == "sched_wakeup_new":
            counts[p] = counts.get(p, 0) + 1
    if not counts:
        return None
    P = max(counts, key=counts.__getitem__)
    return P, next(t for t, _c, p, e, _f in evs if e == "sched_wakeup_new" and p == P) + settle_us


def trace_points(events: Iterable[TraceEvent], family: str,
                 settle_us: float = 0.0) -> tuple[list[RoomPoint], list[WakePoint]]:
    """The placement points of one traced unpinned creation loop (its parent: the pid that emits the most
    sched_wakeup_new) and the wake-up points: each time the child woke the parent sleeping in wait or
    pthread_join (its last switch-out in state S: a process child's exit_notify, a thread's clear_child_tid
    futex wake) from the parent's own CPU while another CPU was idle, whether the parent then ran on that
    idle CPU (select_idle_sibling) or stayed. Points in the first `settle_us` after the parent's first creation are
    left out (the loop's start, from a long-idle other CPU, is a regime of its own: see room_loops.SETTLE_S)."""
    evs = list(events)
    loop = _loop_parent(evs, settle_us)
    if loop is None:
        return [], []
    P, settled = loop
    cpus, place, wakes = _Cpus(), [], []
    p_cpu: int | None = None
    p_slept = False
    p_left = 0.0
    # a wake-up: (time, waker's CPU, idle CPU's idle us, the waker CPU's last tick after the parent left, its awake us)
    pending: tuple[float, int, float, float | None, float | None] | None = None
    for t, c, pid, e, f in evs:
        if pending is not None and (pid == P or (e == "sched_switch" and P in (int(f["prev_pid"]), int(f["next_pid"])))):
            # the woken parent's first sign of life says where it runs: its switch in, or (where tracefs missed
            # that switch, as it misses some switches away from the idle task) whatever it does next there
            if pending[0] >= settled:
                wakes.append((pending[2], c != pending[1], pending[3], pending[4]))
            pending = None
        if e == TICK_EVENT:
            cpus.last_tick[c] = t
        elif e == "sched_switch":
            prev, nxt = int(f["prev_pid"]), int(f["next_pid"])
            cpus.switch(t, c, prev, nxt)
            if prev == P:
                p_cpu, p_slept, p_left = c, f.get("prev_state", "").startswith("S"), t
        elif e == "sched_wakeup_new" and pid == P:
            o = cpus.first_idle_other(c)
            awake = cpus.awake_from.get(c)
            if o is not None and awake is not None and cpus.cur.get(c) == P and t >= settled:
                place.append((family, t - awake, t - cpus.idle_from[o], int(f["target_cpu"]) == c))
        elif e == "sched_waking" and int(f.get("pid", -1)) == P and pid != P:
            pending = None
            if p_slept and c == p_cpu and cpus.cur.get(c) == pid:
                o = cpus.first_idle_other(c)
                if o is not None:
                    tick = cpus.last_tick.get(c)
                    awake = cpus.awake_from.get(c)
                    since_left = tick - p_left if tick is not None and tick > p_left else None
                    pending = (t, c, t - cpus.idle_from[o], since_left, t - awake if awake is not None else None)
    return place, wakes


def picked_off(point: WakePoint, protect_us: float) -> bool:
    """Whether the wake-up came after a tick on the parent's CPU at least `protect_us` (the child's protected slice)
    after the parent left it: a pick the parent could be dequeued at (eevdf.pick_over_delayed)."""
    return point[2] is not None and point[2] >= protect_us


def fit_wake_away(points: Sequence[WakePoint], what: str, min_points: int = 50,
                  protect_us: float | None = None, min_picked: int = 20) -> dict[str, Any] | None:
    """One family's placement_room.wake_away curve: the share of wake-ups by an exiting child on the parent's CPU
    that put the parent on the idle CPU, by that CPU's idle time (IDLE_EDGES_US bins, sparse ones merged); None
    under `min_points` points. (Either direction between the vCPUs: on the Intel host the moves up and down were
    the same, 0.80 and 0.81 of the wake-ups with the other CPU idle under 25 us, tools/place_rule.py 2026-12-02.)

    `protect_us` (the child's protected slice; the points carry the ticks): the wake-ups after a tick at least that
    long after the parent left its CPU (picked_off: the parent could be dequeued there, and is then woken through
    select_task_rq, not in place) give after_pick, by the waker CPU's awake time (AWAKE_EDGES_US), where there are
    `min_picked` of them; the curve comes from the others."""
    picked = [p for p in points if protect_us is not None and picked_off(p, protect_us) and p[3] is not None]
    rest = [p for p in points if not (protect_us is not None and picked_off(p, protect_us))] \
        if len(picked) >= min_picked else list(points)
    if len(rest) < min_points:
        return None
    edges, shares, counts = _bins(np.array([p[0] for p in rest]), np.array([p[1] for p in rest], float))
    out: dict[str, Any] = {"idle_us": edges, "share": shares}
    text = (f"measured: {what}: {len(rest)} wake-ups of a parent sleeping in wait (a process child's exit_notify) or "
            f"pthread_join (a thread's clear_child_tid) by the child on the parent's CPU while another CPU was idle; "
            f"the parent ran next on the idle CPU, by its idle time: "
            + ", ".join(f"<= {e:g} us {s:g} of {n}" for e, s, n in zip(edges, shares, counts)))
    if len(picked) >= min_picked:
        a_edges, a_shares, a_counts = _bins(np.array([p[3] for p in picked]), np.array([p[1] for p in picked], float),
                                            AWAKE_EDGES_US)
        out.update(after_pick_awake_us=a_edges, after_pick=a_shares)
        text += (f"; after_pick: {len(picked)} wake-ups after a tick on the parent's CPU at least {protect_us:g} us "
                 f"(the child's protected slice: half a slice) after the parent left it, left out of the curve, by the "
                 f"waker CPU's awake time: " + ", ".join(f"<= {e:g} us {s:g} of {n}"
                                                         for e, s, n in zip(a_edges, a_shares, a_counts)))
    elif protect_us is not None:
        text += f" (after_pick: {len(picked)} wake-ups after such a tick, under {min_picked}: not fitted)"
    out["source"] = text
    return out


def exec_points(events: Iterable[TraceEvent], settle_us: float = 0.0) -> list[bool]:
    """sched_exec in one traced unpinned posix_spawn loop (sched_switch, sched_wakeup_new, sched_migrate_task and
    sched_process_exec on): for each child of the parent (the pid that emits the most sched_wakeup_new) whose execve
    began while another CPU was idle (the other CPU ran the idle task when its exec completed where it started, or
    sched_exec's migration took it to an idle CPU), whether it left execve on another CPU than it first ran on.
    Children made in the first `settle_us` after the parent's first creation are left out."""
    evs = list(events)
    loop = _loop_parent(evs, settle_us)
    if loop is None:
        return []
    P, settled = loop
    cur: dict[int, int] = {}
    kids: dict[int, dict[str, Any]] = {}  # child pid -> its first CPU and whether it moved to an idle one
    out: list[bool] = []
    for t, c, pid, e, f in evs:
        if e == "sched_switch":
            nxt = int(f["next_pid"])
            cur[c] = nxt
            k = kids.get(nxt)
            if k is not None and k.get("cpu") is None:
                k["cpu"] = c
        elif e == "sched_wakeup_new" and pid == P and t >= settled:
            kids[int(f["pid"])] = {"cpu": None}
        elif e == "sched_migrate_task":
            k = kids.get(int(f["pid"]))
            if k is not None and k.get("cpu") is not None and "to_idle" not in k:
                k["to_idle"] = cur.get(int(f["dest_cpu"])) == 0
        elif e == "sched_process_exec":
            k = kids.pop(pid, None)
            if k is None or k.get("cpu") is None:
                continue
            other_idle = any(p == 0 for o, p in cur.items() if o != k["cpu"])
            if k.get("to_idle", other_idle and c == k["cpu"]):
                out.append(c != k["cpu"])
    return out
