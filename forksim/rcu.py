"""RCU callbacks of exited tasks: work a creation's end queues on a CPU (call_rcu) that runs there a
grace period later, in softirq after a tick, stretching whatever chunk of work runs at that moment.

Tree RCU (kernel/rcu/tree.c) hands callbacks queued during one grace period to the next one, and invokes
them from RCU_SOFTIRQ (rcu_core -> rcu_do_batch) raised by the tick (rcu_sched_clock_irq) once that one
has ended: the callbacks of one grace period's worth of exits run together, between one and two grace
periods after they were queued. Grace periods here are back to back, `grace_us` long, from time 0.
A batch longer than `softirq_cap_us` runs that much in softirq and the rest in ksoftirqd, a task pinned to
the CPU (__do_softirq restarts a few times, at most 2 ms and while nothing needs the CPU, then wakes
ksoftirqd). A CPU idle when its batch is due runs it there and then (rcu_needs_cpu keeps an idle CPU with
callbacks ticking), the same way: a task that arrives before the batch is done waits for the softirq part
left and competes with ksoftirqd for the rest. Traced on the AMD host (2026-12-04, the validation's closed
vfork loop, 1 parent, RSS 0): 85% of the calls at or above the fork() p99 had RCU softirq running on the
parent's or the child's CPU inside them, and without that time the p99 was 68 us instead of 198 us.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

if TYPE_CHECKING:
    import simpy

    from .machine import Machine

__all__ = ["RcuSpec", "RcuBacklog", "ksoftirqd"]


@dataclass(frozen=True)
class RcuSpec:
    """Microseconds of callbacks per reaped process (release_task: the task_struct and the pid, on the
    reaper's CPU) and per dying mm (exit_mmap: maple tree nodes and page tables, on the exiting
    task's CPU), and the grace period's length."""

    reap_us: float
    exit_mm_us: float
    grace_us: float
    softirq_cap_us: float = math.inf


def ksoftirqd(machine: "Machine", cpu_id: int, at: float, us: float) -> "Generator[simpy.Event, None, None]":
    """The rest of a batch from time `at`: ksoftirqd/N, a task of its own on that CPU (run_ksoftirqd)."""
    env = machine.env
    yield env.timeout(max(0.0, at - env.now))
    task, first_run = machine.start_task(f"ksoftirqd/{cpu_id}", pin=cpu_id)
    yield first_run
    yield task.run(us, preemptible=True)
    task.exit()


class RcuBacklog:
    """One CPU's queued callbacks: [due time, microseconds] in due order (the tick that runs them)."""

    __slots__ = ("grace", "tick", "batches")

    def __init__(self, grace_us: float, tick_us: float):
        if not (grace_us > 0.0 and tick_us > 0.0):
            raise ValueError(f"grace period and tick must be positive (got {grace_us}, {tick_us} us)")
        self.grace = grace_us
        self.tick = tick_us
        self.batches: deque[list[float]] = deque()

    def due(self, now: float) -> float:
        """When callbacks queued `now` run: the first tick after the end of the next grace period."""
        k = math.floor(now / self.grace)
        return math.ceil((k + 2) * self.grace / self.tick) * self.tick

    def queue(self, now: float, us: float) -> float:
        """call_rcu() of `us` of callbacks at `now`; returns when they run."""
        grace, tick = self.grace, self.tick
        due = math.ceil((math.floor(now / grace) + 2) * grace / tick) * tick  # self.due(now), written out
        b = self.batches
        if b and b[-1][0] == due:
            b[-1][1] += us
        else:
            b.append([due, us])
        return due

    @property
    def next_due(self) -> float:
        return self.batches[0][0] if self.batches else math.inf

    def run_idle(self, now: float, cap: float) -> tuple[float, float]:
        """Batches due before `now` ran on the idle CPU from their due time, back to back, each in softirq up to
        `cap` and the rest in ksoftirqd. Returns what is left of them at `now`: the softirq part (a task arriving
        waits for it) and ksoftirqd's (a task it competes with)."""
        b = self.batches
        end = soft_end = -math.inf
        while b and b[0][0] < now:
            due, us = b.popleft()
            start = due if due > end else end
            soft_end = start + min(us, cap)
            end = start + us
        soft = soft_end - now if soft_end > now else 0.0
        rest = end - max(now, soft_end)
        return soft, rest if rest > 0.0 else 0.0

    def pop(self) -> float:
        """The next batch's length (it runs now, inside the running chunk)."""
        return self.batches.popleft()[1]
