"""A timeline of one replication as Chrome trace-event JSON (open it in https://ui.perfetto.dev or
chrome://tracing).

`write_trace(exp, path)` runs the experiment's first replication again, with the same seed (so the
same timeline as `run_experiment`'s replication 0: one `forksim.simulation.Simulation`, built as the
run builds it), with an observer attached (forksim.timeline's `Timeline`: `on_cpu`, a task is made current on a
CPU, starts running, leaves it; `on_stage`, a creation stage ends; `on_end`). It writes:

- process "CPUs": one lane per CPU, complete ('X') slices of which task ran when, plus
  "context switch" slices (the switch or migration cost before a task runs). A CPU lane's slices
  never overlap, and their total is exactly the CPU's busy time as the run accounts it (a CPU
  waking from halt is not busy: that wait shows on the task's lane instead).
- process "tasks": one lane per parent, thread and background task, and lanes for each parent's
  children. A creation shows as a `fork()` slice (entry to return) with its stages nested inside
  (copy_process_setup, `mmap_lock wait`, dup_mmap, copy_process_tail with the pidmap_lock and
  tasklist_lock spin waits in its args), then `wait_reap`; a child as one slice (first run to its
  last schedule) with exec / do_exit nested; periods off the CPU as nested `off CPU: ...` slices
  (preempted, sleeping, waiting for a halted CPU to wake); a faulting thread's sleeps are its
  `mmap_lock stall`s (a fault on a VMA the parent's dup_mmap has already reached).

The trace is bounded: it covers the measured window (after warm-up; for a server workload, from a
tenth of the span before its first snapshot, so that the fork is in it) up to `max_span_us` of simulated
time and stops early once `max_events` events are recorded; the file's `otherData` says which
window was traced, whether and why it was cut, and the CPU busy time the machine itself counted.
Times (`ts`, `dur`) are microseconds of simulated time.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Experiment
from .io import write_text
from .kernel.stages import TRACE_TEXT, WAIT_REAP
from .machine import Machine
from .profile import Profile
from .runner import resolve_profile
from .timeline import Timeline, record_window

__all__ = ["write_trace", "build_trace", "DEFAULT_MAX_SPAN_US", "DEFAULT_MAX_EVENTS", "CPU_PID", "TASK_PID"]

DEFAULT_MAX_SPAN_US = 100_000.0  # 100 ms of simulated time after warm-up
DEFAULT_MAX_EVENTS = 200_000
CPU_PID, TASK_PID = 0, 1
_CHILD_TID_BASE = 1_000_000
_STAGE_ARGS = TRACE_TEXT  # what each stage's slice says: kernel/stages.py


def _ns(t: float) -> float:
    """Microseconds rounded to the nanosecond: abutting slices share exact boundaries."""
    return round(t, 3)


class _Lane:
    """Slices of one task lane, made properly nested (Perfetto needs it for 'X' events on a lane)."""

    def __init__(self):
        self.items: list[tuple[float, float, int, str, dict]] = []  # start, end, level, name, args

    def add(self, start: float, end: float, level: int, name: str, args: dict | None = None) -> None:
        self.items.append((start, end, level, name, args or {}))

    def nested(self, lo: float, hi: float) -> tuple[list[tuple[float, float, str, dict]], int]:
        """Clip to [lo, hi], round to ns, and drop or merge what would not nest; (slices, dropped)."""
        clipped = []
        for start, end, level, name, args in self.items:
            s, e = _ns(max(start, lo)), _ns(min(end, hi))
            if e > s:
                clipped.append((s, e, level, name, args))
        clipped.sort(key=lambda x: (x[0], -x[1], x[2]))
        out: list[tuple[float, float, str, dict]] = []
        stack: list[tuple[float, float, str, dict]] = []
        dropped = 0
        for s, e, _level, name, args in clipped:
            while stack and stack[-1][1] <= s:
                stack.pop()
            if stack:
                ps, pe, pname, pargs = stack[-1]
                if ps == s and pe == e:  # the same interval twice (a sleep that is the lock wait)
                    pargs.setdefault("also", []).append(name)
                    continue
                if e > pe:  # would cross its parent's end: keep the part inside
                    e = pe
                    dropped += 1
                    if e <= s:
                        continue
            item = (s, e, name, args)
            out.append(item)
            stack.append(item)
        return out, dropped


class _Events:
    """The trace's events, and its metadata events (names and sort order of processes and lanes)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def meta(self, pid: int, tid: int | None, name: str, value: Any) -> None:
        ev = {"ph": "M", "pid": pid, "name": name, "args": {"name" if "name" in name else "sort_index": value}}
        if tid is not None:
            ev["tid"] = tid
        self.events.append(ev)


