"""Stage breakdown of a real fork from the events of a tracefs instance (tracefs.py records them).

The events (`TraceInstance.read()`, tracefs.py, which lists the tracepoints it enables) are parsed
here and the per-fork segments cut from them (`fork_segments`), in microseconds (on-CPU time where a task was switched out):

    A = sys_enter(clone/fork)  -> mmap_lock_start_locking(write) by the parent
        [copy_process_setup + thread stack + dup_mm]
    B = acquire_returned(write) -> released of the parent's mm   [dup_mmap]
    C = released -> task_newtask                                   [copy_process_tail]
    E = task_newtask -> sys_exit(clone/fork)                       [wake_up_new_task + return]
    child: sched_wakeup_new -> first sched_switch to it            [child start latency]
           switch-in -> sys_enter(exit_group)                      [ret_from_fork + user start-up]
           exit_group -> last mmap_lock release                    [do_exit up to exit_mmap's end]
           first -> last mmap_lock event in exit                   [exit_mmap]
           exit_group -> final switch-out                          [do_exit + exit_mmap]
           exit_group -> first switch-out while runnable           [do_exit's head: up to its first
                                                                    preemption point (vfork parent)]
           first switch-in -> sys_enter(execve)                    [ret_from_fork + the child's user work
                                                                    before its exec (posix_spawn's glibc)]
           sys_enter(execve) -> first switch-out while runnable    [execve up to exec_mmap's release of a
                                                                    posix_spawn parent, which preempts it]
    parent's wait4: the parts of the syscall outside its sleep     [wait_reap]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..kernel.stages import DO_EXIT, EXIT_MMAP, RET_FROM_FORK, WAIT_REAP

__all__ = ["SYSCALLS", "CREATE_NRS", "Event", "parse_trace", "fork_segments", "clone_segments", "cpu_idle_at",
           "placement_counts", "cpu_idle_since"]

# x86-64 syscall numbers of interest, by the kernel's names (asm/unistd_64.h)
SYSCALLS = {"__NR_clone": 56, "__NR_fork": 57, "__NR_vfork": 58, "__NR_execve": 59, "__NR_exit": 60,
            "__NR_wait4": 61, "__NR_exit_group": 231, "__NR_clone3": 435, "__NR_waitid": 247}
CREATE_NRS = {56, 57, 58, 435}
_US = 1e-3  # microseconds per nanosecond

# ---------------------------------------------------------------------------------------------
# parsing

TRACE_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*\S+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>\w+):\s?(?P<rest>.*)$"
)
_KV = re.compile(r"(\w+)=(\S+)")
# sched_switch's fields as the kernel prints them (half of a placement trace's events: matched once, not as key=value
# pairs); a line it does not match takes the pairs
_SWITCH = re.compile(r"prev_pid=(\S+) prev_prio=\S+ prev_state=(\S+) ==> next_comm=.* next_pid=(\S+) next_prio=\S+$")


@dataclass(slots=True)
class Event:
    ts: float  # nanoseconds
    pid: int
    cpu: int
    name: str
    f: dict[str, str] = field(default_factory=dict)


def parse_trace(text: str, tsc_hz: float | None) -> list[Event]:
    """Parse the text of a tracefs `trace` file into events (timestamps in nanoseconds)."""
    out: list[Event] = []
    scale = 1e9 / tsc_hz if tsc_hz else None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = TRACE_LINE.match(line)
        if not m:
            continue
        ts_s = m["ts"]
        ts = float(ts_s) * 1e9 if "." in ts_s else float(ts_s) * (scale or 1.0)
        name = m["event"]
        rest = m["rest"]
        f: dict[str, str]
        if name in ("sys_enter", "sys_exit"):
            parts = rest.split()
            f = {"id": parts[1]} if len(parts) > 1 else {}
            if name == "sys_exit" and "=" in parts:
                f["ret"] = parts[-1]
        elif name == "sched_switch" and (sw := _SWITCH.search(rest)) is not None:
            f = {"prev_pid": sw[1], "prev_state": sw[2], "next_pid": sw[3]}
        elif name == "sched_switch":
            prev, _, nxt = rest.partition("==>")
            pf = dict(_KV.findall(prev))
            nf = dict(_KV.findall(nxt))
            f = {"prev_pid": pf.get("prev_pid", ""), "prev_state": pf.get("prev_state", ""),
                 "next_pid": nf.get("next_pid", "")}
        elif name in ("workqueue_execute_start", "workqueue_execute_end"):  # "work struct %p: function %ps"
            f = {"function": rest.rpartition(" ")[2]}
        elif name == "contention_begin":  # "%p (flags=%s)": the lock's (hashed) address is positional
            addr, _, flags = rest.partition(" (flags=")
            f = {"lock_addr": addr.strip(), "flags": flags.rstrip(")")}
        else:
            f = dict(_KV.findall(rest))
        out.append(Event(ts, int(m["pid"]), int(m["cpu"]), name, f))
    out.sort(key=lambda e: e.ts)
    return out


# ---------------------------------------------------------------------------------------------
# segments


# ---------------------------------------------------------------------------------------------
# segments


class _Tracker:
    """Walks the events of one traced benchmark, collecting per fork by `parent` its timestamps, its
    child's, and every pid's off-CPU intervals."""

    def __init__(self, parent: int):
        self.parent = parent
        self.forks: list[dict[str, Any]] = []
        self.cur: dict[str, Any] | None = None
        self.off_since: dict[int, float] = {}
        self.off: dict[int, list[tuple[float, float]]] = {}
        self.by_child: dict[int, dict[str, Any]] = {}
        self.wait: dict[str, Any] | None = None

    def feed(self, ev: Event) -> None:
        if ev.pid == self.parent:
            self._parent(ev)
        if ev.name == "sched_switch":
            self._switch(ev)
        elif ev.name == "sched_wakeup_new":
            c = self.by_child.get(int(ev.f.get("pid", -1)))
            if c is not None:
                c["wakeup_new"] = ev.ts
                c["waker_cpu"] = ev.cpu
                c["target_cpu"] = int(ev.f.get("target_cpu", "-1"))
        elif ev.pid in self.by_child and ev.pid != self.parent:
            self._child(self.by_child[ev.pid], ev)

    def _parent(self, ev: Event) -> None:
        """The parent's creating syscall, its mmap_lock section and task_newtask; its wait4."""
        n, cur = ev.name, self.cur
        if n == "sys_enter" and int(ev.f.get("id", -1)) in CREATE_NRS:
            self.cur = {"enter": ev.ts, "cpu": ev.cpu}
        elif cur is not None and n == "mmap_lock_start_locking" and ev.f.get("write") == "true" \
                and "lock_start" not in cur:
            cur["lock_start"] = ev.ts
            cur["mm"] = ev.f.get("mm")
        elif cur is not None and n == "mmap_lock_acquire_returned" and ev.f.get("mm") == cur.get("mm") \
                and "acq" not in cur:
            cur["acq"] = ev.ts
        elif cur is not None and n == "mmap_lock_released" and ev.f.get("mm") == cur.get("mm") \
                and "rel" not in cur:
            cur["rel"] = ev.ts
        elif cur is not None and n == "alloc_vmap_area" and "newtask" not in cur:
            cur["vmalloc"] = cur.get("vmalloc", 0) + 1
        elif cur is not None and n == "task_newtask":
            cur["newtask"] = ev.ts
            cur["child"] = int(ev.f.get("pid", -1))
            self.by_child[cur["child"]] = cur
        elif cur is not None and n == "sys_exit" and int(ev.f.get("id", -1)) in CREATE_NRS:
            cur["exit"] = ev.ts
            self.forks.append(cur)
            self.cur = None
        elif n == "sys_enter" and int(ev.f.get("id", -1)) in (SYSCALLS["__NR_wait4"], SYSCALLS["__NR_waitid"]):
            self.wait = {"enter": ev.ts}
        elif n == "sys_exit" and self.wait is not None and int(ev.f.get("id", -1)) in (61, 247):
            self.wait["exit"] = ev.ts
            ret = ev.f.get("ret", "")
            rec = self.by_child.get(int(ret)) if ret.lstrip("-").isdigit() else None
            if rec is not None:
                rec["wait"] = self.wait
            self.wait = None

    def _switch(self, ev: Event) -> None:
        """Off-CPU intervals of every pid; the parent's sleep in wait4; a child's first and last run."""
        prev = int(ev.f.get("prev_pid") or -1)
        nxt = int(ev.f.get("next_pid") or -1)
        self.off_since[prev] = ev.ts
        if nxt in self.off_since:
            self.off.setdefault(nxt, []).append((self.off_since.pop(nxt), ev.ts))
        wait = self.wait
        if prev == self.parent and wait is not None and "out" not in wait:
            wait["out"] = ev.ts
        if nxt == self.parent and wait is not None and "out" in wait and "in" not in wait:
            wait["in"] = ev.ts
        if nxt in self.by_child and "run" not in self.by_child[nxt]:
            self.by_child[nxt]["run"] = ev.ts
            self.by_child[nxt]["run_cpu"] = ev.cpu
        if prev in self.by_child:
            c = self.by_child[prev]
            c["last_out"] = ev.ts
            if "exit_enter" in c and "exit_first_out" not in c and ev.f.get("prev_state", "").startswith("R"):
                c["exit_first_out"] = ev.ts  # preempted inside do_exit (by a parent woken at mm_release)
            if ("exec_enter" in c and "exec_exit" not in c and "exec_first_out" not in c
                    and ev.f.get("prev_state", "").startswith("R")):
                c["exec_first_out"] = ev.ts  # preempted inside execve (by a vfork parent woken at exec_mmap)

    @staticmethod
    def _child(c: dict[str, Any], ev: Event) -> None:
        """The child's exit or execve, its user page faults before them, its exit's mmap_lock events."""
        n = ev.name
        if n == "sys_enter" and int(ev.f.get("id", -1)) in (SYSCALLS["__NR_exit_group"], SYSCALLS["__NR_exit"]):
            c["exit_enter"] = ev.ts
        elif n == "sys_enter" and int(ev.f.get("id", -1)) == SYSCALLS["__NR_execve"]:
            c["exec_enter"] = ev.ts
            c["exec_cpu"] = ev.cpu
        elif n == "sys_exit" and int(ev.f.get("id", -1)) == SYSCALLS["__NR_execve"]:
            c["exec_exit"] = ev.ts
            c["exec_exit_cpu"] = ev.cpu  # another CPU than exec_cpu: sched_exec moved it
        elif n == "page_fault_user" and "exit_enter" not in c and "exec_enter" not in c:
            c["faults"] = c.get("faults", 0) + 1
            c.setdefault("first_fault", ev.ts)
        elif n.startswith("mmap_lock_") and "exit_enter" in c:
            c.setdefault("mm_first", ev.ts)
            if n == "mmap_lock_released":
                c["mm_last"] = ev.ts
        elif n == "sched_process_exit":
            c["proc_exit"] = ev.ts

    def on_cpu(self, pid: int, a: float, b: float) -> float:
        """Microseconds of [a, b] that `pid` spent on a CPU: the segment minus the times it was switched
        out (preempted by other load at a cond_resched point, or asleep)."""
        gone = sum(max(0.0, min(b, e) - max(a, s0)) for s0, e in self.off.get(pid, ()) if e > a and s0 < b)
        return max(0.0, (b - a) - gone) * _US


