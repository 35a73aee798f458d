"""Shared kernel locks, with wait-time accounting.

Spinning locks (`tasklist_lock`, `pidmap_lock`) are held with preemption (and for tasklist_lock,
irqs) off, so a holder runs its section to the end: the hold time is known when the lock is taken.
`SpinRWLock` therefore grants each acquisition an interval on the lock's timeline: the first gap at
or after the requested time that fits the hold. A writer's gap must clear all holders, a reader's
only the writers. The waiter spins, so its wait is CPU time folded into its own chunk of work:
no simulation event is spent on an uncontended lock.

`MmapLock` is the parent's mmap_lock (a sleeping rw_semaphore) as fork uses it: `dup_mmap` holds it
for write for the whole VMA walk; a thread that faults on a VMA the walk has already reached
(per-VMA locks: `vma_start_write` marks each one) falls back to the mmap_lock and sleeps until
the walk ends. The walk's mmap_write_unlock hands the lock to those sleeping readers
(up_write -> rwsem_wake -> rwsem_mark_wake adds each queued reader's count before it wakes), so each
holds it for read from then until its fault is done (handle_mm_fault, mmap_read_unlock), however long
it waits for a CPU first; the next fork's mmap_write_lock sleeps until the last of them lets go
(rwsem_down_write_slowpath; up_read -> rwsem_wake wakes it).
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from operator import itemgetter
from typing import TYPE_CHECKING, Generator, Iterable

import simpy

if TYPE_CHECKING:
    from .machine import Task

__all__ = ["SpinRWLock", "MmapLock", "Mutex", "LockStats"]

_end = itemgetter(1)


class LockStats:
    """Wait times per acquisition (microseconds), zero waits included."""

    __slots__ = ("name", "waits")

    def __init__(self, name: str):
        self.name = name
        self.waits = array("d")


class SpinRWLock:
    """A queued spinning reader-writer lock on a timeline of granted intervals."""

    def __init__(self, env: simpy.Environment, name: str, stats: LockStats | None = None):
        self.env = env
        self.name = name
        self.stats = stats or LockStats(name)
        self._write: list[tuple[float, float]] = []  # sorted (start, end)
        self._read: list[tuple[float, float]] = []
        self.record_from = 0.0  # waits before this time (warm-up) are not recorded

    @staticmethod
    def _prune(intervals: list[tuple[float, float]], now: float) -> None:
        i = 0
        while i < len(intervals) and intervals[i][1] <= now:
            i += 1
        if i:
            del intervals[:i]

    @staticmethod
    def _first_fit(busy: Iterable[tuple[float, float]], start: float, hold: float) -> float:
        for s, e in busy:
            if e <= start:
                continue
            if start + hold <= s:
                break
            start = e
        return start

    @staticmethod
    def _insert(intervals: list[tuple[float, float]], start: float, end: float) -> None:
        """Add a grant; one that begins as the previous one ends (a waiter's) extends it, so a
        saturated lock's queue is one interval, not hundreds to step over. All requests are for
        now or later, so the merged interval's past part can never matter."""
        i = bisect.bisect_right(intervals, (start, end))
        if i and intervals[i - 1][1] == start:
            intervals[i - 1] = (intervals[i - 1][0], end)
        else:
            intervals.insert(i, (start, end))

    def _take(self, at: float, hold: float, write: bool) -> float:
        # Requests come out of order (a fork asks for a moment inside its coming chunk, an exit for
        # now), so only intervals over before the present can go: none can be asked for again.
        now = self.env._now
        if self._write and self._write[0][1] <= now:
            self._prune(self._write, now)
        if self._read and self._read[0][1] <= now:
            self._prune(self._read, now)
        if write and self._read:
            start = self._first_fit(heapq.merge(self._write, self._read), at, hold)
        else:
            # Granted writes never overlap, so their ends are sorted like their starts: skip by
            # bisection to the first one still held at `at` (hundreds are queued on a big machine).
            w = self._write
            start = at
            for i in range(bisect.bisect_right(w, at, key=_end), len(w)):
                s, e = w[i]
                if start + hold <= s:
                    break
                start = e
        self._insert(self._write if write else self._read, start, start + hold)
        wait = start - at
        if at >= self.record_from:
            self.stats.waits.append(wait)
        return wait

    def write(self, at: float, hold: float) -> float:
        """Take the lock for write at time `at` for `hold` us; returns the spin wait (us)."""
        now = self.env._now
        w, r = self._write, self._read
        if w and w[0][1] <= now:
            if w[-1][1] <= now:  # all over (granted writes end in order): what _prune leaves
                w.clear()
            else:  # _prune: granted writes end in order, so the grants over are those before the first still held
                del w[:bisect.bisect_right(w, now, key=_end)]
        if r:
            if r[0][1] <= now:
                self._prune(r, now)
            if r:
                return self._take(at, hold, True)
        if w:
            first, last = w[-1]
            if last > at:  # a writer still holds it at `at` (granted writes end in order)
                if first > at or at + hold <= first:
                    return self._take(at, hold, True)
                # `at` inside the last grant (3 in 4 of a 256-CPU bench's waits): the writer spins to its end and the
                # grant extends it, as _take and _insert would find and record it
                w[-1] = (first, last + hold)
                wait = last - at
                if at >= self.record_from:
                    self.stats.waits.append(wait)
                return wait
            # Uncontended, as _take would find it (no wait; the grant goes last): the common case, inline.
            if last == at:
                w[-1] = (first, at + hold)
            else:
                w.append((at, at + hold))
        else:
            w.append((at, at + hold))
        if at >= self.record_from:
            self.stats.waits.append(0.0)
        return 0.0

    def read(self, at: float, hold: float) -> float:
        """Take the lock for read at time `at` for `hold` us; returns the spin wait (us)."""
        return self._take(at, hold, False)


class MmapLock:
    """One address space's mmap_lock as the fork path and faulting threads see it."""

    __slots__ = ("env", "stats", "holder", "readers", "_read_waiters", "_released", "_queue", "record_from")

    def __init__(self, env: simpy.Environment, stats: LockStats):
        self.env = env
        self.stats = stats
        self.holder: "Task | None" = None  # the task inside dup_mmap
        self.readers = 0  # threads the last walk's release handed the lock to, their fault not yet done
        self._read_waiters = 0  # threads asleep on the held lock (a fault on a VMA the walk reached)
        self._released: simpy.Event | None = None
        self._queue: list[tuple] = []  # (task, event, since): writers waiting (a fork behind readers or a walk)
        self.record_from = 0.0

    def _record(self, wait: float, since: float) -> None:
        if since >= self.record_from:
            self.stats.waits.append(wait)

    def try_write(self, task: "Task") -> simpy.Event | None:
        """None if `task` now holds the lock for write, else an event that fires once it does."""
        if self.holder is None and not self.readers:
            self.holder = task
            self._released = None  # made on demand: most walks end with nobody waiting
            if self.env._now >= self.record_from:  # self._record(0.0, now), written out
                self.stats.waits.append(0.0)
            return None
        ev = simpy.Event(self.env)
        self._queue.append((task, ev, self.env._now))
        return ev

    def walk_reached(self, position: float) -> bool:
        """Has the VMA walk passed `position` (0..1 through the address space)?"""
        return self.holder is not None and self.holder.progress() > position

    def released_event(self) -> simpy.Event | None:
        """The event that fires when the current holder releases (None if the lock is free)."""
        if self._released is None and self.holder is not None:
            self._released = simpy.Event(self.env)
        return self._released

    def wait_read(self) -> simpy.Event | None:
        """A faulting thread's mmap_read_lock while the walk holds the lock: the event of the walk's end,
        when the lock is this thread's for read until it calls `read_release` (None if not held)."""
        ev = self.released_event()
        if ev is not None:
            self._read_waiters += 1
        return ev

    def read_release(self) -> None:
        """mmap_read_unlock of a thread the walk's end handed the lock to; the last one lets a waiting fork in."""
        self.readers -= 1
        if not self.readers and self.holder is None and self._queue:
            self._grant()

    def _grant(self) -> None:
        task, waiter, since = self._queue.pop(0)
        self.holder = task
        self._record(self.env._now - since, since)
        waiter.succeed()

    def release(self) -> None:
        ev = self._released
        self.holder = None
        self._released = None
        # rwsem_mark_wake: the readers asleep on the walk hold the lock from now on, before they run
        self.readers += self._read_waiters
        self._read_waiters = 0
        if self._queue and not self.readers:
            self._grant()
        if ev is not None:
            ev.succeed()


class Mutex:
    """A sleeping kernel mutex (struct mutex) handed to its waiters in arrival order: `acquire` returns
    None when the task now holds it, else an event that fires once `release` hands it over. (The kernel's
    optimistic spinning and a woken waiter's race with a newcomer are not modelled: a waiter behind a
    holder that sleeps, as rtnl's holders do in a grace period, sleeps too.)"""

    __slots__ = ("env", "stats", "holder", "_queue", "record_from")

    def __init__(self, env: simpy.Environment, stats: LockStats):
        self.env = env
        self.stats = stats
        self.holder: object | None = None
        self._queue: list[tuple[object, simpy.Event, float]] = []
        self.record_from = 0.0

    def _record(self, wait: float, since: float) -> None:
        if since >= self.record_from:
            self.stats.waits.append(wait)

    def acquire(self, owner: object) -> simpy.Event | None:
        if self.holder is None:
            self.holder = owner
            self._record(0.0, self.env._now)
            return None
        ev = simpy.Event(self.env)
        self._queue.append((owner, ev, self.env._now))
        return ev

    def lock(self, task: "Task") -> Generator[simpy.Event, None, float]:
        """mutex_lock: take it, the task asleep (off its CPU) until `release` hands it over. Returns the
        wait (us)."""
        t = self.env._now
        granted = self.acquire(task)
        if granted is not None:
            woken = task.sleep()
            granted.callbacks.append(lambda _e: task.machine.wake(task, None))
            yield woken
        return self.env._now - t

    def release(self) -> None:
        self.holder = None
        if self._queue:
            owner, ev, since = self._queue.pop(0)
            self.holder = owner
            self._record(self.env._now - since, since)
            ev.succeed()
