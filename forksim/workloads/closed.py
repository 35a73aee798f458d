"""A closed workload (`workload.kind = "closed"`): `workload.parents` parents, each creating a child,
waiting to reap it, thinking `workload.think_time` (while another process touches `workload.other_work` bytes on
its CPU, when set), and again: the next creation starts when the
previous one is reaped, so the machine sets the pace."""

from __future__ import annotations

from ..kernel.mm import Process
from .base import ParentWorkload

__all__ = ["ClosedWorkload"]


class ClosedWorkload(ParentWorkload):
    """Parents in a create-reap-think loop."""

    def _parent(self, proc: Process, index: int):
        think = self.params.workload.think_time
        other = self.params.workload.other_work
        task = proc.task
        while True:
            yield from self._create(proc, index, self.env._now)
            if think > 0.0:
                cpu = task.cpu.id if task.cpu is not None else None
                yield task.sleep_for(think)
                if other and cpu is not None:
                    # a co-runner swept its memory on the parent's CPU just before this fork
                    self.kernel.warmth.touched(cpu, other)
