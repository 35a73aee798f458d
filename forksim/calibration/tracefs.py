"""Stage breakdown of a real fork from kernel tracepoints (root + tracefs).

A private tracefs instance (`instances/forksim-<pid>`) records, for the benchmark's pids only
(`set_event_pid` with the `event-fork` option, so children are followed):

    raw_syscalls:sys_enter/sys_exit (filtered on the creation, exec, exit and wait syscalls)
    mmap_lock:mmap_lock_start_locking / acquire_returned / released
    task:task_newtask, sched:sched_process_fork, sched:sched_wakeup_new, sched:sched_switch,
    sched:sched_process_exit, sched:sched_process_free

and the per-fork segments are cut from them (`fork_segments`):

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
    parent's wait4: the parts of the syscall outside its sleep     [wait_reap]

The timestamps use the instance's `x86-tsc` clock (nanosecond-class resolution; the text `trace`
of the ns clocks only prints microseconds), converted with a frequency measured against
CLOCK_MONOTONIC through two `trace_marker` writes. Without x86-tsc the `mono` clock is used.

Everything is undone in `close()` (events off, pid filter cleared, instance removed, tracefs
unmounted if this module mounted it), which runs from `finally` blocks, at interpreter exit, and
from `install_signal_cleanup()`'s SIGINT/SIGTERM handlers before the signal takes its course.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "TRACEFS",
    "EVENTS",
    "SYSCALLS",
    "tracefs_status",
    "TraceInstance",
    "Event",
    "parse_trace",
    "fork_segments",
    "clone_segments",
    "install_signal_cleanup",
    "cleanup_all",
    "register_cleanup",
    "cpu_idle_at",
    "placement_counts",
]

TRACEFS = Path("/sys/kernel/tracing")

# x86-64 syscall numbers of interest
SYSCALLS = {"clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60, "wait4": 61, "exit_group": 231,
            "clone3": 435, "waitid": 247}
CREATE_NRS = {56, 57, 58, 435}

EVENTS = (
    "raw_syscalls/sys_enter",
    "raw_syscalls/sys_exit",
    "mmap_lock/mmap_lock_start_locking",
    "mmap_lock/mmap_lock_acquire_returned",
    "mmap_lock/mmap_lock_released",
    "task/task_newtask",
    "sched/sched_process_fork",
    "sched/sched_wakeup_new",
    "sched/sched_switch",
    "sched/sched_process_exit",
    "sched/sched_process_free",
)
# recorded when the kernel has them (a stack-cache miss vmallocs a new thread stack)
# and counts the child's user page faults before it exits (its start-up COW faults)
OPTIONAL_EVENTS = ("vmalloc/alloc_vmap_area", "exceptions/page_fault_user")

_SYSCALL_FILTER = " || ".join(f"id == {n}" for n in sorted(set(SYSCALLS.values())))

# ---------------------------------------------------------------------------------------------
# cleanup registry and signal handling

_cleanups: list[Callable[[], None]] = []


def register_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    """Run `fn` from cleanup_all() (signal handlers, atexit). Returns an unregister function."""
    _cleanups.append(fn)

    def unregister() -> None:
        try:
            _cleanups.remove(fn)
        except ValueError:
            pass

    return unregister


def cleanup_all() -> None:
    """Run every registered cleanup, newest first; never raises. Cleanups stay registered until
    their owner unregisters them (so one that could not finish is tried again, e.g. at exit); each
    must therefore be idempotent."""
    for fn in reversed(list(_cleanups)):
        try:
            fn()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


atexit.register(cleanup_all)


def install_signal_cleanup() -> Callable[[], None]:
    """SIGINT/SIGTERM: clean up (instances, children), then let the signal act as before.

    Returns a function restoring the previous handlers."""
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        cleanup_all()
        old = previous.get(signum)
        restore()
        if callable(old):
            old(signum, frame)
            return
        if signum == signal.SIGINT and old is not signal.SIG_IGN:
            raise KeyboardInterrupt
        if old is signal.SIG_IGN:
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def restore() -> None:
        for s, h in previous.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):
                pass

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return restore


# ---------------------------------------------------------------------------------------------
# availability


def tracefs_status() -> tuple[bool, str]:
    """Whether this process can trace: (True, how) or (False, why not)."""
    if os.geteuid() != 0:
        return False, "not root"
    if not Path("/sys/kernel").exists():
        return False, "no /sys/kernel"
    if not (TRACEFS / "instances").exists():
        if not _mountable():
            return False, f"tracefs not mounted at {TRACEFS} and not mountable"
        return True, "tracefs (to be mounted for the run)"
    missing = [e for e in EVENTS if not (TRACEFS / "events" / e / "enable").exists()]
    if missing:
        return False, f"tracepoints missing: {', '.join(missing)}"
    return True, "tracefs"


def _mountable() -> bool:
    try:
        return "tracefs" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def _is_mounted(path: Path) -> bool:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[1] == str(path) and parts[2] == "tracefs":
                return True
    except OSError:
        pass
    return False


# ---------------------------------------------------------------------------------------------
# the private instance


class TraceInstance:
    """A private tracefs instance recording EVENTS for a set of pids (and their children)."""

    def __init__(self, events: Iterable[str] = EVENTS, buffer_kb: int = 32768, name: str | None = None,
                 optional: bool = True):
        self.events = tuple(events) + (tuple(e for e in OPTIONAL_EVENTS
                                             if (TRACEFS / "events" / e / "enable").exists()) if optional else ())
        self.buffer_kb = buffer_kb
        self.name = name or f"forksim-{os.getpid()}"
        self.root = TRACEFS
        self.dir = self.root / "instances" / self.name
        self.mounted_here = False
        self.clock = "mono"
        self.tsc_hz: float | None = None
        self._unregister: Callable[[], None] | None = None
        self._open = False
        self._created = False
        self.lost = 0
        self.aux: "TraceInstance | None" = None  # a companion instance (calibrate's idle-CPU tracker)

    # -- life cycle
    def open(self) -> "TraceInstance":
        self._unregister = register_cleanup(self.close)
        if not (self.root / "instances").exists():
            if not _is_mounted(self.root):
                subprocess.run(["mount", "-t", "tracefs", "nodev", str(self.root)], check=True,
                               capture_output=True)
                self.mounted_here = True
        if self.dir.exists():  # a leftover of a killed run with our pid: reuse after clearing
            self._clear()
        else:
            self.dir.mkdir()
        self._created = True
        self._open = True
        self._write("tracing_on", "0")
        self._write("buffer_size_kb", str(self.buffer_kb))
        clocks = (self.dir / "trace_clock").read_text()
        self.clock = "x86-tsc" if "x86-tsc" in clocks else "mono"
        self._write("trace_clock", self.clock)
        self._write("options/event-fork", "1")
        for ev in self.events:
            if ev.startswith("raw_syscalls/"):
                self._write(f"events/{ev}/filter", _SYSCALL_FILTER)
            self._write(f"events/{ev}/enable", "1")
        self._write("trace", "")  # clear the buffer
        return self

    def __enter__(self) -> "TraceInstance":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disable everything and remove the instance; safe to call again (a removal that failed,
        e.g. EBUSY because a file of the instance was still open in an interrupted frame, is retried
        by the next call), never raises."""
        if self._open:
            self._open = False
            self._clear()
        if self._created and self.dir.exists():
            for _ in range(25):
                try:
                    self.dir.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while a reader still holds a file: retry shortly
                    time.sleep(0.02)
        if self.dir.exists() and self._created:
            return  # keep the cleanup registered: the caller's finally or atexit retries
        self._created = False
        if self._unregister:
            self._unregister()
            self._unregister = None
        if self.mounted_here:
            self.mounted_here = False
            subprocess.run(["umount", str(self.root)], capture_output=True)

    def _clear(self) -> None:
        for path, value in (("tracing_on", "0"), ("events/enable", "0"), ("set_event_pid", ""),
                            ("options/event-fork", "0")):
            try:
                self._write(path, value)
            except OSError:
                pass
        for ev in self.events:
            if ev.startswith("raw_syscalls/"):
                try:
                    self._write(f"events/{ev}/filter", "0")
                except OSError:
                    pass

    def _write(self, rel: str, value: str) -> None:
        with open(self.dir / rel, "w") as f:
            f.write(value)

    # -- use
    def follow(self, pid: int) -> None:
        """Trace `pid` and, through event-fork, every child it creates from now on."""
        fd = os.open(self.dir / "set_event_pid", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)

    def marker(self, text: str) -> None:
        with open(self.dir / "trace_marker", "w") as f:
            f.write(text)

    def start(self) -> None:
        self._write("tracing_on", "1")
        if self.clock == "x86-tsc" and self.tsc_hz is None:
            self.tsc_hz = self._calibrate_tsc()

    def stop(self) -> None:
        self._write("tracing_on", "0")

    def _calibrate_tsc(self) -> float:
        # set_event_pid filters events, not markers; markers are always recorded
        t0 = time.monotonic_ns()
        self.marker("forksim-sync 0")
        t1 = time.monotonic_ns()
        time.sleep(0.05)
        t2 = time.monotonic_ns()
        self.marker("forksim-sync 1")
        t3 = time.monotonic_ns()
        ticks: dict[str, int] = {}
        for line in (self.dir / "trace").read_text().splitlines():
            m = _LINE.match(line)
            if m and m["event"] == "tracing_mark_write" and "forksim-sync" in m["rest"]:
                ticks[m["rest"].strip()[-1]] = int(m["ts"])
        self._write("trace", "")
        if set(ticks) != {"0", "1"}:
            raise RuntimeError("trace_marker calibration of the x86-tsc clock failed")
        return (ticks["1"] - ticks["0"]) / (((t2 + t3) - (t0 + t1)) / 2 / 1e9)

    def clear_buffer(self) -> None:
        """Count lost events, then empty the buffer and the pid filter for the next run."""
        self.lost += self.overruns()
        self._write("trace", "")
        self._write("set_event_pid", "")

    def overruns(self) -> int:
        total = 0
        for stats in sorted((self.dir / "per_cpu").glob("cpu*/stats")):
            for line in stats.read_text().splitlines():
                if line.startswith("overrun:"):
                    total += int(line.split()[1])
        return total

    def read(self) -> list["Event"]:
        text = (self.dir / "trace").read_text()
        return parse_trace(text, self.tsc_hz if self.clock == "x86-tsc" else None)


