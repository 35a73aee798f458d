"""The traced tight loops that measure a packing kernel's placement room rule (profile.placement_room).

forkbench's unpinned loops (jobs.py) start with the other CPU idle long and run ~200 creations: a packing
kernel keeps every child local there (the all-local regime: the parent's CPU never halts, the other CPU's
idle time only grows), while a program that has run a while alternates (measured on the Intel host,
2026-12-02: tools/vfork_trace.py, tools/place_rule.py). So this job runs the validation's own load
generator (a closed loop, one unpinned parent, no think time) for each creation family long enough to leave
the start's regime, with every CPU's sched_switch, sched_waking and sched_wakeup_new traced, and keeps the
per-creation state room.trace_points reads from them. The fit is room.fit_room / room.fit_wake_away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from ..profile import ROOM_FAMILIES
from . import tracefs
from .forked import forked_map
from .plan import MiB, Store
from .room import TICK_EVENT, exec_points, fit_room, fit_wake_away, trace_points
from .scheduling import MIN_IDLE_EXECS
from .segments import parse_trace

__all__ = ["LOADGEN_KINDS", "MIN_PLACEMENTS", "ATTEMPTS", "SPARSE_LOOP", "WAIT_LOOP", "measure_room", "room_section",
           "loop_shares", "measure_loop"]

# profile family -> the load generator's --kind
LOADGEN_KINDS = {"vfork": "vfork", "spawn": "posix_spawn", "thread": "thread", "fork": "fork"}
# sched_migrate_task and sched_process_exec: where sched_exec takes the posix_spawn loop's children (room.exec_points)
EVENTS = ("sched/sched_switch", "sched/sched_waking", "sched/sched_wakeup_new", "sched/sched_migrate_task",
          "sched/sched_process_exec")
# and the tick where the kernel has its event (x86): which wake-ups came after a pick (room.picked_off)
TICK_EVENTS = (f"irq_vectors/{TICK_EVENT}",)
KIND = "room"  # the Store's kind of these runs


# A loop whose parent sat on a CPU whose switches away from the idle task tracefs did not record (CPU 1 of the
# Intel host, 2026-12-02: none of them in any trace) gives no placement with a known awake time; a thread loop's
# parent never changes CPU. So a family with fewer placements than this runs again, up to ATTEMPTS times.
MIN_PLACEMENTS = 200
ATTEMPTS = 4
# The loop's start: with the other CPU long idle a packing kernel keeps every child local (awake and idle times
# only grow) until something breaks the streak; traced on the Intel host (2026-12-02, the fork loop), the first
# ~80-100 ms of a run held every placement of that regime (540 of a 0.3 s run's 1,566 placements, 230 of a 2 s
# run's 5,775, then 1%), which a program that has run a while (the validation's rows, after their warm-up) is
# not in. Each loop runs this much longer, and its placements and wake-ups in this first part are left out.
SETTLE_S = 0.15


@dataclass
class _Loop:
    """One traced loop: what ran, the load generator's summary, and its trace's text until read (then its points)."""

    family: str
    seconds: float
    attempt: int
    rss: int
    think_s: float
    meta: dict[str, Any]
    lost: int
    text: str
    tsc_hz: float | None
    points: tuple[list, list, list] = ([], [], [])  # what _points read from the text

    def read(self, points: tuple[list, list, list]) -> None:
        self.points, self.text = points, ""  # the text is not needed again (tens of MB a tight loop)


def _traced_loop(trace: tracefs.TraceInstance, kind: str, seconds: float, rss: int = 0,
                 think_s: float = 0.0) -> tuple[dict[str, Any], int, str, float | None]:
    """One run of the load generator's loop (an image of `rss` bytes, `think_s` asleep after each creation)
    recorded by `trace` (open, its buffer emptied for the run): its summary, the events lost, the trace's text
    and the clock's rate it is read with (TraceInstance.read)."""
    from ..validation.loadgen import run_loadgen

    args = ["--mode", "closed", "--kind", kind, "--parents", "1", "--duration", f"{seconds + SETTLE_S:g}",
            "--warmup", "0.05", "--hogs", "0", "--rss", str(rss), *(["--think", f"{think_s:g}"] if think_s else [])]
    trace.clear_buffer()
    trace.start()
    try:
        meta, _recs, _stalls = run_loadgen(args, timeout=30.0 + 10 * seconds)
    finally:
        trace.stop()
    lost = trace.overruns()
    return meta, lost, trace.text(), trace.tsc_hz if trace.clock == "x86-tsc" else None


