"""RCU callbacks of exited tasks: work a creation's end queues on a CPU (call_rcu) that runs there a
grace period later, in softirq after a tick, stretching whatever chunk of work runs at that moment.

Tree RCU (kernel/rcu/tree.c) hands callbacks queued during one grace period to the next one, and invokes
them from RCU_SOFTIRQ (rcu_core -> rcu_do_batch) raised by the tick (rcu_sched_clock_irq) once that one
has ended: the callbacks of one grace period's worth of exits run together, between one and two grace
periods after they were queued. Grace periods here are back to back, `grace_us` long, from time 0.
A batch runs in softirq at that tick's irq_exit up to `softirq_cap_us`, one __do_softirq's budget
(rcu_do_batch invokes blimit callbacks a pass and raises RCU_SOFTIRQ again while more are ready; __do_softirq
restarts MAX_SOFTIRQ_RESTART times, then wakes ksoftirqd). What is left stays pending on that CPU: the task
running there takes another budget of it at each softirq point of its own (the creating call's entry: traced on
the AMD host, 2026-12-05, a pinned fork loop at RSS 0, 269 of 299 RCU bursts away from a tick began right after
clone's sys_enter), and ksoftirqd/N (Ksoftirqd: one task per CPU for the machine's life, with its own EEVDF lag)
takes all that is still pending once it gets the CPU, then sleeps. Which of the two drains a batch is the
scheduler's call: on that host, the machine otherwise quiet, ksoftirqd ran 69-77% of the loop's RCU softirq time
(fork() p99 82-132 us); in runs while another process kept a CPU busy the forking task ran 95-100% of it
(ksoftirqd woken with need_resched but not run for 5.8 ms, p50; fork() p99 155-181 us).
A CPU idle when its batch is due runs it there and then (rcu_needs_cpu keeps an idle CPU with
callbacks ticking), the same way: a task that arrives before the batch is done waits for the softirq part
left, and the rest is pending as above. Traced on the AMD host (2026-12-04, the validation's closed
vfork loop, 1 parent, RSS 0): 85% of the calls at or above the fork() p99 had RCU softirq running on the
parent's or the child's CPU inside them, and without that time the p99 was 68 us instead of 198 us.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

from .kthread import KernelThread

if TYPE_CHECKING:
    import simpy

    from .machine import Machine
    from .task import Task

__all__ = ["RcuSpec", "RcuBacklog", "ksoftirqd", "GpKthread"]


@dataclass(frozen=True)
class RcuSpec:
    """Microseconds of callbacks per reaped process (release_task: the task_struct and the pid, on the
    reaper's CPU) and per dying mm (exit_mmap: maple tree nodes and page tables, on the exiting
    task's CPU), and the grace period's length."""

    reap_us: float
    exit_mm_us: float
    grace_us: float
    softirq_cap_us: float = math.inf
    # the grace-period kthread's run at each of its wake-ups (0: not modelled) and its force-quiescent-state
    # interval (jiffies_till_next_fqs ticks)
    gp_kthread_us: float = 0.0
    fqs_us: float = math.inf
    # the deferred vfree worker's time per thread stack the cache could not take (0: such stacks cost nothing)
    vfree_per_stack_us: float = 0.0


def ksoftirqd(machine: "Machine", cpu_id: int, backlog: "RcuBacklog") -> KernelThread:
    """ksoftirqd/N (kernel/softirq.c run_ksoftirqd): a task pinned to its CPU for the machine's life, started at
    the first wakeup_softirqd. Woken, it runs whatever RCU softirq work is still pending when it gets the CPU
    (the running task may have taken it at its softirq points meanwhile), then sleeps again."""
    return KernelThread(machine, f"ksoftirqd/{cpu_id}", cpu_id, lambda: backlog.take(math.inf))


class RcuBacklog:
    """One CPU's queued callbacks: [due time, microseconds] in due order (the tick that runs them; a running chunk
    takes the batch due inside it off the queue when it starts), the microseconds of ready callbacks a softirq
    budget left (`pending`: for softirq points and ksoftirqd), and the last batch's due time (`last_due`: callbacks
    wait for a grace period until then)."""

    __slots__ = ("grace", "tick", "batches", "pending", "last_due")

    def __init__(self, grace_us: float, tick_us: float):
        if not (grace_us > 0.0 and tick_us > 0.0):
            raise ValueError(f"grace period and tick must be positive (got {grace_us}, {tick_us} us)")
        self.grace = grace_us
        self.tick = tick_us
        self.batches: deque[list[float]] = deque()
        self.pending = 0.0
        self.last_due = -math.inf

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
        self.last_due = due
        return due

    @property
    def next_due(self) -> float:
        return self.batches[0][0] if self.batches else math.inf

    def run_idle(self, now: float, cap: float) -> tuple[float, float]:
        """Batches due before `now` ran on the idle CPU from their due time, back to back, each in softirq up to
        `cap` and the rest in ksoftirqd. Returns what is left of them at `now`: the softirq part (a task arriving
        waits for it) and the rest (pending from then on)."""
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

    def take(self, cap: float) -> float:
        """A softirq point of the running task (__do_softirq at a local_bh_enable or irq_exit): one budget of
        the pending callbacks, `cap` microseconds at most, runs there."""
        piece = self.pending if self.pending < cap else cap
        self.pending -= piece
        return piece

    def pop(self) -> float:
        """The next batch's length (it runs now, inside the running chunk)."""
        return self.batches.popleft()[1]


