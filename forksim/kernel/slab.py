"""Where the last child created on each CPU was freed: SLUB's per-CPU freelists and their remote frees.

A fork allocates from the slabs of the CPU it runs on (mm/slub.c: slab_alloc_node takes the CPU's
freelist): the child's task, its vm_area_structs (vm_area_dup), anon_vma and anon_vma_chain
(anon_vma_fork, anon_vma_clone), files and fs structs, and page-table pages from the CPU's per-CPU
page lists. When the child exits on the same CPU, do_exit frees them back onto that CPU's freelists,
still in its caches, and the next fork takes them again: the back-to-back pinned loop the stages were
fitted from. When it exits on another CPU, its objects do not come back to the first CPU's per-CPU
caches (do_slab_free takes the fast path only for the freeing CPU's own slab; any other goes back to
its slab through __slab_free), the page tables go into the other CPU's page lists: the next fork on
the first CPU finds its per-CPU caches empty, refills them through ___slab_alloc and the buddy
allocator, and reuses objects whose cache lines the other CPU last wrote. Traced (kmem:kmem_cache_alloc/free, 2026-12-01, an empty
parent: 25 VMAs, 11 with anonymous pages): 60 of the 80 allocations of such a fork reused an object
freed on the other CPU (0.2 of 80 after a local exit), and it took twice the zone-locked page refills
(4.8 against 2.4 pages).

A thread (CLONE_THREAD) releases itself: exit_notify's release_task, then the last reference to its
task_struct in finish_task_switch, both on the CPU it exits on, so a thread that ran and exited on
another CPU leaves its task_struct and pid there, and the next pthread_create on its creator's CPU
allocates them through the slow path, their lines last written by the other CPU (measured pinned on
the 2026-12-04 zen4 host: +4 to +8 us a creation after a thread that exited on the other CPU, against
one after a thread that exited on the same CPU). A forked child is reaped by its parent, whose
release_task drops that reference on the parent's CPU: its remote frees are its mm's objects.

The state kept here, per CPU: whether the last child created there that copied the address space
was freed on another CPU, and whether the last thread created there exited on another CPU; the
profile's `remote_free` prices the next fork, and its `thread_us` the next thread, there (the stack
cache miss the same exits cause is StackCache's, kernel/stack.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..profile import ImageShape, RemoteFree
    from .costs import Costs

__all__ = ["SlabFreelists"]


class SlabFreelists:
    """Per CPU: were the objects the next fork there reuses freed on another CPU (remote frees)?"""

    __slots__ = ("remote", "cost", "thread_remote", "thread_cost", "_sigma", "_median")

    def __init__(self, cost: "RemoteFree | None", ncpu: int):
        self.cost = cost
        self._sigma = cost.sigma if cost is not None else 0.0
        self._median: tuple["ImageShape | None", float] = (None, 0.0)  # the last shape's median (a parent keeps one)
        self.remote = [False] * ncpu  # a booted machine's freelists hold its own frees
        self.thread_cost = cost.thread_us if cost is not None else None
        self.thread_remote = [False] * ncpu

    def freed(self, alloc_cpu: int, free_cpu: int) -> None:
        """A child created on `alloc_cpu` (a fork that copied the address space) is freed on
        `free_cpu`: the last frees into `alloc_cpu`'s slabs are local or remote."""
        self.remote[alloc_cpu] = free_cpu != alloc_cpu

    def extra_us(self, cpu: int, shape: "ImageShape", costs: "Costs") -> float:
        """What a fork of an image `shape` on `cpu` pays now on top of its stages (us): the profile's
        remote_free draw after a remote free, else 0 (nothing drawn: a profile without the term, or a
        loop whose children exit where they were made, keeps its streams)."""
        c = self.cost
        if c is None or not self.remote[cpu]:
            return 0.0
        last, median = self._median
        if last is not shape:
            median = c.median_us(shape.vmas, shape.anon_vmas)
            self._median = (shape, median)
        return costs.term("remote_free", median, self._sigma)

    def thread_freed(self, alloc_cpu: int, free_cpu: int) -> None:
        """A thread created on `alloc_cpu` exits (and releases itself) on `free_cpu`."""
        self.thread_remote[alloc_cpu] = free_cpu != alloc_cpu

    def thread_extra_us(self, cpu: int, costs: "Costs") -> float:
        """What a thread's creation on `cpu` pays now on top of its stages (us): the profile's
        remote_free.thread_us draw after the last thread created there exited on another CPU, else 0
        (nothing drawn where the profile does not price it)."""
        if self.thread_cost is None or not self.thread_remote[cpu]:
            return 0.0
        return costs.term("remote_free_thread", self.thread_cost, self.cost.sigma)
