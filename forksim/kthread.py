"""Kernel threads that sleep until handed work (ksoftirqd/N, a per-CPU kworker, rcu_preempt)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Generator

from .task import SLEEPING

if TYPE_CHECKING:
    import simpy

    from .machine import Machine
    from .task import Task

__all__ = ["KernelThread"]


class KernelThread:
    """A kernel thread for the machine's life, started at its first wake-up: woken, it runs the work `take()` hands
    it (microseconds; it takes what is pending when it gets the CPU) until there is none, then sleeps. `pin`: its
    CPU (a per-CPU thread), None for an unbound one. A wake-up while it runs or waits for the CPU does nothing: it
    takes what was added before it sleeps again."""

    __slots__ = ("machine", "name", "pin", "take", "task", "_starting")

    def __init__(self, machine: "Machine", name: str, pin: int | None, take: Callable[[], float]):
        self.machine = machine
        self.name = name
        self.pin = pin
        self.take = take
        self.task: "Task | None" = None
        self._starting = False

    @property
    def idle(self) -> bool:
        """Not started or asleep: a wake-up now puts it on a runqueue."""
        return self.task is None or self.task.state == SLEEPING

    def wake(self, _ev: object = None) -> None:
        """Start the thread the first time, else wake it where it sleeps (a timeout's callback too)."""
        if self.task is None:
            if not self._starting:
                self._starting = True
                self.machine.env.process(self._run())
        elif self.task.state == SLEEPING:
            self.machine.wake(self.task, None)

    def _run(self) -> "Generator[simpy.Event, None, None]":
        task, first_run = self.machine.start_task(self.name, pin=self.pin)
        # alive since boot and asleep nearly all of it (rcu_preempt: ~5 us a tick): PELT averages of ~0, not a new
        # task's full load, which would weigh on its CPU's load for the first ~100 ms and draw the balancer there
        task.load_avg = task.runnable_avg = task.util_avg = 0.0
        self.task = task
        yield first_run
        while True:
            work = self.take()
            if work > 0.0:
                yield task.run(work, preemptible=True)
            else:
                yield task.sleep()
