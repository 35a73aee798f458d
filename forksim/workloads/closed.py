"""A closed workload (`workload.kind = "closed"`): `workload.parents` parents, each creating a child,
waiting to reap it, thinking `workload.think_time`, and again: the next creation starts when the
previous one is reaped, so the machine sets the pace. With `workload.other_work` the think time is
another process's work on the parent's CPU (forksim.workloads.corunner): the parent wakes its
co-runner and blocks until that one has swept `other_work` bytes of its own memory for the think time."""

from __future__ import annotations

from ..kernel.mm import Process
from .base import ParentWorkload
from .corunner import CoRunner

__all__ = ["ClosedWorkload"]


class ClosedWorkload(ParentWorkload):
    """Parents in a create-reap-think loop."""

    def _parent(self, proc: Process, index: int):
        think = self.params.workload.think_time
        other = self.params.workload.other_work
        task = proc.task
        co = CoRunner(self.machine, task, int(other), think, self.kernel.warmth) if other and think > 0.0 else None
        while True:
            yield from self._create(proc, index, self.env._now)
            if co is not None:
                yield from co.sweep()
            elif think > 0.0:
                yield task.nanosleep(think)