def _parent_segments(t: _Tracker, r: dict[str, Any]) -> dict[str, float]:
    """The parent's side of one fork: total, A, B, C, E, the lock wait, the wake-up of the child."""
    on_cpu, parent = t.on_cpu, t.parent
    s: dict[str, float] = {"total": on_cpu(parent, r["enter"], r["exit"]), "cpu": r["cpu"],
                           "total_wall": (r["exit"] - r["enter"]) * _US}
    if "lock_start" in r and "acq" in r and "rel" in r and "newtask" in r:
        s["A"] = on_cpu(parent, r["enter"], r["lock_start"])
        s["lock_wait"] = (r["acq"] - r["lock_start"]) * _US
        s["B"] = on_cpu(parent, r["acq"], r["rel"])
        s["B_wall"] = (r["rel"] - r["acq"]) * _US
        s["C"] = on_cpu(parent, r["rel"], r["newtask"])
    s["vmalloc"] = float(r.get("vmalloc", 0))
    if "newtask" in r:
        s["to_newtask"] = on_cpu(parent, r["enter"], r["newtask"])
        s["E"] = on_cpu(parent, r["newtask"], r["exit"])
    if "wakeup_new" in r:
        s["t_wakeup_new"] = r["wakeup_new"]
        s["waker_cpu"] = float(r["waker_cpu"])
        s["target_cpu"] = float(r["target_cpu"])
    return s


