"""Load balancing between CPUs as kernel/sched/fair.c does it from the tick, with PELT load.

- PELT (kernel/sched/pelt.c): a task's load is the geometric average of the time it was runnable
  (running or waiting), 1024 when always runnable, halving every 32 ms (y^32 = 1/2). A CPU's load
  is the sum over the tasks that belong to it, running, waiting or blocked (a sleeping task's load
  stays on the CPU it last ran on and decays there, as cfs_rq->avg.load_avg keeps blocked load).
  A new task starts at 1024 (init_entity_runnable_average).
- sched_balance_rq (periodic, from the tick of a busy CPU every balance_interval x busy_factor):
  the busiest CPU must be overloaded (2+ runnable) and more loaded than this one by more than
  imbalance_pct; the imbalance is half the difference (two groups of one CPU: min of the two
  distances to the average); a waiting task moves if its load, halved for each failed attempt
  (shr_bound(load, nr_balance_failed)), fits the imbalance.
- Idle balancing (sched_balance_newidle when a CPU goes idle; nohz idle balance, kicked from a busy
  CPU's tick while it has 2+ runnable, every balance_interval for each idle CPU): pull one waiting
  task from the busiest overloaded CPU (migrate_task).
- can_migrate_task: a task that ran less than migration_cost ago is cache hot and stays, unless
  this domain's balancing has failed more than cache_nice_tries times in a row (periodic and nohz
  passes count failures; newidle passes do not).
- vCPU packing (this kernel's non-upstream sched_vcpu_pack, as measured): an idle vCPU's balance
  pass pulls with probability `idle_pull` (1 upstream); the rest leave the waiting task packed on
  its busy vCPU, so that the halted vCPU stays halted. A sync wake-up (a child's exit waking its
  parent) leaves the wakee on its own busy vCPU with probability `wake_prev` (0 upstream, where
  wake_affine_idle moves it to the waker's vCPU).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..machine import CPU, Machine, Task

__all__ = ["BalanceParams", "PELT_HALFLIFE_US", "decay", "task_load", "cpu_load", "Balancer"]

PELT_HALFLIFE_US = 32 * 1024.0  # 32 periods of 1024 us (LOAD_AVG_PERIOD)
_LN2 = math.log(2.0)


@dataclass
class BalanceParams:
    """Load-balancing settings (microseconds); the defaults are the kernel's for one MC domain."""

    enabled: bool = True
    interval_us: float = 2000.0      # sd->balance_interval: the domain's weight in ms (2 CPUs: 2 ms)
    busy_factor: int = 16            # sd->busy_factor: a busy CPU balances 16x less often
    imbalance_pct: int = 117         # sd->imbalance_pct of an MC domain
    migration_cost_us: float = 500.0  # sysctl_sched_migration_cost: cache-hot window
    cache_nice_tries: int = 1        # sd->cache_nice_tries of an MC domain
    idle_pull: float = 1.0           # P(an idle vCPU's balance pass pulls): < 1 with vCPU packing
    wake_prev: float = 0.0           # P(a sync wakee stays on its busy previous vCPU): > 0 with packing
    # P(a new child stays on its parent's CPU when no CPU is idle), by that CPU's runnable tasks minus the
    # idlest other's (<= 0, 1, >= 2), as measured (forksim.sched.idlest); None: the kernel's rule
    fork_local_no_idle: tuple[float, float, float] | None = None
    uniform: Callable[[], float] = lambda: 0.0  # a U(0,1) draw for `idle_pull` and `fork_local_no_idle`


def decay(dt_us: float) -> float:
    """PELT's y^(dt/1024us), y^32 = 1/2."""
    return math.exp(-_LN2 * dt_us / PELT_HALFLIFE_US) if dt_us > 0.0 else 1.0


def task_load(task: "Task", now: float) -> float:
    """The task's PELT load_avg now (its runnable average x 1024)."""
    d = decay(now - task.load_t)
    if task.state in ("running", "runnable"):
        return task.load_avg * d + 1024.0 * (1.0 - d)
    return task.load_avg * d


def cpu_load(machine: "Machine", cpu: "CPU", now: float) -> float:
    """cfs_rq->avg.load_avg: the loads of the tasks that belong to `cpu`, blocked ones included."""
    return sum(task_load(t, now) for t in machine.tasks if (t.cpu or t.prev_cpu) is cpu)


def _renormalise(task: "Task", src: "CPU", dst: "CPU") -> None:
    """A moved task keeps its place relative to its queue: vruntime and deadline shift by the
    difference of the two queues' min_vruntime."""
    shift = dst.min_vruntime - src.min_vruntime
    task.vruntime += shift
    task.deadline += shift