def _cpu_lanes(out: _Events, machine: Machine, rec: Timeline, lo: float, hi: float) -> dict[int, float]:
    """One lane per CPU: what ran when, and the context switches; returns each lane's busy time."""
    meta, events = out.meta, out.events
    lane_busy = {}
    for cpu in machine.cpus:
        meta(CPU_PID, cpu.id, "thread_name", f"CPU {cpu.id}")
        meta(CPU_PID, cpu.id, "thread_sort_index", cpu.id)
        total = 0.0
        for start, end, kind, task in sorted(rec.cpu[cpu.id], key=lambda x: x[0]):
            s, e = _ns(max(start, lo)), _ns(min(end, hi))
            if e <= s:
                continue
            total += min(end, hi) - max(start, lo)
            if kind == "run":
                ev = {"ph": "X", "pid": CPU_PID, "tid": cpu.id, "ts": s, "dur": _ns(e - s), "name": task.name,
                      "cat": "cpu", "args": {"task": task.name, "pid": task.pid}}
            else:
                ev = {"ph": "X", "pid": CPU_PID, "tid": cpu.id, "ts": s, "dur": _ns(e - s), "name": "context switch",
                      "cat": "cpu,switch", "args": {"next": task.name, "pid": task.pid}}
            events.append(ev)
        lane_busy[cpu.id] = total
    return lane_busy


@dataclass
class _TaskLanes:
    """The task lanes of a trace, and what places slices on them."""

    records: list  # the replication's creation records (namedtuples), in entry order
    by_parent: dict[int, list]
    kind: str  # the creation the workload makes
    pname: str  # the parents' task names: 'parent3' (Workload), 'server0' (Server)
    lanes: dict[int, _Lane]
    lane_names: dict[int, str]
    sort_keys: dict[int, tuple]
    task_lane: dict[Any, int]