class GpKthread:
    """rcu_preempt (kernel/rcu/tree.c rcu_gp_kthread): one unbound task that drives the grace periods. While
    callbacks wait for a grace period to end (a batch on any CPU not yet due), it wakes at a tick every `fqs_us`
    (rcu_gp_fqs_loop's timed wait: jiffies_till_next_fqs ticks) and at the first tick of each grace period
    (rcu_gp_init, after the last one's rcu_gp_cleanup) where that is not one of them; each time it runs
    `gp_kthread_us` and sleeps. A wake-up beside a running task is an ordinary EEVDF wake-up: it takes the CPU
    where the running task is past its protected slice or no longer eligible, and that task then waits its turn
    behind the others queued there. Traced on the AMD zen4 host (2026-12-06, the validation's closed fork loops at
    RSS 0, 1-8 parents): rcu_preempt ran 239-416 times a second, p50 4-6 us, and took the CPU from the loop's tasks
    18-128 times a second, in 0.1-0.5% of the fork() calls, which then waited hundreds of microseconds for the CPU
    where other tasks were queued. Beside CPU hogs it ran 127 times a second (their user-mode ticks report
    quiescent states at once, so grace periods need fewer passes), where this rule still gives ~300."""

    __slots__ = ("machine", "spec", "thread", "_pending")

    def __init__(self, machine: "Machine", spec: RcuSpec):
        self.machine = machine
        self.spec = spec
        self._pending = 0.0
        self.thread = KernelThread(machine, "rcu_preempt", None, self._take)
        machine.env.process(self._drive())

    def _take(self) -> float:
        work, self._pending = self._pending, 0.0
        return work

    def _waiting(self, now: float) -> bool:
        """Whether callbacks wait for a grace period on any CPU (their batch's tick not reached)."""
        for cpu in self.machine.cpus:
            if cpu.rcu.last_due > now:
                return True
        return False

    def _drive(self) -> "Generator[simpy.Event, None, None]":
        env, grace = self.machine.env, self.spec.grace_us
        tick = self.machine.params.tick_us
        every = max(1, round(self.spec.fqs_us / tick))
        j = 0
        while True:
            j += 1
            yield env.timeout(j * tick - env._now)
            now = env._now
            period_began = math.floor(now / grace) != math.floor((now - tick) / grace)
            if (j % every == 0 or period_began) and self._waiting(now) and self.thread.idle:
                self._pending = self.spec.gp_kthread_us  # one pass a wake-up (still on a runqueue: none more)
                self.thread.wake()