# ---------------------------------------------------------------------------------------------
# parsing

_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*\S+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>\w+):\s?(?P<rest>.*)$"
)
_KV = re.compile(r"(\w+)=(\S+)")


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
        m = _LINE.match(line)
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
        elif name == "sched_switch":
            prev, _, nxt = rest.partition("==>")
            pf = dict(_KV.findall(prev))
            nf = dict(_KV.findall(nxt))
            f = {"prev_pid": pf.get("prev_pid", ""), "prev_state": pf.get("prev_state", ""),
                 "next_pid": nf.get("next_pid", "")}
        else:
            f = dict(_KV.findall(rest))
        out.append(Event(ts, int(m["pid"]), int(m["cpu"]), name, f))
    out.sort(key=lambda e: e.ts)
    return out


# ---------------------------------------------------------------------------------------------
# segments


def fork_segments(events: list[Event], parent: int) -> list[dict[str, float]]:
    """Per fork by `parent` (pid): the stage segments in microseconds (see the module docstring)."""
    forks: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    off_since: dict[int, float] = {}
    off: dict[int, list[tuple[float, float]]] = {}
    by_child: dict[int, dict[str, Any]] = {}
    wait: dict[str, Any] | None = None
    for ev in events:
        n = ev.name
        if ev.pid == parent:
            if n == "sys_enter" and int(ev.f.get("id", -1)) in CREATE_NRS:
                cur = {"enter": ev.ts, "cpu": ev.cpu}
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
                by_child[cur["child"]] = cur
            elif cur is not None and n == "sys_exit" and int(ev.f.get("id", -1)) in CREATE_NRS:
                cur["exit"] = ev.ts
                forks.append(cur)
                cur = None
            elif n == "sys_enter" and int(ev.f.get("id", -1)) in (SYSCALLS["wait4"], SYSCALLS["waitid"]):
                wait = {"enter": ev.ts}
            elif n == "sys_exit" and wait is not None and int(ev.f.get("id", -1)) in (61, 247):
                wait["exit"] = ev.ts
                ret = ev.f.get("ret", "")
                rec = by_child.get(int(ret)) if ret.lstrip("-").isdigit() else None
                if rec is not None:
                    rec["wait"] = wait
                wait = None
        if n == "sched_switch":
            prev = int(ev.f.get("prev_pid") or -1)
            nxt = int(ev.f.get("next_pid") or -1)
            off_since[prev] = ev.ts
            if nxt in off_since:
                off.setdefault(nxt, []).append((off_since.pop(nxt), ev.ts))
            if prev == parent and wait is not None and "out" not in wait:
                wait["out"] = ev.ts
            if nxt == parent and wait is not None and "out" in wait and "in" not in wait:
                wait["in"] = ev.ts
            if nxt in by_child and "run" not in by_child[nxt]:
                by_child[nxt]["run"] = ev.ts
                by_child[nxt]["run_cpu"] = ev.cpu
            if prev in by_child:
                by_child[prev]["last_out"] = ev.ts
                c = by_child[prev]
                if "exit_enter" in c and "exit_first_out" not in c and ev.f.get("prev_state", "").startswith("R"):
                    c["exit_first_out"] = ev.ts  # preempted inside do_exit (by a parent woken at mm_release)
        elif n == "sched_wakeup_new":
            c = by_child.get(int(ev.f.get("pid", -1)))
            if c is not None:
                c["wakeup_new"] = ev.ts
                c["waker_cpu"] = ev.cpu
                c["target_cpu"] = int(ev.f.get("target_cpu", "-1"))
        elif ev.pid in by_child and ev.pid != parent:
            c = by_child[ev.pid]
            if n == "sys_enter" and int(ev.f.get("id", -1)) in (SYSCALLS["exit_group"], SYSCALLS["exit"]):
                c["exit_enter"] = ev.ts
            elif n == "sys_enter" and int(ev.f.get("id", -1)) == SYSCALLS["execve"]:
                c["exec_enter"] = ev.ts
            elif n == "sys_exit" and int(ev.f.get("id", -1)) == SYSCALLS["execve"]:
                c["exec_exit"] = ev.ts
            elif n == "page_fault_user" and "exit_enter" not in c and "exec_enter" not in c:
                c["faults"] = c.get("faults", 0) + 1
                c.setdefault("first_fault", ev.ts)
            elif n.startswith("mmap_lock_") and "exit_enter" in c:
                c.setdefault("mm_first", ev.ts)
                if n == "mmap_lock_released":
                    c["mm_last"] = ev.ts
            elif n == "sched_process_exit":
                c["proc_exit"] = ev.ts

    out = []
    us = 1e-3

    def on_cpu(pid: int, a: float, b: float) -> float:
        """Microseconds of [a, b] that `pid` spent on a CPU: the segment minus the times it was switched
        out (preempted by other load at a cond_resched point, or asleep)."""
        gone = sum(max(0.0, min(b, e) - max(a, s0)) for s0, e in off.get(pid, ()) if e > a and s0 < b)
        return max(0.0, (b - a) - gone) * us

    for r in forks:
        s: dict[str, float] = {"total": on_cpu(parent, r["enter"], r["exit"]), "cpu": r["cpu"],
                               "total_wall": (r["exit"] - r["enter"]) * us}
        if "lock_start" in r and "acq" in r and "rel" in r and "newtask" in r:
            s["A"] = on_cpu(parent, r["enter"], r["lock_start"])
            s["lock_wait"] = (r["acq"] - r["lock_start"]) * us
            s["B"] = on_cpu(parent, r["acq"], r["rel"])
            s["B_wall"] = (r["rel"] - r["acq"]) * us
            s["C"] = on_cpu(parent, r["rel"], r["newtask"])
        s["vmalloc"] = float(r.get("vmalloc", 0))
        if "newtask" in r:
            s["to_newtask"] = on_cpu(parent, r["enter"], r["newtask"])
            s["E"] = on_cpu(parent, r["newtask"], r["exit"])
        if "wakeup_new" in r:
            s["t_wakeup_new"] = r["wakeup_new"]
            s["waker_cpu"] = float(r["waker_cpu"])
            s["target_cpu"] = float(r["target_cpu"])
        kid = r.get("child", -1)
        if "run" in r and "first_fault" in r and r["first_fault"] > r["run"]:
            s["ret_from_fork"] = on_cpu(kid, r["run"], r["first_fault"])
            if "exit_enter" in r and "exec_enter" not in r:
                s["child_touch"] = on_cpu(kid, r["first_fault"], r["exit_enter"])
        if "wakeup_new" in r and "run" in r:
            s["child_start"] = (r["run"] - r["wakeup_new"]) * us
            s["child_cross_cpu"] = float(r.get("run_cpu", -1) != r["cpu"])
            s["child_from_enter"] = (r["run"] - r["enter"]) * us
        if "run" in r and "exit_enter" in r and "exec_enter" not in r:
            s["first_run"] = on_cpu(kid, r["run"], r["exit_enter"])
            s["first_run_faults"] = float(r.get("faults", 0))
        if "exec_enter" in r and "exec_exit" in r:
            s["exec"] = on_cpu(kid, r["exec_enter"], r["exec_exit"])
        if "exit_enter" in r and "last_out" in r and r["last_out"] > r["exit_enter"]:
            s["exit_total"] = on_cpu(kid, r["exit_enter"], r["last_out"])
            if "exit_first_out" in r and r["exit_first_out"] < r["last_out"]:
                # do_exit up to its first preemption point (close_files' cond_resched, after exit_mm)
                s["exit_head"] = on_cpu(kid, r["exit_enter"], r["exit_first_out"])
            if "mm_first" in r and "mm_last" in r and r["mm_first"] > r["exit_enter"]:
                s["exit_mmap"] = on_cpu(kid, r["mm_first"], r["mm_last"])
                s["do_exit"] = s["exit_total"] - s["exit_mmap"]
        w = r.get("wait")
        if w and "exit" in w:
            if "out" in w and "in" in w:
                s["wait_reap"] = ((w["out"] - w["enter"]) + (w["exit"] - w["in"])) * us
            else:
                s["wait_reap"] = (w["exit"] - w["enter"]) * us
        out.append(s)
    return out


