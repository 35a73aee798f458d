"""The kernel tracepoints of a real fork, recorded in a private tracefs instance (root + tracefs).

A private tracefs instance (`instances/forksim-<pid>`) records, for the benchmark's pids only
(`set_event_pid` with the `event-fork` option, so children are followed):

    raw_syscalls:sys_enter/sys_exit (filtered on the creation, exec, exit and wait syscalls)
    mmap_lock:mmap_lock_start_locking / acquire_returned / released
    task:task_newtask, sched:sched_process_fork, sched:sched_wakeup_new, sched:sched_switch,
    sched:sched_process_exit, sched:sched_process_free

and segments.py cuts the per-fork segments from them (`fork_segments`, re-exported here).

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
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .segments import (SYSCALLS, TRACE_LINE, Event, clone_segments, cpu_idle_at, fork_segments,  # noqa: F401
                       parse_trace, placement_counts)

__all__ = [
    "TRACEFS",
    "EVENTS",
    "SYSCALLS",
    "tracefs_status",
    "mount_tracefs",
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

# The x86-tsc clock's rate, measured by the first instance that uses it (a 50 ms trace_marker pair): the TSC is
# the same counter for every instance of this boot, and a calibration opens a dozen of them.
_tsc_hz: float | None = None

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


def mount_tracefs(root: Path = TRACEFS) -> bool:
    """Mount tracefs at `root` where it is not (a fresh VM of this machine kind boots without it); True when this
    call mounted it."""
    if (root / "instances").exists() or _is_mounted(root):
        return False
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)], check=True, capture_output=True)
    return True


# ---------------------------------------------------------------------------------------------
# the private instance


class TraceInstance:
    """A private tracefs instance recording EVENTS for a set of pids (and their children)."""

    def __init__(self, events: Iterable[str] = EVENTS, buffer_kb: int = 32768, name: str | None = None,
                 optional: bool = True, clock: str | None = None):
        self.events = tuple(events) + (tuple(e for e in OPTIONAL_EVENTS
                                             if (TRACEFS / "events" / e / "enable").exists()) if optional else ())
        self.buffer_kb = buffer_kb
        self.name = name or f"forksim-{os.getpid()}"
        self.root = TRACEFS
        self.dir = self.root / "instances" / self.name
        self.mounted_here = False
        self.clock = "mono"
        self._want_clock = clock  # None: x86-tsc where the instance offers it (calibrate's segments), else mono
        self.tsc_hz: float | None = None
        self._unregister: Callable[[], None] | None = None
        self._open = False
        self._created = False
        self._lost_before = 0  # events lost before the last clear_buffer (overrun counters only grow: see text())
        self._overrun_base = 0  # ... and the counters' total at that clear
        self.aux: "TraceInstance | None" = None  # a companion instance (calibrate's idle-CPU tracker)

    # -- life cycle
    def open(self) -> "TraceInstance":
        self._unregister = register_cleanup(self.close)
        self.mounted_here = mount_tracefs(self.root)
        leftover = self.dir.exists()
        if leftover:  # a leftover of a killed run with our pid: reuse after clearing
            self._clear()
        else:
            self.dir.mkdir()
        self._created = True
        self._open = True
        self._write("tracing_on", "0")
        self._write("buffer_size_kb", str(self.buffer_kb))
        clocks = (self.dir / "trace_clock").read_text()
        self.clock = self._want_clock or ("x86-tsc" if "x86-tsc" in clocks else "mono")
        self._write("trace_clock", self.clock)
        self._write("options/event-fork", "1")
        for ev in self.events:
            if ev.startswith("raw_syscalls/"):
                self._write(f"events/{ev}/filter", _SYSCALL_FILTER)
            self._write(f"events/{ev}/enable", "1")
        if leftover:  # empty its buffer (a new instance's is; the truncation waits for an RCU grace period)
            self.text()
        self._overrun_base = self._overrun_total()
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
        global _tsc_hz
        self._write("tracing_on", "1")
        if self.clock == "x86-tsc" and self.tsc_hz is None:
            if _tsc_hz is None:
                _tsc_hz = self._calibrate_tsc()
            self.tsc_hz = _tsc_hz

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
        for line in self.text().splitlines():
            m = TRACE_LINE.match(line)
            if m and m["event"] == "tracing_mark_write" and "forksim-sync" in m["rest"]:
                ticks[m["rest"].strip()[-1]] = int(m["ts"])
        if set(ticks) != {"0", "1"}:
            raise RuntimeError("trace_marker calibration of the x86-tsc clock failed")
        return (ticks["1"] - ticks["0"]) / (((t2 + t3) - (t0 + t1)) / 2 / 1e9)

    def clear_buffer(self) -> None:
        """Count lost events, then empty the buffer and the pid filter for the next run."""
        self._lost_before += self.overruns()
        self.text()
        self._overrun_base = self._overrun_total()
        self._write("set_event_pid", "")

    @property
    def lost(self) -> int:
        """Events the buffer lost (overwritten when full) since the instance opened."""
        return self._lost_before + self.overruns()

    def overruns(self) -> int:
        """Events the buffer lost since the last clear_buffer."""
        return self._overrun_total() - self._overrun_base

    def _overrun_total(self) -> int:
        total = 0
        for stats in sorted((self.dir / "per_cpu").glob("cpu*/stats")):
            for line in stats.read_text().splitlines():
                if line.startswith("overrun:"):
                    total += int(line.split()[1])
        return total

    def text(self) -> str:
        """Everything the buffer holds, as tracefs prints it, consumed: read through trace_pipe (without blocking),
        which leaves the buffer empty. Opening `trace` to read it, or truncating it to empty it, each waits for an
        RCU grace period (16-35 ms on this VM, 2026-12-05: 2.5 s of a quick calibration's 60), and the overrun
        counters that a truncation resets stay as they are (overruns() counts from the last clear_buffer)."""
        fd = os.open(self.dir / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)  # the kernel hands at most a page per read
                except BlockingIOError:  # empty while tracing is on
                    break
                if not chunk:  # empty with tracing off
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode(errors="replace")

    def read(self) -> list["Event"]:
        """The buffer's events, consumed (text())."""
        return parse_trace(self.text(), self.tsc_hz if self.clock == "x86-tsc" else None)