def _points(loop: _Loop) -> tuple[list, list, list]:
    """A recorded loop's placements, wake-ups, and for posix_spawn whether each exec that began with another CPU
    idle left on another CPU (room.trace_points, room.exec_points)."""
    evs = [(e.ts * 1e-3, e.cpu, e.pid, e.name, e.f) for e in parse_trace(loop.text, loop.tsc_hz)]
    place, wakes = trace_points(evs, loop.family, settle_us=SETTLE_S * 1e6)
    execs = exec_points(evs, settle_us=SETTLE_S * 1e6) if loop.family == "spawn" else []
    return place, wakes, execs


# The tight loops leave the other CPU idle a few hundred microseconds at most; a fork after a while asleep, or of an
# image whose copy takes longer than that, finds it idle for milliseconds, a regime the tight loops do not reach
# (the 2026-12-03 quick calibration's fork curve had 12 placements there). Traced on the Intel host (2026-12-03,
# the load generator's unpinned fork loop): with the other CPU idle over 2 ms, 0.98 of 99 children of a 64 MiB
# parent thinking 1 ms stayed on its CPU (0.98 of 500 forks in the validation's think1ms row) and 0.26 of 35 in a
# tight 256 MiB loop. So the fork family also runs this loop, the sparse loop of a process forking now and then: a
# 64 MiB image, 1 ms asleep after each creation (its placements pooled with the tight loop's; not in its share).
# vfork and pthread_create alike: the tight loops' bins of the other CPU idle over 1 ms held 13-16 wait wake-ups of a
# vfork parent, 0.62-0.94 of them moved to the idle CPU, and 17-62 placements, 0.35-0.77 of them kept local; the load
# generator's loops asleep 5 and 10 ms after each (zen4 haltpoll host, 2026-12-05, traced) moved 0 of 233 such vfork
# wake-ups and 0 of 275 thread ones, kept 115 of 116 vfork and 136 of 137 thread children local, and the validation's
# think rows 98.5-99% of them: the model had moved 84% of a 1 ms think loop's vfork parents (its round trip +131%).
SPARSE_LOOP = {"fork": (64 * MiB, 0.001, 0.4),  # family -> (rss bytes, think seconds, seconds traced)
               "vfork": (0, 0.005, 0.3), "thread": (0, 0.005, 0.3)}


# A parent waits in wait() as long as its child's exit takes: past the child's protected slice (half a slice, 0.75 ms
# on 2 vCPUs) a tick's pick can dequeue it (eevdf.pick_over_delayed), and its wake-up then goes through
# select_task_rq. The tight loops' children exit in tens of us and the sparse loop's in ~0.9 ms: few such wake-ups.
# A fork loop of a 128 MiB image (its child's exit ~1.8 ms) gives them (traced 2026-12-05, zen4 haltpoll host: 311
# of 671 wake-ups came after such a tick, 0.98 of them to the idle CPU, against 0 of 360 of the others).
WAIT_LOOP = {"fork": 128 * MiB}  # family -> rss bytes (traced as long as the tight loop)


def measure_room(store: Store, seconds: float, log: Callable[[str], None]) -> None:
    """Run each family's traced loop for `seconds`, then its SPARSE_LOOP and WAIT_LOOP once, read their traces
    side by side (forked_map: the reading took ~2.5 of the step's ~7.5 s one after another), run a family's tight
    loop again while it has under MIN_PLACEMENTS placements, and add their points to `store` (kind "room", key
    family; the sparse and wait loops' key also rss and think_s), each family's tight loops first: samples of
    placements {"awake_us", "idle_us", "local"} and segments of wait wake-ups {"idle_us", "moved"}. One tracefs
    instance records every loop in turn (each costs ~0.1 s to make and remove)."""
    trace = _room_trace()
    try:
        trace.open()
    except OSError as exc:
        trace.close()
        log(f"placement room loops not measured: tracefs instance: {exc}")
        return
    try:
        families: list[tuple[list[_Loop], list[_Loop]]] = []  # each family's tight loops, and its other loops
        for family in ROOM_FAMILIES:
            tight = _record_loop(trace, family, seconds, 0, log)
            if tight is None:  # the load generator cannot run here: nor will the sparse loop
                continue
            others = []  # (seconds, rss, think_s)
            if family in SPARSE_LOOP:
                rss, think_s, secs = SPARSE_LOOP[family]
                others.append((secs, rss, think_s))
            if family in WAIT_LOOP:
                others.append((seconds, WAIT_LOOP[family], 0.0))
            families.append(([tight], [loop for secs, rss, think_s in others
                                       if (loop := _record_loop(trace, family, secs, 0, log, rss, think_s))]))
        recorded = [loop for tight, others in families for loop in tight + others]
        for loop, points in zip(recorded, forked_map(_points, recorded, cost=lambda loop: len(loop.text))):
            loop.read(points)
        for tight, _others in families:
            while sum(len(loop.points[0]) for loop in tight) < MIN_PLACEMENTS and len(tight) < ATTEMPTS:
                again = _record_loop(trace, tight[0].family, seconds, len(tight), log)
                if again is None:
                    break
                again.read(_points(again))
                tight.append(again)
    finally:
        trace.close()
    for tight, others in families:
        for loop in tight + others:
            _store_loop(store, loop, log)