def _child_segments(t: _Tracker, r: dict[str, Any], s: dict[str, float]) -> None:
    """The child's side of one fork (its start, first run, exec, exit) and the parent's reap, into `s`."""
    on_cpu, kid = t.on_cpu, r.get("child", -1)
    if "run" in r and "first_fault" in r and r["first_fault"] > r["run"]:
        s[RET_FROM_FORK] = on_cpu(kid, r["run"], r["first_fault"])
        if "exit_enter" in r and "exec_enter" not in r:
            s["child_touch"] = on_cpu(kid, r["first_fault"], r["exit_enter"])
    if "wakeup_new" in r and "run" in r:
        s["child_start"] = (r["run"] - r["wakeup_new"]) * _US
        s["child_cross_cpu"] = float(r.get("run_cpu", -1) != r["cpu"])
        s["child_from_enter"] = (r["run"] - r["enter"]) * _US
    if "run" in r and "exit_enter" in r and "exec_enter" not in r:
        s["first_run"] = on_cpu(kid, r["run"], r["exit_enter"])
        s["first_run_faults"] = float(r.get("faults", 0))
    if "exec_enter" in r and "exec_exit" in r:
        s["exec"] = on_cpu(kid, r["exec_enter"], r["exec_exit"])
        s["t_exec"] = r["exec_enter"]
        s["exec_cpu"] = float(r["exec_cpu"])
        s["exec_moved"] = float(r["exec_exit_cpu"] != r["exec_cpu"])
        if "exec_first_out" in r and r["exec_first_out"] < r["exec_exit"]:
            # execve up to its first preemption: for a posix_spawn child, exec_mmap's release of its parent
            s["exec_head"] = on_cpu(kid, r["exec_enter"], r["exec_first_out"])
        if "run" in r and r["run"] < r["exec_enter"]:
            s["exec_prep"] = on_cpu(kid, r["run"], r["exec_enter"])  # the child's first run up to its execve
    if "exit_enter" in r and "last_out" in r and r["last_out"] > r["exit_enter"]:
        s["exit_total"] = on_cpu(kid, r["exit_enter"], r["last_out"])
        if "exit_first_out" in r and r["exit_first_out"] < r["last_out"]:
            # do_exit up to its first preemption point (close_files' cond_resched, after exit_mm)
            s["exit_head"] = on_cpu(kid, r["exit_enter"], r["exit_first_out"])
        if "mm_first" in r and "mm_last" in r and r["mm_first"] > r["exit_enter"]:
            s[EXIT_MMAP] = on_cpu(kid, r["mm_first"], r["mm_last"])
            s[DO_EXIT] = s["exit_total"] - s[EXIT_MMAP]
    w = r.get("wait")
    if w and "exit" in w:
        if "out" in w and "in" in w:
            s[WAIT_REAP] = ((w["out"] - w["enter"]) + (w["exit"] - w["in"])) * _US
        else:
            s[WAIT_REAP] = (w["exit"] - w["enter"]) * _US