def _task_lanes(workload, rec: Timeline, hi: float) -> _TaskLanes:
    """A lane per parent, thread and background task; children of one parent share a lane while they
    do not overlap (more lanes where they do), each child one slice."""
    records = list(workload.records.frame().itertuples(index=False))
    by_parent: dict[int, list] = defaultdict(list)
    for r in records:
        by_parent[r.parent].append(r)
    kind = workload.kind
    pname = workload.parent_name  # the parents' task names: 'parent3' (Workload), 'server0' (Server)
    children: dict[int, list] = defaultdict(list)  # parent index -> its child tasks in creation order
    parent_of_child: dict[str, int] = {f"{pname}{i}.{kind}": i for i in by_parent}
    lanes: dict[int, _Lane] = {}
    lane_names: dict[int, str] = {}
    sort_keys: dict[int, tuple] = {}
    task_lane: dict[Any, int] = {}
    child_lane_ends: dict[int, list[float]] = defaultdict(list)  # parent index -> end of each child lane

    for task in sorted(rec.tasks, key=lambda t: t.pid):
        if task.name in parent_of_child:
            children[parent_of_child[task.name]].append(task)
            continue
        lanes[task.pid] = _Lane()
        lane_names[task.pid] = f"{task.name} (pid {task.pid})"
        sort_keys[task.pid] = (task.name.split(".")[0], 0, task.pid)
        task_lane[task] = task.pid

    # children of one parent: one lane while they do not overlap, more where they do
    child_record: dict[Any, Any] = {}
    for i, kids in children.items():
        for task, r in zip(kids, by_parent[i]):
            child_record[task] = r
        for task in kids:
            start = rec.first_run.get(task, math.inf)
            end = rec.last_leave.get(task, hi)
            ends = child_lane_ends[i]
            k = next((k for k, e in enumerate(ends) if e <= start), None)
            if k is None:
                ends.append(end)
                k = len(ends) - 1
            else:
                ends[k] = end
            tid = _CHILD_TID_BASE + 1000 * i + k
            if tid not in lanes:
                lanes[tid] = _Lane()
                lane_names[tid] = f"{pname}{i} children" + (f" #{k + 1}" if k else "")
                sort_keys[tid] = (f"{pname}{i}", 1, k)
            task_lane[task] = tid
            r = child_record.get(task)
            args = {"pid": task.pid, "clone": kind}
            if r is not None:
                args.update({"creation": r.seq, "child_cpu": r.child_cpu})
                if r.child_start == r.child_start:  # NaN: still in ret_from_fork when the window ends
                    args["child_start_latency_us"] = r.child_start - r.start
            lanes[tid].add(start, end, 0, f"{kind} child", args)
    return _TaskLanes(records, by_parent, kind, pname, lanes, lane_names, sort_keys, task_lane)


def _creation_slices(t: _TaskLanes, rec: Timeline, hi: float) -> None:
    """The creations on their parents' lanes (the call, its stages, its lock waits) and the periods
    each task spent off its CPU."""
    records, by_parent, kind, pname, lanes, task_lane = t.records, t.by_parent, t.kind, t.pname, t.lanes, t.task_lane
    # creations on the parents' lanes
    parent_tid = {int(t.name[len(pname):]): tid for t, tid in task_lane.items()
                  if t.name.startswith(pname) and t.name[len(pname):].isdigit()}
    for r in records:
        tid = parent_tid.get(r.parent)
        if tid is None or not r.start == r.start:
            continue
        end = r.fork_ret if r.fork_ret == r.fork_ret else hi
        lane = lanes[tid]
        lane.add(r.start, end, 0, f"{kind}()", {
            "creation": r.seq, "fork_latency_us": end - r.start, "parent_cpu": r.parent_cpu,
            "child_cpu": r.child_cpu, "stack_cache_hit": bool(r.stack_hit),
            "mmap_lock_wait_us": r.mmap_wait, "pidmap_lock_spin_us": r.pidmap_wait,
            "tasklist_lock_spin_us": r.tasklist_wait, "complete": r.fork_ret == r.fork_ret,
        })
        if r.mmap_wait > 0.0:
            s = r.start + r.setup_us
            lane.add(s, s + r.mmap_wait, 1, "mmap_lock wait", {"lock": "mmap_lock (write)", "wait_us": r.mmap_wait})

    tid_parent = {tid: i for i, tid in parent_tid.items()}
    starts = {i: [r.start for r in recs] for i, recs in by_parent.items()}
    for task, name, start, end in rec.stages:
        tid = task_lane.get(task)
        if tid is None:
            continue
        args = {"stage": name, "what": _STAGE_ARGS.get(name, ""), "us": end - start}
        if name == "copy_process_tail" and tid in tid_parent:
            recs = by_parent[tid_parent[tid]]
            k = bisect.bisect_right(starts[tid_parent[tid]], start) - 1
            if k >= 0:
                r = recs[k]
                args.update({"pidmap_lock_spin_us": r.pidmap_wait, "tasklist_lock_spin_us": r.tasklist_wait})
        level = 0 if name == WAIT_REAP else 1
        lanes[tid].add(start, end, level, name, args)

    for task, periods in rec.off.items():
        tid = task_lane.get(task)
        if tid is None:
            continue
        for start, end, label in periods:
            lanes[tid].add(start, end, 2, label, {"task": task.name, "pid": task.pid})


