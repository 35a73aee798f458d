"""A DAMON monitor's rmap walks over a creator's shared anonymous folios, and the anon_vma lock they hold.

A kernel built with CONFIG_DAMON_PADDR whose kdamond monitors physical memory checks and clears the
accessed bits of the folios it samples (mm/damon/paddr.c: damon_pa_young / damon_pa_mkold ->
rmap_walk). For an anonymous folio rmap_walk_anon holds the anon_vma's root rwsem for read
(anon_vma_lock_read) while it visits every VMA mapping the folio, with a cond_resched() per VMA
(mm/rmap.c). A parent with N live forked children shares its anonymous folios with all of them, so one
walk of such a folio visits N + 1 VMAs. fork's dup_mmap -> anon_vma_fork -> anon_vma_clone and a child's
exit_mmap -> free_pgtables -> unlink_anon_vmas take that root rwsem for write (lock_anon_vma_root), and
sleep until the walk lets go: the multi-millisecond round trips of a parent with 10,000 live children.

The profile's `damon_rmap` section gives the walk's cost per mapping VMA and how many walks a second reach
the creator's folios; the model runs them only for a workload whose parents keep live children (with none,
a walk visits one or two VMAs and nobody waits on it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Generator

import simpy

from ..locks import LockStats, Mutex

if TYPE_CHECKING:
    from ..machine import Machine, Task
    from ..profile_sections import DamonRmap

__all__ = ["Kdamond"]

Proc = Generator[simpy.Event, object, object]


class Kdamond:
    """kdamond's walks of the creators' shared anonymous folios, and the anon_vma root rwsem they hold."""

    def __init__(self, machine: "Machine", spec: "DamonRmap", mappings: int, draw: Callable[[float], float],
                 uniform: Callable[[], float]):
        self.machine = machine
        self.env = machine.env
        self.walk_us = spec.per_mapping_us * mappings  # one rmap walk: every VMA that maps the folio
        self.walks_per_s = spec.walks_per_s
        self._draw = draw
        self._uniform = uniform
        self.anon_vma = Mutex(machine.env, LockStats("anon_vma"))
        self.walks = 0
        self.env.process(self._run())

    def anon_vma_write(self, task: "Task") -> Proc:
        """lock_anon_vma_root for write (anon_vma_clone at fork, unlink_anon_vmas at exit): a short hold
        once any walk holding it for read has ended. Returns the wait (us)."""
        wait = yield from self.anon_vma.lock(task)
        self.anon_vma.release()
        return wait

    def _run(self) -> Proc:
        task, first_run = self.machine.start_task("kdamond.0")
        yield first_run
        period = 1e6 / self.walks_per_s  # us between walk starts, on average
        while True:
            gap = -math.log(1.0 - self._uniform()) * max(0.0, period - self.walk_us)
            yield task.sleep_for(gap)
            yield from self.anon_vma.lock(task)  # rmap_walk_anon -> anon_vma_lock_read
            yield task.run(self._draw(self.walk_us), preemptible=True)  # cond_resched() per VMA
            self.anon_vma.release()
            self.walks += 1