def _room_trace() -> tracefs.TraceInstance:
    """The tracefs instance the loops are recorded by (not yet open)."""
    ticks = tuple(e for e in TICK_EVENTS if (tracefs.TRACEFS / "events" / e / "enable").exists())
    return tracefs.TraceInstance(events=EVENTS + ticks, buffer_kb=65536, name=f"forksim-{os.getpid()}-room",
                                 optional=False)


def _record_loop(trace: tracefs.TraceInstance, family: str, seconds: float, attempt: int,
                 log: Callable[[str], None], rss: int = 0, think_s: float = 0.0) -> _Loop | None:
    """One traced loop of `family`, recorded: None where it could not run (said in `log`)."""
    from ..validation.loadgen import LoadgenError

    try:
        meta, lost, text, tsc_hz = _traced_loop(trace, LOADGEN_KINDS[family], seconds, rss, think_s)
    except (OSError, LoadgenError) as exc:
        log(f"placement room loop ({LOADGEN_KINDS[family]}) not measured: {exc}")
        return None
    return _Loop(family, seconds, attempt, rss, think_s, meta, lost, text, tsc_hz)


def _store_loop(store: Store, loop: _Loop, log: Callable[[str], None]) -> None:
    """A read loop's points into `store`, said in `log`."""
    place, wakes, execs = loop.points
    summary = {k: v for k, v in loop.meta.items() if isinstance(v, (int, float))}
    store.add(KIND, {"family": loop.family, "seconds": loop.seconds, "settle_s": SETTLE_S, "lost_events": loop.lost,
                     "attempt": loop.attempt, **({"rss": loop.rss} if loop.rss else {}),
                     **({"think_s": loop.think_s} if loop.think_s else {})},
              {"loadgen_summary": summary},
              [{"awake_us": round(a, 2), "idle_us": round(i, 2), "local": loc} for _f, a, i, loc in place],
              [{"idle_us": round(i, 2), "moved": m, "tick_after_us": _round(tick), "awake_us": _round(awake)}
               for i, m, tick, awake in wakes])
    if execs:
        store.runs[-1]["exec_moved"] = execs
    log(f"placement room loop ({LOADGEN_KINDS[loop.family]}, {_loop_label(store.runs[-1]['key'])}): "
        f"{len(place)} placements, {len(wakes)} wake-ups")


def measure_loop(trace: tracefs.TraceInstance, store: Store, family: str, seconds: float,
                 log: Callable[[str], None], rss: int = 0, think_s: float = 0.0) -> int | None:
    """One traced loop of `family`, read and added to `store` at once (a loop measured alone, tools/amend_raw.py):
    its number of placements, None where it could not run."""
    loop = _record_loop(trace, family, seconds, 0, log, rss, think_s)
    if loop is None:
        return None
    loop.read(_points(loop))
    _store_loop(store, loop, log)
    return len(loop.points[0])


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _loop_label(key: dict[str, Any]) -> str:
    """A traced loop as the sources name it: its length, and a sparse or wait loop's image and think time."""
    extra = f", {key.get('rss', 0) // MiB} MiB" if key.get("rss") or key.get("think_s") else ""
    if key.get("think_s"):
        extra += f", {key['think_s'] * 1e3:g} ms asleep after each"
    return f"{key['seconds']:g} s{extra}"


# the placement section's share each family's tight loop measures where the room rule does not take the family
LOOP_SHARE_KEYS = {"fork": "fork_local_when_idle", "spawn": "spawn_local_when_idle"}


