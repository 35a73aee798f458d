"""The kernel state every process creation and exit writes, whichever process makes it: which CPU, for
which process, wrote it last.

copy_process and do_exit/release_task update objects that all processes share: the credentials and the
user's process counts (copy_creds, inc_rlimit_ucounts; exit_creds), the pid allocator (alloc_pid under
pidmap_lock; free_pid), the task list (tasklist_lock; nr_threads, total_forks), the root cgroup's css_set
(cgroup_post_fork, cgroup_exit under css_set_lock), the namespaces' and the fs root's reference counts. When
the last writer of those cache lines ran on another CPU, each write waits for the line to come over. A loop
alone (the pinned loops the stages were fitted from) always finds them in its own caches; two parents
forking on two CPUs find them in the other's at almost every creation and exit (measured: a pinned fork
loop beside another one pinned to the other CPU against the same loop alone; the profile's
`concurrent_creation`).

A process's own children do not count as another writer here: the lines a child's exit on another CPU
leaves behind are inside `remote_free` (kernel/slab.py), measured with children exiting on the other CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..profile import ConcurrentCreation
    from .costs import Costs

__all__ = ["SharedState"]


class SharedState:
    """The last writer of the shared creation state: (CPU, the process whose creation or child's exit it was)."""

    __slots__ = ("cost", "_last_cpu", "_last_owner")

    def __init__(self, cost: "ConcurrentCreation | None"):
        self.cost = cost
        self._last_cpu = -1
        self._last_owner: object = None

    def _moved(self, cpu: int, owner: object) -> bool:
        """Whether another CPU, for another process, wrote the state last; `cpu` and `owner` write it now."""
        moved = self._last_cpu >= 0 and self._last_cpu != cpu and self._last_owner is not owner
        self._last_cpu, self._last_owner = cpu, owner
        return moved

    def fork_us(self, cpu: int, owner: object, costs: "Costs") -> float:
        """What copy_process on `cpu` for the process `owner` pays now on top of its stages (us)."""
        c = self.cost
        if c is None or not self._moved(cpu, owner):
            return 0.0
        return costs.term("concurrent_fork", c.fork_us, c.sigma)

    def exit_us(self, cpu: int, owner: object, costs: "Costs") -> float:
        """What an exit and its reap on `cpu` of a child of `owner` pay now on top of their stages (us)."""
        c = self.cost
        if c is None or not self._moved(cpu, owner):
            return 0.0
        return costs.term("concurrent_exit", c.exit_us, c.sigma)