def fork_segments(events: list[Event], parent: int) -> list[dict[str, float]]:
    """Per fork by `parent` (pid): the stage segments in microseconds (see the module docstring)."""
    t = _Tracker(parent)
    for ev in events:
        t.feed(ev)
    out = []
    for r in t.forks:
        s = _parent_segments(t, r)
        _child_segments(t, r, s)
        out.append(s)
    return out


def clone_segments(events: list[Event], parent: int) -> list[dict[str, float]]:
    """vfork / posix_spawn / thread creation: the creating syscall up to task_newtask (no mm copy),
    and the child's execve when it runs one. Same keys as fork_segments where they apply."""
    return fork_segments(events, parent)


def cpu_idle_since(switches: list[Event]) -> Callable[[int, float], float | None]:
    """From unfiltered sched_switch events: a function giving, for CPU c at time t, the time its current
    idle spell began (its last switch before t went to pid 0), nan when it was running a task, or None
    when no switch on c precedes t."""
    import bisect

    per: dict[int, tuple[list[float], list[float]]] = {}
    for e in switches:
        if e.name != "sched_switch":
            continue
        ts, since = per.setdefault(e.cpu, ([], []))
        ts.append(e.ts)
        since.append(e.ts if e.f.get("next_pid") == "0" else float("nan"))

    def since_at(cpu: int, t: float) -> float | None:
        if cpu not in per:
            return None
        ts, since = per[cpu]
        i = bisect.bisect_left(ts, t) - 1
        return since[i] if i >= 0 else None

    return since_at


