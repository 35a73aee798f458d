"""Thread stacks: the per-CPU cache of vmalloc'd stacks (kernel/fork.c, CONFIG_VMAP_STACK)."""

from __future__ import annotations

__all__ = ["StackCache"]


class StackCache:
    """`cached_stacks[NR_CACHED_STACKS]` per CPU.

    alloc_thread_stack_node takes a cached stack on the CPU it runs on (a hit: the stack is zeroed
    and reused) or calls __vmalloc_node_range (a miss). A dead task's stack is released when the
    task is switched out for the last time (finish_task_switch -> put_task_stack ->
    free_thread_stack), into an empty slot of *that* CPU's cache, else freed after RCU.
    """

    __slots__ = ("slots", "capacity")

    def __init__(self, cpus: int, per_cpu: int):
        self.capacity = per_cpu
        self.slots = [per_cpu] * cpus  # caches start full: a booted machine has freed stacks

    def alloc(self, cpu: int) -> bool:
        """Take a stack on `cpu`; True on a cache hit."""
        if self.slots[cpu] > 0:
            self.slots[cpu] -= 1
            return True
        return False

    def free(self, cpu: int) -> None:
        if self.slots[cpu] < self.capacity:
            self.slots[cpu] += 1