class Balancer:
    """The periodic, nohz and newidle balancing of one machine."""

    def __init__(self, machine: "Machine", params: BalanceParams):
        self.m = machine
        self.p = params
        n = len(machine.cpus)
        self.failed = [0] * n  # sd->nr_balance_failed of each CPU's domain
        self.next_balance = [0.0] * n
        self.migrations = 0

    # ---- which task may move

    def _hot(self, task: "Task", now: float) -> bool:
        """task_hot(): ran within migration_cost (a task that never ran is not hot)."""
        return now - task.last_ran < self.p.migration_cost_us

    def _movable(self, local: "CPU", src: "CPU", now: float, max_load: float | None = None) -> "Task | None":
        """detach_tasks(): the first waiting task of `src` that may move (lowest vruntime first)."""
        failed = self.failed[local.id]
        force = failed > self.p.cache_nice_tries
        for _v, _s, task in sorted(src.rq):
            if task.affinity is not None and task.affinity is not local:
                continue  # can_migrate_task: not in its cpus_mask
            if self._hot(task, now) and not force:
                continue
            # detach_tasks (migrate_load): not more load than the imbalance, a bound halved at each
            # failed attempt (shr_bound(load, nr_balance_failed))
            if max_load is not None and task_load(task, now) / 2.0 ** failed > max_load:
                continue
            return task
        return None

    def _busiest(self, local: "CPU") -> "CPU | None":
        best = None
        for cpu in self.m.cpus:
            if cpu is not local and cpu.rq and (best is None or cpu.nr_running > best.nr_running):
                best = cpu
        return best

    # ---- passes

    def idle_pull(self, local: "CPU", newidle: bool) -> "Task | None":
        """An idle CPU's pass (newidle, or nohz on its behalf): a waiting task to run here, detached
        from its runqueue, or None."""
        if not self.p.enabled:
            return None
        src = self._busiest(local)
        if src is None:
            return None
        if self.p.idle_pull < 1.0 and self.p.uniform() >= self.p.idle_pull:
            return None  # vCPU packing: the halted vCPU stays halted
        now = self.m.env._now
        task = self._movable(local, src, now)
        if task is None:
            if not newidle:
                self.failed[local.id] += 1
            return None
        self.failed[local.id] = 0
        self._detach(src, task)
        _renormalise(task, src, local)
        return task

    def busy_pass(self, local: "CPU") -> None:
        """sched_balance_rq() from a busy CPU's tick: pull load from an overloaded, busier CPU."""
        now = self.m.env._now
        src = self._busiest(local)
        if src is None or src.nr_running < 2:
            return
        l_load = cpu_load(self.m, local, now)
        b_load = cpu_load(self.m, src, now)
        if 100.0 * b_load <= self.p.imbalance_pct * l_load:
            return  # balanced within imbalance_pct
        imbalance = (b_load - l_load) / 2.0
        task = self._movable(local, src, now, imbalance)
        if task is None:
            self.failed[local.id] += 1
            return
        self.failed[local.id] = 0
        src._sync_min_vruntime()
        local._sync_min_vruntime()
        self._detach(src, task)
        _renormalise(task, src, local)
        self._attach(task, local)

    def _detach(self, src: "CPU", task: "Task") -> None:
        """detach_task: off the source runqueue."""
        src.rq = [e for e in src.rq if e[2] is not task]
        heapq.heapify(src.rq)
        src.load -= 1
        self.migrations += 1

    def _attach(self, task: "Task", dst: "CPU") -> None:
        """attach_task after a periodic balance: queued on `dst`; a running preemptible chunk there
        re-arms its slice-expiry check (a waiter now exists)."""
        dst._enqueue(task)
        cur = dst.current
        if cur is not None and not dst.in_transit and cur._done is not None and cur._preemptible:
            dst._account(cur)
            dst._program(cur)

    def _run_pulled(self, cpu: "CPU", task: "Task") -> None:
        """A nohz idle pass's pull: the halted CPU wakes to run it (halt exit and migration)."""
        params = self.m.params
        cpu.waking = True
        cpu.load += 1
        cpu._dispatch(task, self.m.halt_exit(cpu) + params.migration())

    # ---- the tick

    def tick(self) -> None:
        """At a tick: each busy CPU due for balancing balances; while a CPU has 2+ runnable, the
        idle CPUs due for balancing get a nohz idle pass."""
        now = self.m.env._now
        p = self.p
        overloaded = any(c.nr_running >= 2 for c in self.m.cpus)
        for cpu in self.m.cpus:
            if now < self.next_balance[cpu.id]:
                continue
            if cpu.idle and not cpu.waking:
                if not overloaded:
                    continue
                self.next_balance[cpu.id] = now + p.interval_us
                task = self.idle_pull(cpu, newidle=False)
                if task is not None:
                    self._run_pulled(cpu, task)
            elif cpu.current is not None:
                self.next_balance[cpu.id] = now + p.interval_us * p.busy_factor
                self.busy_pass(cpu)