def build_trace(
    exp: Experiment,
    profile: str | Profile | None = None,
    *,
    max_span_us: float = DEFAULT_MAX_SPAN_US,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> dict[str, Any]:
    """The trace as a dict ({"traceEvents": [...], "otherData": {...}}). `profile`: a name or path
    (the experiment's what-ifs are applied), or an already resolved `Profile` such as
    `RunResult.profile` (used as it is)."""
    if not (max_span_us > 0 and math.isfinite(max_span_us)):
        raise ValueError("max_span_us must be a positive number of microseconds")
    if max_events < 1:
        raise ValueError("max_events must be at least 1")
    prof = profile if isinstance(profile, Profile) else resolve_profile(exp, profile)
    machine, workload, rec, (lo, hi), busy, reason = record_window(exp, prof, max_span_us, max_events)
    out = _Events()
    meta, events = out.meta, out.events
    meta(CPU_PID, None, "process_name", "CPUs")
    meta(CPU_PID, None, "process_sort_index", 0)
    meta(TASK_PID, None, "process_name", "tasks")
    meta(TASK_PID, None, "process_sort_index", 1)
    lane_busy = _cpu_lanes(out, machine, rec, lo, hi)
    t = _task_lanes(workload, rec, hi)
    _creation_slices(t, rec, hi)
    records, lanes, lane_names, sort_keys = t.records, t.lanes, t.lane_names, t.sort_keys

    dropped = 0
    for idx, tid in enumerate(sorted(lanes, key=lambda t: sort_keys[t])):
        meta(TASK_PID, tid, "thread_name", lane_names[tid])
        meta(TASK_PID, tid, "thread_sort_index", idx)
        slices, d = lanes[tid].nested(lo, hi)
        dropped += d
        for s, e, name, args in slices:
            cat = "stall" if name in ("mmap_lock stall", "mmap_lock wait") else (
                "offcpu" if name.startswith("off CPU") else "creation")
            events.append({"ph": "X", "pid": TASK_PID, "tid": tid, "ts": s, "dur": _ns(e - s), "name": name,
                           "cat": cat, "args": args})

    span = hi - lo
    cpus = len(machine.cpus)
    other = {
        "generator": "forksim.trace",
        "experiment": exp.experiment.name,
        "profile": prof.name,
        "seed": exp.experiment.seed,
        "replication": 0,
        "time_unit": "microseconds of simulated time",
        "window_us": [lo, hi],
        "warmup_us": exp.experiment.warmup,
        "bounded": True,
        "max_span_us": max_span_us,
        "max_events": max_events,
        "truncated": reason is not None,
        "truncated_by": reason,
        "cpus": cpus,
        "cpu_busy_us": busy,  # the machine's own busy-time counters over the window
        "cpu_utilization": (sum(busy) / (cpus * span)) if span > 0 else None,
        "lane_busy_us": [lane_busy[c] for c in range(cpus)],
        "creations_started": sum(1 for r in records if lo <= r.start < hi),
        "slices_clipped_to_nest": dropped,
    }
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_trace(
    exp: Experiment,
    path: str | Path,
    profile: str | Profile | None = None,
    *,
    max_span_us: float = DEFAULT_MAX_SPAN_US,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> dict[str, Any]:
    """Run replication 0 again with tracing and write Chrome trace-event JSON to `path`; returns
    the trace's `otherData` (window, bounds, busy time)."""
    trace = build_trace(exp, profile, max_span_us=max_span_us, max_events=max_events)
    write_text(path, json.dumps(trace, separators=(",", ":"), allow_nan=False) + "\n")
    return trace["otherData"]