def cpu_idle_at(switches: list[Event]) -> Callable[[int, float], bool | None]:
    """From unfiltered sched_switch events: a function telling whether CPU c was idle at time t
    (its last switch before t went to pid 0), or None when no switch on c precedes t."""
    since_at = cpu_idle_since(switches)

    def idle_at(cpu: int, t: float) -> bool | None:
        s = since_at(cpu, t)
        return None if s is None else s == s  # nan: running a task

    return idle_at


def placement_counts(segments: list[dict[str, float]], switches: list[Event], ncpus: int) -> dict[str, int]:
    """Creations whose child was placed while another CPU was idle, and how many of those stayed on
    the waker's CPU (sched_wakeup_new target_cpu == the CPU it was issued on)."""
    idle_at, since_at = cpu_idle_at(switches), cpu_idle_since(switches)
    n_idle = n_local = n_unknown = 0
    for s in segments:
        if "t_wakeup_new" not in s:
            continue
        waker = int(s["waker_cpu"])
        states = [idle_at(c, s["t_wakeup_new"]) for c in range(ncpus) if c != waker]
        if any(st is None for st in states):
            n_unknown += 1
            continue
        if any(states):
            n_idle += 1
            n_local += int(int(s["target_cpu"]) == waker)
            # how long the first idle other CPU (the one Machine.spawn would pick) had been idle: the
            # recent-idle rule of a packing kernel (profile.placement_recent_idle) is fitted on it
            first = next(c for c, st in zip((c for c in range(ncpus) if c != waker), states) if st)
            s["other_idle_us"] = (s["t_wakeup_new"] - since_at(first, s["t_wakeup_new"])) * _US
    out = {"other_cpu_idle": n_idle, "stayed_local": n_local, "unknown": n_unknown,
           "creations": sum(1 for s in segments if "t_wakeup_new" in s)}
    # sched_exec of children that exec: with another CPU idle at the execve, how many moved there
    execs = [s for s in segments if "t_exec" in s]
    if execs:
        idle_execs = [s for s in execs if any(idle_at(c, s["t_exec"]) for c in range(ncpus) if c != int(s["exec_cpu"]))]
        out.update(execs=len(execs), exec_other_cpu_idle=len(idle_execs),
                   exec_moved=sum(int(s["exec_moved"]) for s in idle_execs))
    return out
