"""PELT replayed over a traced run: each CPU's load, utilisation and runnable averages and its runnable
tasks at any event, kept as the model keeps them (forksim.sched.balance), so that where the kernel put a
traced task can be set beside the rule the model applies to the same state (forksim.sched.idlest.verdict).

Fed the load's sched events in order: sched_switch (running, preempted: still runnable, asleep: its
averages stay on the CPU and decay, dead "Z"/"X": they leave), sched_wakeup and sched_migrate_task (the
CPU it is runnable on), sched_wakeup_new (a new task: load 1024, utilisation and runnable average from
post_init_entity_util_avg on its CPU). Every other event's current task runs on the event's CPU, which
also catches a move the pid filter did not record. Only the load's own tasks are followed: other tasks
(kernel threads, other sessions) count neither here nor in the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..sched.balance import decay, post_init_util

if TYPE_CHECKING:
    from .segments import Event

__all__ = ["PeltReplay"]

_FULL = 1024.0  # a nice-0 task's weight: its load when always runnable


@dataclass(slots=True)
class _Averages:
    """One task's PELT state: the CPU it belongs to, whether it runs or waits there, its averages at `t_ns`."""

    cpu: int
    state: str  # "running", "runnable" or "sleeping"
    load: float
    runnable: float
    util: float
    t_ns: float

    def advance(self, now_ns: float) -> None:
        dt_us = (now_ns - self.t_ns) / 1e3
        if dt_us <= 0.0:
            return
        d = decay(dt_us)
        on_rq = _FULL * (1.0 - d) if self.state != "sleeping" else 0.0
        self.load = self.load * d + on_rq
        self.runnable = self.runnable * d + on_rq
        self.util = self.util * d + (_FULL * (1.0 - d) if self.state == "running" else 0.0)
        self.t_ns = now_ns


class PeltReplay:
    """The PELT averages of the tasks in `pids` (grown by every new task of theirs) over a trace."""

    def __init__(self, pids: set[int]):
        self.pids = pids
        self.tasks: dict[int, _Averages] = {}

    def stats(self, cpu: int, now_ns: float) -> tuple[int, float, float, float]:
        """`cpu`'s runnable tasks (running included) and its load_avg, util_avg and runnable_avg now."""
        nr, load, util, runnable = 0, 0.0, 0.0, 0.0
        for a in self.tasks.values():
            if a.cpu != cpu:
                continue
            a.advance(now_ns)
            nr += a.state != "sleeping"
            load += a.load
            util += a.util
            runnable += a.runnable
        return nr, load, util, runnable

    def feed(self, e: "Event") -> None:
        """Apply one event (in time order)."""
        now = e.ts
        if e.name != "sched_switch" and e.pid in self.tasks:
            self._set(e.pid, now, "running", e.cpu)  # the event's current task runs on its CPU
        if e.name == "sched_switch":
            prev, nxt = int(e.f.get("prev_pid") or -1), int(e.f.get("next_pid") or -1)
            if prev in self.tasks:
                state = e.f.get("prev_state", "")
                if state[:1] in ("Z", "X"):
                    del self.tasks[prev]  # task_dead_fair: its averages leave the CPU
                else:
                    self._set(prev, now, "runnable" if state.startswith("R") else "sleeping", e.cpu)
            if nxt in self.pids:
                self._set(nxt, now, "running", e.cpu)
        elif e.name == "sched_wakeup":
            pid = int(e.f.get("pid") or -1)
            if pid in self.tasks:
                self._set(pid, now, "runnable", int(e.f.get("target_cpu") or e.cpu))
        elif e.name == "sched_migrate_task":
            pid = int(e.f.get("pid") or -1)
            if pid in self.tasks:
                a = self.tasks[pid]
                self._set(pid, now, a.state, int(e.f.get("dest_cpu") or a.cpu))
        elif e.name == "sched_wakeup_new":
            pid = int(e.f.get("pid") or -1)
            if pid in self.pids:
                cpu = int(e.f.get("target_cpu") or e.cpu)
                _, load, util, _ = self.stats(cpu, now)
                u = post_init_util(load, util)
                self.tasks[pid] = _Averages(cpu, "runnable", _FULL, u, u, now)

    def _set(self, pid: int, now: float, state: str, cpu: int) -> None:
        a = self.tasks.get(pid)
        if a is None:  # first seen (started before the trace): as a new task
            self.tasks[pid] = _Averages(cpu, state, _FULL, 0.0, 0.0, now)
            return
        a.advance(now)
        a.state, a.cpu = state, cpu