def clone_segments(events: list[Event], parent: int) -> list[dict[str, float]]:
    """vfork / posix_spawn / thread creation: the creating syscall up to task_newtask (no mm copy),
    and the child's execve when it runs one. Same keys as fork_segments where they apply."""
    return fork_segments(events, parent)


def cpu_idle_at(switches: list[Event]) -> Callable[[int, float], bool | None]:
    """From unfiltered sched_switch events: a function telling whether CPU c was idle at time t
    (its last switch before t went to pid 0), or None when no switch on c precedes t."""
    import bisect

    per: dict[int, tuple[list[float], list[bool]]] = {}
    for e in switches:
        if e.name != "sched_switch":
            continue
        ts, idle = per.setdefault(e.cpu, ([], []))
        ts.append(e.ts)
        idle.append(e.f.get("next_pid") == "0")

    def idle_at(cpu: int, t: float) -> bool | None:
        if cpu not in per:
            return None
        ts, idle = per[cpu]
        i = bisect.bisect_left(ts, t) - 1
        return idle[i] if i >= 0 else None

    return idle_at


def placement_counts(segments: list[dict[str, float]], switches: list[Event], ncpus: int) -> dict[str, int]:
    """Creations whose child was placed while another CPU was idle, and how many of those stayed on
    the waker's CPU (sched_wakeup_new target_cpu == the CPU it was issued on)."""
    idle_at = cpu_idle_at(switches)
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
    return {"other_cpu_idle": n_idle, "stayed_local": n_local, "unknown": n_unknown,
            "creations": sum(1 for s in segments if "t_wakeup_new" in s)}
