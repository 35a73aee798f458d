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

With more CPUs creating at once the extra grows (measured on a 16-vCPU VM, pinned fork loops at RSS 0:
fork() p50 24-26 us alone, 33-36 with two, 67-85 with sixteen, while the lock waits of lock:contention_begin
came to 3 us a fork and a compute loop slowed 6%: tools/lock_contention.py, docs/MANY_CPUS.md): each line
is requested by more CPUs in turn and its transfers queue. The profile's `per_writer` adds that share of the
two-CPU extra for each further CPU that wrote the state within `window_us`, to the creations and exits of a
copied mm only: the same machine's sixteen vfork parents (no mm of their own) ran 229,000 creations a second,
where that growth on every creation would allow 99,000 (docs/MANY_CPUS.md); what in an mm's creation and
teardown grows is not identified (mm_init's per-CPU counters and the x86 pgd_list are shared by every mm).

A process's own children do not count as another writer here: the lines a child's exit on another CPU
leaves behind are inside `remote_free` (kernel/slab.py), measured with children exiting on the other CPU.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..profile import ConcurrentCreation
    from .costs import Costs

__all__ = ["SharedState"]


class SharedState:
    """The last writer of the shared creation state: (CPU, the process whose creation or child's exit it was),
    and when each CPU last wrote it."""

    __slots__ = ("cost", "_last_cpu", "_last_owner", "_wrote", "_writes", "_fork_us", "_exit_us", "_sigma",
                 "_per_writer", "_window")

    def __init__(self, cost: "ConcurrentCreation | None"):
        self.cost = cost
        # the cost's figures as plain attributes (read at every creation and exit; a pydantic model's cost more)
        c = cost
        self._fork_us, self._exit_us = (c.fork_us, c.exit_us) if c is not None else (0.0, 0.0)
        self._sigma = c.sigma if c is not None else 0.0
        self._per_writer, self._window = (c.per_writer, c.window_us) if c is not None else (0.0, 0.0)
        self._last_cpu = -1
        self._last_owner: object = None
        # only where per_writer is priced: each CPU whose last write is inside the window -> that write's time,
        # and every write in time order (an O(1) sliding window however many CPUs)
        self._wrote: dict[int, float] = {}
        self._writes: deque[tuple[float, int]] = deque()

    def _scale(self, cpu: int, now: float, grows: bool) -> float:
        """1 + per_writer x the CPUs beyond two (this one included) that wrote within the window, for a creation
        or exit of a copied mm (`grows`); every write counts as a writer."""
        since, wrote, writes = now - self._window, self._wrote, self._writes
        while writes and writes[0][0] < since:
            t, old = writes.popleft()
            if wrote.get(old) == t:  # that CPU's last write has left the window
                del wrote[old]
        wrote[cpu] = now
        writes.append((now, cpu))
        return 1.0 + self._per_writer * max(0, len(wrote) - 2) if grows else 1.0

    def fork_us(self, cpu: int, owner: object, costs: "Costs", now: float, grows: bool = True) -> float:
        """What copy_process on `cpu` for the process `owner` pays now on top of its stages (us)."""
        if self.cost is None:
            return 0.0
        return self._extra("concurrent_fork", self._fork_us, cpu, owner, costs, now, grows)

    def exit_us(self, cpu: int, owner: object, costs: "Costs", now: float, grows: bool = True) -> float:
        """What an exit and its reap on `cpu` of a child of `owner` pay now on top of their stages (us)."""
        if self.cost is None:
            return 0.0
        return self._extra("concurrent_exit", self._exit_us, cpu, owner, costs, now, grows)

    def _extra(self, term: str, median_us: float, cpu: int, owner: object, costs: "Costs", now: float,
               grows: bool) -> float:
        scale = self._scale(cpu, now, grows) if self._per_writer else 1.0
        last = self._last_cpu  # another CPU, for another process, wrote the state last: its lines move here
        moved = last >= 0 and last != cpu and self._last_owner is not owner
        self._last_cpu, self._last_owner = cpu, owner
        if not moved:
            return 0.0
        return costs.term(term, median_us, self._sigma) * scale
