"""`workload.other_work`'s neighbour as a task of its own: the process the load generator forks before
the parent's image (lab_start_sweeper, forksim/lab/csrc/lab.h), on the parent's CPU (it inherits the
parent's affinity), that sweeps its own memory each time the parent asks.

One round, as the C code does it: the parent writes a byte to the co-runner's pipe (a sync wake-up of
the co-runner) and blocks reading the answer; the co-runner sweeps (CPU work: the think time, which a
user states as the whole gap between a reap and the next fork), writes its answer (a sync wake-up of
the parent) and blocks reading the next request. Where the scheduler leaves the co-runner when the
parent's next fork ends (still runnable: the parent's wake-up preempted it before its read) is what
decides whether the new child runs before the parent's fork() returns (forksim.sched.eevdf
`new_task_resched`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..kernel.warmth import WarmthTracker
    from ..machine import Machine, Task

__all__ = ["CoRunner"]


class CoRunner:
    """A sweeping neighbour of one parent: `sweep()` is the parent's side of one round."""

    __slots__ = ("machine", "task", "parent", "sweep_us", "nbytes", "warmth", "_asked")

    def __init__(self, machine: "Machine", parent: "Task", nbytes: int, sweep_us: float,
                 warmth: "WarmthTracker") -> None:
        self.machine = machine
        self.parent = parent
        self.nbytes = nbytes
        self.sweep_us = sweep_us
        self.warmth = warmth
        self._asked = False  # a request written and not yet answered
        # forked by the parent before its image: its affinity (copy_process); an unpinned parent's
        # neighbour works wherever the parent is when it asks (the key's "on the parent's CPU")
        self.task, first_run = machine.start_task(f"{parent.name}.corunner", pin=parent.cpu.id)
        machine.env.process(self._life(first_run))

    def _life(self, first_run):
        """The co-runner's loop: read (block), sweep, write (wake the parent)."""
        task, m = self.task, self.machine
        yield first_run
        while True:
            if not self._asked:
                yield task.sleep()  # read(): until the parent's write wakes it
            yield task.run(self.sweep_us, preemptible=True)  # one write per 64-byte line of its memory
            cpu = task.cpu.id
            self._asked = False
            ipi = m.wake(self.parent, task, sync=True)  # pipe_write: wake_up_interruptible_sync_poll
            self.warmth.touched(cpu, self.nbytes)  # the lines it touched, against the images walked there
            if ipi > 0.0:
                yield task.run(ipi)
            ev = task.ret_to_user()  # write() returns: preempted here when the woken parent took the CPU
            if ev is not None:
                yield ev  # (still runnable: its read has not blocked yet)

    def sweep(self):
        """The parent's side of one round: write the request (waking the co-runner), block on the answer."""
        parent = self.parent
        self._asked = True
        self.task.affinity = parent.cpu
        ipi = self.machine.wake(self.task, parent, sync=True)
        if ipi > 0.0:
            yield parent.run(ipi)
        ev = parent.ret_to_user()  # write() returns: the woken co-runner may take the CPU here
        if ev is not None:
            yield ev  # (back when it is preempted in turn: its slice over at a tick)
        if self._asked:  # not yet answered (it runs on this CPU, or has not finished elsewhere)
            yield parent.sleep()
