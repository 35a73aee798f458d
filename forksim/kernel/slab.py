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

The state kept here, per CPU: whether the last child created there that copied the address space
was freed on another CPU; the profile's `remote_free` prices the next fork there (the stack cache
miss the same exit causes is StackCache's, kernel/stack.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..profile import ImageShape, RemoteFree
    from .costs import Costs

__all__ = ["SlabFreelists"]


class SlabFreelists:
    """Per CPU: were the objects the next fork there reuses freed on another CPU (remote frees)?"""

    __slots__ = ("remote", "cost")

    def __init__(self, cost: "RemoteFree | None", ncpu: int):
        self.cost = cost
        self.remote = [False] * ncpu  # a booted machine's freelists hold its own frees

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
        return costs.term("remote_free", c.median_us(shape.vmas, shape.anon_vmas), c.sigma)