def loop_shares(store: Store, room: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """For a family the room rule leaves out (no room visible for it), its placement share from the same tight
    loops: the creations made while another CPU was idle that stayed on the parent's CPU, over all of them. The
    loop a running program settles in, where forkbench's ~200 creations from a long-idle start gave 0.50 and 0.98
    in two quick calibrations 75 minutes apart (the Intel host, 2026-12-02; these loops gave 0.54 and 0.67, the
    full calibration's 0.50). And sched_exec's share (exec_moves_when_idle) from the posix_spawn loop where it saw
    MIN_IDLE_EXECS execs begin with another CPU idle."""
    out: dict[str, dict[str, Any]] = {}
    listed = (room or {}).get("families", {})
    for family, key in LOOP_SHARE_KEYS.items():
        runs = [r for r in store.select(KIND) if r["key"]["family"] == family and not r["key"].get("think_s")
                and not r["key"].get("rss")]  # the tight loop, not the sparse or the wait loop
        local = [bool(s["local"]) for r in runs for s in r["samples"]]
        if family in listed or len(local) < MIN_PLACEMENTS:
            continue
        secs = ", ".join(f"{r['key']['seconds']:g} s" for r in runs)
        out[key] = {"value": round(sum(local) / len(local), 3), "source": (
            f"measured: the validation's load generator's closed {LOADGEN_KINDS[family]} loop, one unpinned parent, "
            f"traced ({secs}): of {len(local)} creations made while "
            f"another CPU was idle, {sum(local)} put the child on the parent's CPU (sched_wakeup_new target_cpu); "
            f"the placement room rule does not explain this family here, so its share is the loop's whole")}
    moved = [bool(m) for r in store.select(KIND) if r["key"]["family"] == "spawn" for m in r.get("exec_moved", [])]
    if len(moved) >= MIN_IDLE_EXECS:  # sched_exec in the loop a running program is in (forkbench's: from idle)
        out["exec_moves_when_idle"] = {"value": round(sum(moved) / len(moved), 3), "source": (
            f"measured: the validation's load generator's closed posix_spawn loop, one unpinned parent, traced "
            f"(sched_migrate_task, sched_process_exec; its first {SETTLE_S * 1e3:g} ms left out): of {len(moved)} "
            f"execve calls of a child begun while another CPU was idle, {sum(moved)} returned on another CPU "
            f"(sched_exec: select_task_rq(WF_EXEC), stop_one_cpu). forkbench's short traced loop from a long-idle "
            f"start gave 0.46 of 106 in one quick calibration and 0.01 in the ones before and after it (Intel host, "
            f"2026-12-02), so the loop's share is the profile's")}
    return out


def _settle_note(runs: list[dict[str, Any]]) -> str:
    """What the loops' start left out, for the source (runs stored before SETTLE_S kept their start)."""
    settle = {r["key"].get("settle_s") for r in runs}
    if settle == {None}:
        return "; each loop from its start"
    return "; each loop after its first " + "/".join(f"{s * 1e3:g}" for s in sorted(x for x in settle if x)) + \
        " ms (its start from a long-idle other CPU, a regime of its own: room_loops.SETTLE_S), left out"


def room_section(store: Store, protect_us: float | None = None) -> dict[str, Any] | None:
    """The profile's placement_room section from the store's room runs, or None (none, or no rule visible).
    `protect_us`: the child's protected slice (half the scheduler's slice), for the wake-ups after a pick
    (room.fit_wake_away's after_pick; runs traced without the tick have none)."""
    runs = store.select(KIND)
    if not runs:
        return None
    what = ("the validation's load generator, closed loop, one unpinned parent, traced (every CPU's sched_switch, "
            "sched_waking, sched_wakeup_new): " + ", ".join(f"{LOADGEN_KINDS[r['key']['family']]} "
                                                          f"{_loop_label(r['key'])}" for r in runs)
            + f" (a loop with under {MIN_PLACEMENTS} placements of known state ran again)"
            + _settle_note(runs))
    sec = fit_room([(r["key"]["family"], s["awake_us"], s["idle_us"], bool(s["local"]))
                    for r in runs for s in r["samples"]], what)
    if sec is None:
        return None
    wakes = {}
    for fam in sorted({r["key"]["family"] for r in runs}):
        w = fit_wake_away([(s["idle_us"], bool(s["moved"]), s.get("tick_after_us"), s.get("awake_us"))
                           for r in runs if r["key"]["family"] == fam for s in r["segments"]], what,
                          protect_us=protect_us if any("tick_after_us" in s for r in runs for s in r["segments"])
                          else None)
        if w is not None:
            wakes[fam] = w
    if wakes:
        sec["wake_away"] = wakes
    return sec
